"""The provider registry: the one place the core reaches a provider by name.

``PROVIDERS`` is the whole registry: a name and the class that implements :class:`conformance.provider.Provider`.
Providers are imported lazily, so a run of one provider never imports another's package.
"""


from __future__ import annotations

import functools
import importlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conformance.config import RunConfig
from conformance.errors import ConformanceError, UsageError
from conformance.provider import Feature, Provider
from conformance.settings import Declared, Settings, catalog
from conformance.topology import Topology

__all__ = [
    "PROVIDERS",
    "Registered",
    "attach_provider",
    "build_config",
    "config_from_dict",
    "create_provider",
    "leftover_runs",
    "plan_provider",
    "preflight_provider",
    "provider_class",
    "provider_defects",
    "provider_offers",
    "provider_settings",
    "read_config",
    "release_provider",
    "settings_catalog",
    "settings_class",
    "teardown_run",
    "validate_provider",
    "write_config",
]

@dataclass(frozen=True)
class Registered:
    """A provider: its class, and its Settings class (its ``Settings`` attribute), each as ``module:name``. The
    Settings module is read on its own, so listing every provider's options imports no provider."""

    provider: str
    settings: str


PROVIDERS: dict[str, Registered] = {
    "local": Registered("conformance.providers.local.provider:LocalProvider",
                        "conformance.providers.local.settings:LocalSettings"),
    "kind": Registered("conformance.providers.kind.provider:KindProvider",
                       "conformance.providers.kind.settings:KindSettings"),
    "existing": Registered("conformance.providers.existing.provider:ExistingProvider",
                           "conformance.providers.existing.settings:ExistingSettings"),
    "k3s": Registered("conformance.providers.k3s.provider:K3sProvider",
                      "conformance.providers.k3s.settings:K3sSettings"),
}


def _registered(name: str) -> Registered:
    found = PROVIDERS.get(name)
    if found is None:
        raise UsageError(f"provider {name!r} is not available; available: {', '.join(sorted(PROVIDERS))}")
    return found


def _load(target: str, base: type, what: str) -> Any:
    """The class ``target`` (``module:name``) names; TypeError unless it subclasses ``base``."""
    module_name, _, attribute = target.partition(":")
    cls = vars(importlib.import_module(module_name))[attribute]
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise TypeError(f"{target} is registered as {what} but is not a {base.__name__} subclass")
    return cls


def provider_class(name: str) -> type[Provider]:
    """The class registered as ``name``; UsageError naming the choices for an unknown one."""
    cls: type[Provider] = _load(_registered(name).provider, Provider, f"provider {name!r}")
    return cls


def settings_class(name: str) -> type[Settings]:
    """The Settings class of provider ``name`` (the provider's ``Settings``), without importing the provider."""
    cls: type[Settings] = _load(_registered(name).settings, Settings, f"the settings of provider {name!r}")
    return cls


def provider_settings() -> dict[str, type[Settings]]:
    """Every provider's Settings class, by provider name (imports only their settings modules)."""
    return {name: settings_class(name) for name in PROVIDERS}


@functools.cache
def settings_catalog() -> tuple[Declared, ...]:
    """Every setting, the core's and the providers' (each once): what the CLI and the pytest plugin offer."""
    return tuple(catalog(RunConfig, provider_settings()))


def build_config(**values: Any) -> RunConfig:
    """The run's config from flags / keywords (None: not given), the profile and the defaults, validated:
    ``RunConfig.build`` with every provider's settings."""
    return RunConfig.build(provider_settings(), **values)


def config_from_dict(data: Mapping[str, Any]) -> RunConfig:
    """A config another process built (``RunConfig.as_dict``), read back unchanged."""
    return RunConfig.from_dict(data, {str(data["provider"]): settings_class(str(data["provider"]))})


def write_config(config: RunConfig, path: Path) -> Path:
    """Hand a built config to other processes as one file (``--mesh-config-file``)."""
    path.write_text(json.dumps(config.as_dict(), indent=1) + "\n")
    return path


def read_config(path: Path) -> RunConfig:
    """The config :func:`write_config` wrote; UsageError if the file cannot be read."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"--mesh-config-file {path} cannot be read: {exc}") from None
    return config_from_dict(data)


def create_provider(config: RunConfig, topology: Topology) -> Provider:
    """A provider for ``config.provider``, not yet up."""
    return provider_class(config.provider)(config, topology)


def validate_provider(config: RunConfig, topology: Topology) -> None:
    """Raise UsageError for a setting the provider cannot use with this topology (e.g. an unknown --defect),
    before anything starts. Settings meant for another provider were refused when the config was built."""
    provider_class(config.provider).validate(config, topology)


def preflight_provider(config: RunConfig, topology: Topology) -> list[str]:
    """What would stop ``up()`` on this machine (or these clusters), one line per problem with its fix;
    empty when nothing would. Runs nothing that changes anything."""
    return provider_class(config.provider).preflight(config, topology)


def attach_provider(config: RunConfig, topology: Topology, state: Path) -> Provider:
    """A provider attached to an environment another process brought up (``state`` from ``up``)."""
    return provider_class(config.provider).attach(config, topology, state)


def release_provider(config: RunConfig, topology: Topology, state: Path) -> None:
    """Tear down an environment by its state: attach and ``down()``, or, if its manager process is gone,
    let the provider stop what is left by PID."""
    cls = provider_class(config.provider)
    try:
        provider = cls.attach(config, topology, state)
    except ConformanceError:
        cls.cleanup(state)
        return
    provider.down()


def provider_defects(name: str) -> Mapping[str, str]:
    """The deliberate defects a provider can be started with (name -> one line of meaning); UsageError if it
    has none."""
    return provider_class(name).defects()


def provider_offers(name: str) -> frozenset[Feature]:
    """Every feature a provider can offer, in a topology and configuration that allows it (its ``OFFERS``)."""
    return provider_class(name).OFFERS


def leftover_runs() -> list[tuple[str, Path]]:
    """(provider, state) of every environment meshconf brought up that is still recorded on disk."""
    return [(name, path) for name in PROVIDERS for path in provider_class(name).leftovers()]


def teardown_run(provider_name: str, state: Path) -> list[int]:
    """Tear down one recorded environment by its state, without needing its config."""
    return provider_class(provider_name).cleanup(state)


def plan_provider(config: RunConfig, topology: Topology) -> str:
    """What ``up()`` would do, as printable numbered steps; runs nothing. UsageError if the provider has no plan."""
    return provider_class(config.provider).plan(config, topology)
