"""Settings declared once: a field with :func:`setting` is a CLI flag, a pytest option and a profile key.

A setting is one dataclass field. Its name is the profile key (``istio_version: 1.28.0``) and the keyword of
``build_config``; its flag is ``--`` plus the name with dashes (``--istio-version``) unless it says otherwise;
its pytest option is that flag with a ``--mesh-`` prefix (``--mesh-istio-version``). The core declares its
own fields on :class:`conformance.config.RunConfig`; each provider declares its own in a :class:`Settings`
subclass (``conformance/providers/<name>/settings.py``), which the registry lists (``provider_settings()``).
Both the ``meshconf`` parser and the pytest plugin are generated from :func:`catalog`.

The type of a field says how a value is read: ``bool`` is a switch, ``str`` / ``Path`` one value, a
``tuple[str, ...]`` a repeatable flag, and a dataclass of numbers (budgets, timeouts, load) repeatable
``NAME=VALUE`` overrides.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

__all__ = ["RUN_COMMANDS", "Declared", "Settings", "catalog", "coerce", "declarations", "plain", "setting"]

_KEY = "meshconf"
RUN_COMMANDS = ("run", "up")
"""The commands that bring a mesh up (or use one), and so take every setting unless a field says otherwise."""


@dataclass(frozen=True)
class _Meta:
    help: str
    flag: str | None
    metavar: str | None
    aliases: tuple[str, ...]
    commands: tuple[str, ...]


def setting(default: Any = dataclasses.MISSING, *, help: str, factory: Callable[[], Any] | None = None,
            flag: str | None = None, metavar: str | None = None, aliases: Iterable[str] = (),
            commands: Iterable[str] = RUN_COMMANDS) -> Any:
    """A dataclass field that is a setting: ``help`` is its one line in ``--help`` (and the README's flags);
    ``flag`` its CLI spelling when not ``--`` + the name with dashes; ``aliases`` other CLI spellings still
    accepted; ``commands`` the ``meshconf`` commands that take it."""
    meta = {_KEY: _Meta(help, flag, metavar, tuple(aliases), tuple(commands))}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class Declared:
    """One setting as the parsers see it."""

    name: str
    """The field: profile key, ``build_config`` keyword, RunConfig / Settings attribute."""
    kind: str
    """``switch`` (bool), ``text`` (str), ``path``, ``list`` (repeatable), ``overrides`` (NAME=VALUE, repeatable)."""
    help: str
    flag: str
    metavar: str | None
    aliases: tuple[str, ...]
    commands: tuple[str, ...]
    owners: tuple[str, ...] = ()
    """The providers that declare it; empty for the core's own settings."""

    @property
    def pytest_option(self) -> str:
        """The pytest twin of the CLI flag: ``--istio-version`` -> ``--mesh-istio-version``."""
        return "--mesh-" + self.flag.removeprefix("--")

    @property
    def dest(self) -> str:
        """Where argparse and pytest keep the value."""
        return f"meshconf_{self.name}"

    @property
    def keyword(self) -> str:
        """The ``build_config`` keyword the flag's value goes to (overrides: ``budget_overrides``...)."""
        return f"{self.flag.removeprefix('--')}_overrides" if self.kind == "overrides" else self.name

    @property
    def described(self) -> str:
        """Help text with the providers that read it: ``kind and k3s: the Istio to install``."""
        if not self.owners:
            return self.help
        *first, last = self.owners
        return f"{', '.join(first)} and {last}: {self.help}" if first else f"{last}: {self.help}"

    def parser_arguments(self) -> dict[str, Any]:
        """``add_argument`` / ``addoption`` keywords (argparse's and pytest's are the same here). ``None``
        means "not given": the profile or the default decides."""
        arguments: dict[str, Any] = {"dest": self.dest, "help": self.described, "default": None}
        if self.kind == "switch":
            arguments["action"] = "store_true"
        else:
            arguments["metavar"] = self.metavar or self.name.upper()
        if self.kind in ("list", "overrides"):
            arguments["action"] = "append"
        return arguments


def declarations(cls: type[Any]) -> list[Declared]:
    """The settings a dataclass declares, in field order."""
    hints = typing.get_type_hints(cls)
    found = []
    for item in dataclasses.fields(cls):
        meta = item.metadata.get(_KEY)
        if isinstance(meta, _Meta):
            found.append(Declared(item.name, _kind(hints[item.name]), meta.help,
                                  meta.flag or "--" + item.name.replace("_", "-"), meta.metavar, meta.aliases,
                                  meta.commands))
    return found


def catalog(core: type[Any], providers: Mapping[str, type[Settings]]) -> list[Declared]:
    """Every setting: the core's, then each provider's, a setting shared by several providers once (with all
    its owners). Two providers declaring one name differently is a programming error (TypeError)."""
    merged: dict[str, Declared] = {d.name: d for d in declarations(core)}
    for provider, cls in providers.items():
        for declared in declarations(cls):
            known = merged.get(declared.name)
            if known is None:
                merged[declared.name] = dataclasses.replace(declared, owners=(provider,))
            elif dataclasses.replace(known, owners=()) != declared or not known.owners:
                raise TypeError(f"setting {declared.name} of provider {provider} is declared differently elsewhere; "
                                "declare a shared setting once, in a Settings base class")
            else:
                merged[declared.name] = dataclasses.replace(known, owners=(*known.owners, provider))
    flags = [f for d in merged.values() for f in (d.flag, *d.aliases)]
    if len(flags) != len(set(flags)):
        raise TypeError(f"two settings share a flag: {sorted(f for f in flags if flags.count(f) > 1)}")
    return list(merged.values())


@dataclass(frozen=True)
class Settings:
    """A provider's own settings; this base has none (a provider without options uses it as is)."""

    def validate(self) -> None:
        """Raise UsageError for a value that cannot work, in one line naming the flag and the fix."""

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> Self:
        """The settings from plain values (a profile, flags, a config file): each read as its field's type;
        no validation (see :meth:`validate`)."""
        kinds = {d.name: d.kind for d in declarations(cls)}
        return cls(**{name: coerce(kinds[name], value) for name, value in values.items()})

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly copy; :meth:`from_values` reads it back."""
        return {name: plain(value) for name, value in dataclasses.asdict(self).items()}


def coerce(kind: str, value: Any) -> Any:
    """A plain value (YAML, JSON, a flag) as the type of a setting of ``kind``; None stays None."""
    if value is None:
        return None
    if kind == "path":
        return Path(str(value)).expanduser()
    if kind == "list":
        return (str(value),) if isinstance(value, str) else tuple(str(v) for v in value)
    if kind == "switch":
        return bool(value)
    if kind == "text":
        return str(value)
    return value


def plain(value: Any) -> Any:
    """JSON-friendly: paths as strings, tuples as lists, dataclasses as mappings."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def _kind(hint: Any) -> str:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = args[0] if typing.get_origin(hint) in (typing.Union, types.UnionType) else hint
    if base is bool:
        return "switch"
    if base is str:
        return "text"
    if base is Path:
        return "path"
    if typing.get_origin(base) is tuple:
        return "list"
    if dataclasses.is_dataclass(base):
        return "overrides"
    raise TypeError(f"a setting's type must be bool, str, Path, tuple[str, ...] or a dataclass of numbers, "
                    f"not {hint!r}")

