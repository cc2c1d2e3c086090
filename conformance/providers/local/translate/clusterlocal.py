"""MeshConfig ``serviceSettings[].settings.clusterLocal``: hosts a proxy reaches only in its own cluster.

As pilot/pkg/model/cluster_local.go builds ``ClusterLocalHosts`` from MeshConfig:

- the defaults are cluster-local: ``*.kube-system.svc.cluster.local``, ``kubernetes.default.svc.cluster.local``
  and istiod's discovery host; a ``serviceSettings`` host with ``clusterLocal: false`` that a default covers
  (the same host, or a host under a wildcard default) removes that default;
- every ``serviceSettings`` host, exact or wildcard (``*.ns.svc.cluster.local``), takes its entry's
  ``clusterLocal`` (later entries win for the same host);
- a host is cluster-local when its most specific match says so (``model.MostSpecificHostMatch``: the exact
  host first, else the most specific wildcard whose suffix it ends with, ``host.MoreSpecific``); a host nothing
  matches is not.

pilot/pkg/xds/endpoints/endpoint_builder.go then gives a proxy only the endpoints of its own cluster
(``clusterID`` is the proxy's, not its control plane's) for a cluster-local host.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["ClusterLocalHosts"]

DOMAIN_SUFFIX = "cluster.local"
_DEFAULT_NAMESPACES = ("kube-system",)
_DEFAULT_SERVICES = ("kubernetes.default.svc",)
DISCOVERY_HOST = "istiod.istio-system.svc"
"""The host proxies reach istiod at (``discoveryAddress`` istiod.istio-system.svc:15012)."""


@dataclass(frozen=True)
class ClusterLocalHosts:
    specific: Mapping[str, bool]
    wildcard: Mapping[str, bool]

    @classmethod
    def of(cls, mesh_config: Mapping[str, Any]) -> ClusterLocalHosts:
        defaults = [f"*.{n}.svc.{DOMAIN_SUFFIX}" for n in _DEFAULT_NAMESPACES]
        defaults += [f"{s}.{DOMAIN_SUFFIX}" for s in _DEFAULT_SERVICES]
        defaults.append(f"{DISCOVERY_HOST}.{DOMAIN_SUFFIX}")
        specific: dict[str, bool] = {}
        wildcard: dict[str, bool] = {}
        for entry in mesh_config.get("serviceSettings") or []:
            local = bool((entry.get("settings") or {}).get("clusterLocal", False))
            hosts = [str(h) for h in entry.get("hosts") or []]
            if not local:  # an explicit false overrides a default that covers the host
                defaults = [d for d in defaults
                            if not any(h == d or (d.startswith("*") and h.endswith(d[1:])) for h in hosts)]
            for host in hosts:
                (wildcard if host.startswith("*") else specific)[host] = local
        for default in defaults:
            (wildcard if default.startswith("*") else specific)[default] = True
        return cls(specific, wildcard)

    def is_cluster_local(self, host: str) -> bool:
        if host in self.specific:
            return self.specific[host]
        matches = [w for w in self.wildcard if host.endswith(w[1:])]
        if not matches:
            return False
        # host.MoreSpecific between wildcards: the longer one, then alphabetically
        return self.wildcard[min(matches, key=lambda w: (-len(w), w))]
