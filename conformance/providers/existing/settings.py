"""The existing provider's settings: which clusters (kubeconfig contexts), which revision, what it may change."""

from __future__ import annotations

import re
from dataclasses import dataclass

from conformance.errors import UsageError
from conformance.providers.kube.settings import KubeSettings
from conformance.settings import RUN_COMMANDS, setting

__all__ = ["ExistingSettings"]


@dataclass(frozen=True)
class ExistingSettings(KubeSettings):
    contexts: tuple[str, ...] = setting((), flag="--context", metavar="CONTEXT", commands=(*RUN_COMMANDS, "upgrade"),
                                        help="a kubeconfig context, one per cluster in topology order (repeatable)")
    allow_mesh_wide: bool = setting(False, help="allow checks that change mesh-wide config",
                                    commands=(*RUN_COMMANDS, "upgrade"))
    revision: str | None = setting(None, metavar="REVISION",
                                   help="the istiod revision to use (namespaces labelled istio.io/rev)",
                                   commands=(*RUN_COMMANDS, "upgrade"))
    upgrade_command: str | None = setting(None, metavar="CMD", commands=("upgrade",),
                                          help="the shell command that upgrades your clusters (helm, istioctl ...), "
                                               "run between the two catalogue runs of `meshconf upgrade`; non-zero "
                                               "exit: exit 3. Without it meshconf asks you to upgrade by hand (a "
                                               "terminal only)")

    def validate(self) -> None:
        super().validate()
        if not self.contexts:
            raise UsageError("--provider existing needs at least one --context (a kubeconfig context running Istio)")
        if self.revision is not None and not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", self.revision):
            raise UsageError(f"--revision {self.revision!r} is not a revision name (a DNS label, e.g. 1-28-0)")
