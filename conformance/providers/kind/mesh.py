"""What kind's faults and diagnostics need of the provider beyond the kube layer, so they depend on this
abstract class and not on ``provider.py`` (which builds them: no import cycle inside the package)."""

from __future__ import annotations

import abc

from conformance.providers.kind.plan import PlanContext
from conformance.providers.kube.mesh import KubeMesh
from conformance.providers.kube.runner import Runner

__all__ = ["KindMesh"]


class KindMesh(KubeMesh):
    """A KubeMesh on kind clusters: commands through ``runner``, node containers, the plan's context."""

    runner: Runner
    """The command seam: kind, docker, kubectl and istioctl run through it."""

    @abc.abstractmethod
    def fault_context(self) -> PlanContext:
        """The plan's context at run time (the real istioctl, the kind network's subnet), for fault commands."""

    @abc.abstractmethod
    def variables(self) -> dict[str, str]:
        """Values the bring-up captured (``${X_IP}``), for running more steps."""

    @abc.abstractmethod
    def nodes(self, cluster: str) -> list[str]:
        """The node containers of ``cluster``."""

    @abc.abstractmethod
    def link_targets(self, cluster: str) -> list[str]:
        """Traffic "to ``cluster``": its nodes, pod and service subnets and load-balancer slice."""

    @abc.abstractmethod
    def docker(self, node: str, *argv: str, ignore_failure: bool = False) -> str:
        """Run ``argv`` inside a node container; its output."""

    @abc.abstractmethod
    def istioctl(self, cluster: str, *argv: str) -> str:
        """Run the run's istioctl against ``cluster``; its output."""
