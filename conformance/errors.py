"""The errors meshconf raises, and what each means for a run.

Two kinds of outcome are never mixed:

- ``AssertionError`` (raised only by ``conformance.expect``): the mesh does not conform. Allure shows the
  check as *failed*; ``meshconf run`` exits 1.
- ``ConformanceError`` and its subclasses: meshconf could not do its job. Allure shows *broken*.

::

    ConformanceError                 anything meshconf raises on purpose
    ├── CannotRun                    this environment cannot host one check (e.g. the user's own mesh-wide
    │                                policy would shadow the check's): the check is skipped, saying why
    ├── UsageError                   bad flags, profile or topology; exit 2, before anything starts
    │   └── ManifestError            a YAML document is invalid (names the document and the field)
    │       └── UnsupportedError     valid Istio, but this provider cannot honour that field
    └── EnvironmentBroken            the environment failed; exit 3
        ├── PreflightFailed          the machine or clusters cannot host the run (one line per problem, with a fix)
        ├── BringUpFailed            the mesh did not come up (carries the bring-up log, if there is one)
        ├── EnvironmentLost          the environment itself is gone mid-run (e.g. the local mesh process died):
        │                            every check that has not run yet is broken with the same reason
        ├── ProviderError            a provider operation failed (names the operation and the object)
        │   └── ConfigNotApplied     Envoy rejected or never loaded a config write
        ├── TimeoutExpired           a wait ran out; carries the last state seen and a hint
        └── LoadShortfall            the load generator could not produce the rate asked (no latency verdict);
                                     in ``conformance.load`` beside the LoadResult it carries

Messages name the object and the reason in one line and, where the user can act, say how.
"""

from __future__ import annotations

__all__ = [
    "BringUpFailed",
    "CannotRun",
    "ConfigNotApplied",
    "ConformanceError",
    "EnvironmentBroken",
    "EnvironmentLost",
    "ManifestError",
    "PreflightFailed",
    "ProviderError",
    "TimeoutExpired",
    "UnsupportedError",
    "UsageError",
]

EXIT_OK = 0
EXIT_NON_CONFORMANT = 1
EXIT_USAGE = 2
EXIT_ENVIRONMENT = 3
EXIT_SIGNAL_BASE = 128
"""A run stopped by signal N exits 128 + N, as a shell reports it: 130 for SIGINT (Ctrl-C), 143 for SIGTERM."""


class ConformanceError(Exception):
    """Base of every error meshconf raises on purpose."""

    exit_code = EXIT_ENVIRONMENT


class UsageError(ConformanceError):
    """The user asked for something invalid: a flag, a profile value, a topology."""

    exit_code = EXIT_USAGE


class ManifestError(UsageError):
    """A YAML document is invalid: the message names the document (kind/namespace/name) and the field."""


class UnsupportedError(ManifestError):
    """A valid Istio field that this provider does not implement (never silently ignored)."""


class CannotRun(ConformanceError):
    """One check cannot be carried out in this environment, through nobody's fault: e.g. the clusters already
    hold config that Istio would let win over the check's own. The check is reported as skipped with this
    message (never failed: the mesh was not shown to be wrong; never broken: nothing is broken)."""


class EnvironmentBroken(ConformanceError):
    """The environment under test failed, so no conformance verdict can be given."""

    exit_code = EXIT_ENVIRONMENT


class PreflightFailed(EnvironmentBroken):
    """The machine (or the clusters) cannot host the run; nothing was started. ``problems``: one line each,
    saying what is wrong and how to fix it."""

    def __init__(self, provider: str, problems: list[str]) -> None:
        super().__init__(f"preflight for --provider {provider} failed: " + "; ".join(problems))
        self.provider = provider
        self.problems = problems


class BringUpFailed(EnvironmentBroken):
    """The mesh did not come up (and what was started of it is torn down). ``log``: the bring-up's own log
    text, when the provider has one, for the caller to keep where the user will look (it is about to go with
    the run directory)."""

    def __init__(self, message: str, log: str | None = None) -> None:
        super().__init__(message)
        self.log = log


class EnvironmentLost(EnvironmentBroken):
    """The environment under test is gone (the local mesh process died, a cluster vanished): no check can run
    on it any more, so every remaining check is broken with this one reason instead of trying."""


class ProviderError(EnvironmentBroken):
    """A provider operation failed."""


class ConfigNotApplied(ProviderError):
    """A proxy rejected a config update, or did not load it in time."""


class TimeoutExpired(EnvironmentBroken):
    """A wait ran out of time. The message carries the last state seen."""
