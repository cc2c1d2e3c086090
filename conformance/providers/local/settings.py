"""The local mesh's settings: its deliberate defects and the Envoy it runs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from conformance.errors import UsageError
from conformance.providers.local.defects import parse_defects
from conformance.settings import Settings, setting

__all__ = ["LocalSettings"]


@dataclass(frozen=True)
class LocalSettings(Settings):
    defects: tuple[str, ...] = setting((), flag="--defect", aliases=("--mesh-defect",), metavar="NAME",
                                       help="start the mesh with this deliberate bug (repeatable; `meshconf defects` "
                                            "lists them)")
    envoy_binary: Path | None = setting(None, metavar="PATH", help="the Envoy binary to use")

    def validate(self) -> None:
        super().validate()
        parse_defects(self.defects)  # an unknown name is refused, listing the known ones
        if self.envoy_binary is not None and not os.access(self.envoy_binary, os.X_OK):
            raise UsageError(f"--envoy-binary {self.envoy_binary} is not an executable file")
