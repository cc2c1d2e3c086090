"""The k3s nodes of a topology: one server container per cluster, one agent container per further zone.

A :class:`Node` says everything its container is started with (name, image, address, k3s arguments,
environment, mounts, labels). The plan prints it as the ``docker run`` line that would start the same
container, and ``containers.py`` starts it through testcontainers from the same fields, so the two cannot
drift (tests compare the Docker API request with the printed line).

Server arguments (k3s's ``k3s server`` flags, https://docs.k3s.io/cli/server): the cluster's pod and service
subnets (``--cluster-cidr``/``--service-cidr``, as kind gets them) and CoreDNS's address in the latter;
``--disable=traefik`` (Istio's gateways are the ingress) and ``--disable=metrics-server,local-storage``
(nothing in the mesh uses them: images no node has to pull); the node's name, address and
``topology.kubernetes.io`` region/zone labels; the address in the API server's certificate (``--tls-san``),
because the other clusters' istiod reach it there. ServiceLB (klipper-lb) stays on: it gives LoadBalancer
Services the nodes' addresses. An agent joins its server with ``K3S_URL`` and the run's ``K3S_TOKEN``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from conformance.providers.k3s.addresses import ClusterAddresses
from conformance.topology import Cluster, Topology

__all__ = ["IMAGES_MOUNT", "K3S_IMAGE", "K3S_KUBERNETES", "RUN_LABEL", "TOKEN", "Node", "node_specs"]

K3S_IMAGE = "rancher/k3s:v1.34.11-k3s1"
"""The k3s release for Kubernetes 1.34.11, the same Kubernetes as kind's pinned node image."""
K3S_KUBERNETES = "1.34.11"
IMAGES_MOUNT = "/meshconf-images"
"""Where a node sees the run's saved images (``$RUN/images``, read-only) for ``k3s ctr images import``."""
TOKEN = "${K3S_TOKEN}"
"""The run's join token: made at ``up``, given to servers and agents, never printed or written down."""
RUN_LABEL = "io.meshconf.run"
"""A label on every container and network of a run (its run directory's name), for ``meshconf down``."""
KUBECONFIG_PATH = "/etc/rancher/k3s/k3s.yaml"


@dataclass(frozen=True)
class Node:
    cluster: str
    name: str
    """The container's name and hostname, and the Kubernetes node name."""
    role: str
    """``server`` or ``agent``."""
    address: str
    args: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    image: str = K3S_IMAGE

    @property
    def labels(self) -> dict[str, str]:
        return {"io.meshconf.cluster": self.cluster, "io.meshconf.k3s-role": self.role}

    def docker_run(self, network: str, images_dir: str, run: str) -> tuple[str, ...]:
        """The ``docker run`` that starts the same container (what the plan prints). testcontainers also puts its
        session label on it, which Ryuk reaps by."""
        env = [arg for key, value in self.env.items() for arg in ("-e", f"{key}={value}")]
        labels = [arg for key, value in {**self.labels, RUN_LABEL: run}.items()
                  for arg in ("--label", f"{key}={value}")]
        return ("docker", "run", "-d", "--name", self.name, "--hostname", self.name, "--privileged",
                "--network", network, "--ip", self.address, "--tmpfs", "/run", "--tmpfs", "/var/run",
                "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "-v", f"{images_dir}:{IMAGES_MOUNT}:ro", *env, *labels,
                self.image, *self.args)


def node_name(cluster: str, index: int) -> str:
    """``meshconf-cluster1`` for the server, ``meshconf-cluster1-agent1`` ... for the agents."""
    return f"meshconf-{cluster}" if index == 0 else f"meshconf-{cluster}-agent{index}"


def _labels(cluster: Cluster, zone: str) -> tuple[str, ...]:
    return (f"--node-label=topology.kubernetes.io/region={cluster.region}",
            f"--node-label=topology.kubernetes.io/zone={zone}")


def node_specs(topology: Topology, addresses: Mapping[str, ClusterAddresses]) -> dict[str, list[Node]]:
    """Every node of every cluster, server first, in topology order."""
    nodes: dict[str, list[Node]] = {}
    for cluster in topology.clusters:
        plan = addresses[cluster.name]
        server = Node(cluster.name, node_name(cluster.name, 0), "server", plan.server, (
            "server", "--disable=traefik", "--disable=metrics-server", "--disable=local-storage",
            f"--cluster-cidr={plan.pod_subnet}", f"--service-cidr={plan.service_subnet}",
            f"--cluster-dns={plan.cluster_dns}", f"--tls-san={plan.server}", f"--node-ip={plan.server}",
            f"--node-name={node_name(cluster.name, 0)}", *_labels(cluster, cluster.zones[0]),
        ), {"K3S_TOKEN": TOKEN})
        agents = [Node(cluster.name, node_name(cluster.name, n), "agent", plan.nodes[n], (
            "agent", f"--node-ip={plan.nodes[n]}", f"--node-name={node_name(cluster.name, n)}",
            *_labels(cluster, zone),
        ), {"K3S_URL": f"https://{plan.server}:6443", "K3S_TOKEN": TOKEN})
            for n, zone in enumerate(cluster.zones[1:], start=1)]
        nodes[cluster.name] = [server, *agents]
    return nodes
