"""Settings shared by the providers that run on Kubernetes (declared once here; kind, k3s and existing subclass)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from conformance.errors import UsageError
from conformance.settings import RUN_COMMANDS, Settings, setting

__all__ = ["InstallSettings", "KubeSettings"]


@dataclass(frozen=True)
class KubeSettings(Settings):
    """Every Kubernetes provider: where Docker Hub images come from."""

    image_hub: str | None = setting(None, metavar="HOST", commands=(*RUN_COMMANDS, "plan", "upgrade"),
                                    help="a Docker Hub mirror to pull images from, e.g. mirror.gcr.io (kind, k3s: "
                                         "every image they preload and Istio's hub; existing: the probe's)")

    def validate(self) -> None:
        super().validate()
        if self.image_hub is not None and (not re.fullmatch(r"[A-Za-z0-9.-]+(:[0-9]+)?(/[a-z0-9._/-]+)?",
                                                            self.image_hub) or self.image_hub.endswith("/")):
            raise UsageError(f"--image-hub {self.image_hub!r} must be a registry host and optional path that "
                             "mirrors Docker Hub, without a scheme (e.g. mirror.gcr.io)")


@dataclass(frozen=True)
class InstallSettings(KubeSettings):
    """The providers that install Istio themselves (kind, k3s)."""

    istio_version: str | None = setting(None, metavar="VERSION", commands=(*RUN_COMMANDS, "plan"),
                                        help="the Istio to install, e.g. 1.28.0")
    istioctl: Path | None = setting(None, metavar="PATH", commands=(*RUN_COMMANDS, "upgrade"),
                                    help="use this istioctl instead of a verified download of --istio-version")
