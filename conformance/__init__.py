"""meshconf: an end-to-end conformance suite for Istio multi-cluster service meshes.

The public API for writing checks::

    from conformance import Area, Feature, Outcome, check, expect_all, expect_peer_identity
"""

from conformance.check import Area, CheckInfo, Severity, check
from conformance.config import Budgets, RunConfig, Timeouts
from conformance.errors import (
    ConformanceError,
    EnvironmentBroken,
    ManifestError,
    ProviderError,
    UnsupportedError,
    UsageError,
)
from conformance.expect import (
    Outcome,
    expect_all,
    expect_all_forbidden,
    expect_all_ok,
    expect_all_refused,
    expect_answered_by,
    expect_error_rate_within,
    expect_latency_within,
    expect_no_peer_identity,
    expect_overhead_within,
    expect_peer_identity,
    expect_within_budget,
)
from conformance.probe import CallResult, Response
from conformance.provider import Feature, ProbeHandle, ProbeSpec, Provider
from conformance.scenario import Scenario

__version__ = "0.1.0"

__all__ = [
    "Area",
    "Budgets",
    "CallResult",
    "CheckInfo",
    "ConformanceError",
    "EnvironmentBroken",
    "Feature",
    "ManifestError",
    "Outcome",
    "ProbeHandle",
    "ProbeSpec",
    "Provider",
    "ProviderError",
    "Response",
    "RunConfig",
    "Scenario",
    "Severity",
    "Timeouts",
    "UnsupportedError",
    "UsageError",
    "__version__",
    "check",
    "expect_all",
    "expect_all_forbidden",
    "expect_all_ok",
    "expect_all_refused",
    "expect_answered_by",
    "expect_error_rate_within",
    "expect_latency_within",
    "expect_no_peer_identity",
    "expect_overhead_within",
    "expect_peer_identity",
    "expect_within_budget",
]
