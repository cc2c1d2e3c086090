"""The provider registry: the one place the core reaches a provider by name.

Providers are imported lazily, so a run of one provider never imports another's dependencies.

Besides the MeshProvider contract, a provider class may offer, as classmethods:
``validate(config, topology)`` (raise UsageError for settings only it understands, before anything starts),
``preflight(config, topology)`` (a list of problems, one line each with its fix, that would stop ``up()``),
``attach``/``cleanup``/``leftovers`` (runs recorded on disk), ``plan``/``upgrade_plan``/``upgrade``.
"""


from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from conformance.config import RunConfig
from conformance.errors import ConformanceError, UsageError
from conformance.provider import Feature, MeshProvider
from conformance.topology import Topology

__all__ = [
    "PROVIDERS",
    "attach_provider",
    "create_provider",
    "leftover_runs",
    "plan_provider",
    "preflight_provider",
    "provider_defects",
    "provider_offers",
    "release_provider",
    "teardown_run",
    "upgrade_provider",
    "validate_provider",
]

PROVIDERS: dict[str, str] = {
    "local": "conformance.providers.local:LocalProvider",
    "kind": "conformance.providers.kind:KindProvider",
    "existing": "conformance.providers.existing:ExistingProvider",
    "k3s": "conformance.providers.k3s:K3sProvider",
}


def _provider_class(name: str) -> Any:
    target = PROVIDERS.get(name)
    if target is None:
        raise UsageError(f"provider {name!r} is not available; available: {', '.join(sorted(PROVIDERS))}")
    module_name, _, class_name = target.partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def create_provider(config: RunConfig, topology: Topology) -> MeshProvider:
    """A provider for ``config.provider``, not yet up."""
    provider: MeshProvider = _provider_class(config.provider)(config, topology)
    return provider


def validate_provider(config: RunConfig, topology: Topology) -> None:
    """Raise UsageError for a setting the provider cannot use (e.g. an unknown --mesh-defect), before anything
    starts. Settings meant for another provider are refused here too."""
    cls = _provider_class(config.provider)
    if config.defects and not getattr(cls, "DEFECTS", None):
        raise UsageError(f"--mesh-defect needs a provider with deliberate defects (the local mesh); "
                         f"--provider {config.provider} has none")
    validate = getattr(cls, "validate", None)
    if validate is not None:
        validate(config, topology)


def preflight_provider(config: RunConfig, topology: Topology) -> list[str]:
    """What would stop ``up()`` on this machine (or these clusters), one line per problem with its fix;
    empty when nothing would. Runs nothing that changes anything."""
    preflight = getattr(_provider_class(config.provider), "preflight", None)
    problems: list[str] = preflight(config, topology) if preflight is not None else []
    return problems


def attach_provider(config: RunConfig, topology: Topology, state: Path) -> MeshProvider:
    """A provider attached to an environment another process brought up (``state`` from ``up``)."""
    provider: MeshProvider = _provider_class(config.provider).attach(config, topology, state)
    return provider


def release_provider(config: RunConfig, topology: Topology, state: Path) -> None:
    """Tear down an environment by its state: attach and ``down()``, or, if its manager process is gone,
    let the provider stop what is left by PID."""
    cls = _provider_class(config.provider)
    try:
        provider = cls.attach(config, topology, state)
    except ConformanceError:
        cls.cleanup(state)
        return
    provider.down()


def provider_defects(name: str) -> dict[str, str]:
    """The deliberate defects a provider can be started with (name -> one line of meaning)."""
    defects: dict[str, str] = getattr(_provider_class(name), "DEFECTS", {})
    return defects


def provider_offers(name: str) -> frozenset[Feature]:
    """Every feature a provider can offer, in a topology and configuration that allows it (its ``OFFERS``)."""
    offers: frozenset[Feature] = getattr(_provider_class(name), "OFFERS", frozenset())
    return offers


def leftover_runs() -> list[tuple[str, Path]]:
    """(provider, state) of every environment meshconf brought up that is still recorded on disk."""
    found: list[tuple[str, Path]] = []
    for name in PROVIDERS:
        cls = _provider_class(name)
        if hasattr(cls, "leftovers"):
            found += [(name, path) for path in cls.leftovers()]
    return found


def teardown_run(provider_name: str, state: Path) -> list[int]:
    """Tear down one recorded environment by its state, without needing its config."""
    stopped: list[int] = _provider_class(provider_name).cleanup(state)
    return stopped


def plan_provider(config: RunConfig, topology: Topology) -> str:
    """What ``up()`` would do, as printable numbered steps; runs nothing. UsageError if the provider has no plan."""
    cls = _provider_class(config.provider)
    if not hasattr(cls, "plan"):
        raise UsageError(f"provider {config.provider} has no install plan to print (kind and k3s have)")
    text: str = cls.plan(config, topology)
    return text


def upgrade_provider(config: RunConfig, topology: Topology, to_version: str, out: Path | None,
                     progress: Any) -> str | int:
    """``out`` None: the upgrade plan as text. Otherwise run the upgrade gate and return its exit code."""
    cls = _provider_class(config.provider)
    if not hasattr(cls, "upgrade_plan"):
        raise UsageError(f"provider {config.provider} cannot run an upgrade (only kind installs Istio itself)")
    if out is None:
        text: str = cls.upgrade_plan(config, topology, to_version)
        return text
    code: int = cls.upgrade(config, topology, to_version, out, progress)
    return code
