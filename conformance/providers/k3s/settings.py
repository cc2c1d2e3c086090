"""The k3s provider's settings: the install settings it shares with kind, nothing of its own."""

from __future__ import annotations

from dataclasses import dataclass

from conformance.providers.kube.settings import InstallSettings

__all__ = ["K3sSettings"]


@dataclass(frozen=True)
class K3sSettings(InstallSettings):
    pass
