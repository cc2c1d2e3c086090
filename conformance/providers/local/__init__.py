"""The embedded reference mesh: real Envoy sidecars and probe processes on 127.0.0.0/8."""

from conformance.providers.local.defects import Defect
from conformance.providers.local.provider import LocalProvider, stop_run

__all__ = ["Defect", "LocalProvider", "stop_run"]
