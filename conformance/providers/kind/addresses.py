"""The kind provider's address plan: pod and service subnets per cluster, and MetalLB pools.

Every cluster gets its own pod and service subnets (10.10.0.0/16 + 10.255.10.0/24, 10.20.0.0/16 +
10.255.20.0/24, ...), so routes between same-network clusters never clash. Load-balancer addresses come from
the docker ``kind`` network: its last /24 is cut into /27 slices, one per cluster, far above the addresses
docker hands to node containers. The east-west gateway of each cluster is pinned to the first address of its
slice, so a remote cluster's ``remotePilotAddress`` is known before anything runs.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from conformance.errors import UsageError
from conformance.topology import Topology

__all__ = ["DEFAULT_KIND_SUBNET", "ClusterAddresses", "cluster_addresses"]

DEFAULT_KIND_SUBNET = "172.18.0.0/16"
"""What docker usually gives the ``kind`` network; the real one is read with ``docker network inspect kind``."""

_MAX_CLUSTERS = 8  # /27 slices in one /24


@dataclass(frozen=True)
class ClusterAddresses:
    pod_subnet: str
    service_subnet: str
    pool_first: str
    pool_last: str

    @property
    def pool_range(self) -> str:
        """MetalLB's range notation: ``first-last``."""
        return f"{self.pool_first}-{self.pool_last}"

    @property
    def shared_range(self) -> str:
        """The slice without its first address: what MetalLB hands out to any LoadBalancer Service."""
        return f"{ipaddress.ip_address(self.pool_first) + 1}-{self.pool_last}"

    @property
    def pool_cidr(self) -> str:
        """The whole /27 slice (what link faults match: every load-balancer address of the cluster)."""
        first = ipaddress.ip_address(self.pool_first)
        return str(ipaddress.ip_network(f"{first - 1}/27", strict=False))

    @property
    def east_west_address(self) -> str:
        """The load-balancer address the cluster's east-west gateway asks MetalLB for."""
        return self.pool_first


def cluster_addresses(topology: Topology, kind_subnet: str = DEFAULT_KIND_SUBNET) -> dict[str, ClusterAddresses]:
    """Addresses for every cluster of ``topology``, in topology order. Raises UsageError if they do not fit."""
    if len(topology.clusters) > _MAX_CLUSTERS:
        raise UsageError(f"the kind provider supports at most {_MAX_CLUSTERS} clusters; "
                         f"topology {topology.name} has {len(topology.clusters)}")
    try:
        network = ipaddress.ip_network(kind_subnet)
    except ValueError:
        raise UsageError(f"kind network subnet {kind_subnet!r} is not an IP network") from None
    if not isinstance(network, ipaddress.IPv4Network) or network.prefixlen > 24:
        raise UsageError(f"the docker kind network {kind_subnet} must be IPv4 and at least a /24 "
                         "(recreate it: docker network rm kind)")
    last_24 = list(network.subnets(new_prefix=24))[-1]
    slices = list(last_24.subnets(new_prefix=27))
    found: dict[str, ClusterAddresses] = {}
    for index, cluster in enumerate(topology.clusters):
        octet = 10 * (index + 1)
        hosts = list(slices[index].hosts())
        found[cluster.name] = ClusterAddresses(
            pod_subnet=f"10.{octet}.0.0/16",
            service_subnet=f"10.255.{octet}.0/24",
            pool_first=str(hosts[0]),
            pool_last=str(hosts[-1]),
        )
    return found
