"""Name resolution in the local mesh, as istio-agent's DNS proxy answers a sidecar's app.

On Istio with DNS capture (``ISTIO_META_DNS_CAPTURE``) and address auto-allocation
(``ISTIO_META_DNS_AUTO_ALLOCATE``), the app's DNS queries go to istio-agent, which answers from the name
table istiod sends it (``pkg/dns/server/name_table.go``, ``pkg/dns/client/dns.go``; istio.io "DNS Proxying"):

- every Kubernetes service the proxy's control plane knows, in any cluster it discovers, as
  ``name.ns.svc.cluster.local``, ``name.ns.svc``, ``name.ns``, and ``name`` from the same namespace;
- every ServiceEntry host that has an address: declared in ``addresses``, or auto-allocated (a host that is
  not a wildcard, with resolution STATIC or DNS; resolution NONE gets no address);
- anything else goes to the upstream resolver, which in the local mesh knows nothing (no internet): the
  name does not resolve, and the call fails before any connection is made. An IP address needs no lookup.

The local mesh has no iptables capture: an in-mesh probe sends to its sidecar as an explicit HTTP proxy,
which would route any Host it is given. So its provider asks this table first and tells the probe that an
unknown name does not resolve. The tables are rebuilt after every change, as istiod pushes a new name table,
and answered without the mesh's lock (a lookup never waits for a change in progress, as the agent's never
waits for istiod).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from conformance.providers.local.translate.context import MeshView

__all__ = ["NameTable", "needs_lookup"]

AUTO_ALLOCATED = {"STATIC", "DNS", "DNS_ROUND_ROBIN"}
"""ServiceEntry resolutions that get an auto-allocated address (``autoAllocateIPs``: not NONE)."""


def needs_lookup(host: str) -> bool:
    """False for an IP address (the app connects to it as is)."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return True
    return False


@dataclass(frozen=True)
class NameTable:
    """What istio-agent resolves for proxies of one control plane."""

    services: frozenset[tuple[str, str]]
    """(name, namespace) of every Kubernetes service the control plane knows."""
    entry_hosts: frozenset[str]
    """ServiceEntry hosts with an address (declared or auto-allocated)."""

    @classmethod
    def of(cls, view: MeshView) -> NameTable:
        services = frozenset((s.name, s.namespace) for s in view.services())
        hosts = set()
        for entry in view.store.of_kind("ServiceEntry"):
            if not entry.spec.get("addresses") and entry.spec.get("resolution", "NONE") not in AUTO_ALLOCATED:
                continue
            hosts |= {str(h).lower() for h in entry.spec.get("hosts") or [] if not str(h).startswith("*")}
        return cls(services, frozenset(hosts))

    def resolves(self, host: str, namespace: str) -> bool:
        """Whether an app in ``namespace`` gets an answer for ``host``."""
        name = host.lower().rstrip(".")
        if not needs_lookup(name) or name in self.entry_hosts:
            return True
        parts = name.split(".")
        if len(parts) == 1:
            return (parts[0], namespace) in self.services
        if parts[2:] in ([], ["svc"], ["svc", "cluster", "local"]):
            return (parts[0], parts[1]) in self.services
        return False
