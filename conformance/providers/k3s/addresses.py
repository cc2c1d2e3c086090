"""The k3s provider's address plan: pod and service subnets per cluster, and every node's address.

Every cluster gets the pod and service subnets kind gives it (``kind-configs/``: 10.10.0.0/16 +
10.255.10.0/24, 10.20.0.0/16 + 10.255.20.0/24, ...), so routes between same-network clusters never clash,
and its CoreDNS at the tenth address of its service subnet (where k3s puts it by default in its own range).

All nodes share one docker network that meshconf creates for the run, with a /24 it chooses: the first of
172.30.0.0/24, 172.30.1.0/24, ... (then 172.29.x, 172.28.x, 172.27.x) that overlaps no docker network already
there. Docker only pins container addresses on a network whose subnet was given, and pinned addresses are what
let the plan name every node, route and ``remotePilotAddress`` before anything runs: cluster ``i`` (from 1)
gets ``.{10 i}`` for its server and the next addresses for its agents (one per further zone). k3s's ServiceLB
gives a LoadBalancer Service its nodes' addresses, so a cluster's east-west and ingress gateways answer on
its server's address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from conformance.errors import EnvironmentBroken, UsageError
from conformance.topology import Topology

__all__ = ["DEFAULT_SUBNET", "ClusterAddresses", "cluster_addresses", "free_subnet", "subnet_candidates"]

DEFAULT_SUBNET = "172.30.0.0/24"
"""The network's subnet when no docker network uses it (the plan assumes it; ``up`` chooses at run time)."""
_MAX_CLUSTERS = 24  # servers at .10 ... .240
_MAX_NODES = 10  # per cluster: a server and up to nine agents


@dataclass(frozen=True)
class ClusterAddresses:
    pod_subnet: str
    service_subnet: str
    nodes: tuple[str, ...]
    """The server's address, then each agent's (one per further zone)."""

    @property
    def server(self) -> str:
        return self.nodes[0]

    @property
    def cluster_dns(self) -> str:
        """CoreDNS's Service address: the tenth of the service subnet (k3s's own choice for its default range)."""
        return str(ipaddress.ip_network(self.service_subnet)[10])

    @property
    def east_west_address(self) -> str:
        """Where the east-west gateway answers: ServiceLB gives a LoadBalancer Service its nodes' addresses, and
        the server is a node in every cluster."""
        return self.server


def subnet_candidates() -> Iterator[str]:
    """The /24s meshconf tries for the run's docker network, in order."""
    for second in (30, 29, 28, 27):
        for third in range(256):
            yield f"172.{second}.{third}.0/24"


def free_subnet(used: Iterable[str]) -> str:
    """The first candidate /24 that overlaps none of ``used`` (the subnets of the docker networks there are).

    Raises EnvironmentBroken when every candidate is taken.
    """
    taken = [ipaddress.ip_network(u, strict=False) for u in used if ":" not in u]
    for candidate in subnet_candidates():
        network = ipaddress.ip_network(candidate)
        if not any(network.overlaps(t) for t in taken):
            return candidate
    raise EnvironmentBroken("docker networks already cover 172.27.0.0/16 to 172.30.0.0/16, where meshconf puts the k3s "
                            "clusters' network; remove some (`docker network prune`)")


def cluster_addresses(topology: Topology, subnet: str = DEFAULT_SUBNET) -> dict[str, ClusterAddresses]:
    """Addresses for every cluster of ``topology``, in topology order. Raises UsageError if they do not fit."""
    if len(topology.clusters) > _MAX_CLUSTERS:
        raise UsageError(f"the k3s provider supports at most {_MAX_CLUSTERS} clusters; "
                         f"topology {topology.name} has {len(topology.clusters)}")
    crowded = [c.name for c in topology.clusters if len(c.zones) > _MAX_NODES]
    if crowded:
        raise UsageError(f"the k3s provider runs one node per zone and at most {_MAX_NODES} nodes per cluster; "
                         f"{', '.join(crowded)} of topology {topology.name} has more zones")
    network = ipaddress.ip_network(subnet)
    found: dict[str, ClusterAddresses] = {}
    for index, cluster in enumerate(topology.clusters):
        octet = 10 * (index + 1)
        found[cluster.name] = ClusterAddresses(
            pod_subnet=f"10.{octet}.0.0/16",
            service_subnet=f"10.255.{octet}.0/24",
            nodes=tuple(str(network[octet + n]) for n in range(len(cluster.zones))),
        )
    return found
