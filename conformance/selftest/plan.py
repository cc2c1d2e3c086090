"""What a self-validation runs, and in which order: one ``meshconf run`` per :class:`Run`.

First the clean runs, at the shipped settings: the catalogue on the first topology the rows use (less the
checks rows claim only on another topology), alone on the machine (it holds the latency budgets); on each
other topology, the checks rows claim there and those the first clean run skipped (the runner adds them), so
that every check passes somewhere and every claimed check passes on its row's topology. A later clean run
that measures no load goes side by side with the defect runs. Then each row of :data:`CATCHES` with its
defect, split in two: the checks that measure latency under load run alone (a neighbour's CPU would be
measured too), the others side by side with other rows' runs (most of their time is spent waiting for a
consistency budget to run out, which costs little CPU).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from conformance import expect
from conformance.check import Area
from conformance.errors import UsageError
from conformance.selftest.catches import CATCHES, Catch

__all__ = ["FORBIDDEN_FLAGS", "Run", "SelftestPlan", "selection"]

FORBIDDEN_FLAGS = ("--budget", "--timeout", "--load", "--profile", "-k", "-n", "--workers", "--topology",
                   "--defect", "--mesh-defect", "--out", "--provider", "--attach", "--suites", "--keep")
"""Flags a row's ``args`` may not carry: self-validation runs at the shipped settings, and the plan owns the
selection, parallelism, topology, defect and output of each run."""

DEFAULT_PARALLEL = 12
"""Checks at once in the side-by-side phase: each waits on its own consistency budget, polling every 100 ms."""


@dataclass(frozen=True)
class Run:
    """One ``meshconf run``: the catalogue (``checks`` empty) or some checks, with a defect or none."""

    name: str
    """Unique in the plan; names the run's output directory."""
    topology: str
    defect: str | None
    checks: tuple[str, ...]
    """The checks it runs; none: the whole catalogue."""
    args: tuple[str, ...] = ()
    alone: bool = False
    """Measures latency under load: nothing else of the self-validation runs meanwhile."""
    rows: tuple[int, ...] = ()
    """The indexes of the plan's catches this run decides."""
    width: int = 1
    """Checks of it that can run at once: each that is not serial, or one (a serial check runs alone)."""

    @property
    def clean(self) -> bool:
        return self.defect is None


@dataclass(frozen=True)
class SelftestPlan:
    """The rows to prove (``catches``), what the catalogue holds, and how many checks may run at once."""

    catches: tuple[Catch, ...]
    catalogue: Mapping[str, str] = field(hash=False)
    """Every check of the catalogue: id -> area."""
    defects: Mapping[str, str] = field(hash=False)
    """Every defect the local mesh has: name -> one line of meaning."""
    topologies: tuple[str, ...]
    parallel: int = DEFAULT_PARALLEL
    serial: frozenset[str] = frozenset()
    """The catalogue's serial checks (``CheckInfo.serial``): they never run beside another check."""

    @classmethod
    def build(cls, catalogue: Mapping[str, str], *, topology: str | None = None, parallel: int | None = None,
              catches: Sequence[Catch] = CATCHES, defects: Mapping[str, str] | None = None,
              serial: Iterable[str] = ()) -> SelftestPlan:
        """The plan for ``catches`` (only the rows on ``topology``, if given) against ``catalogue`` (check id
        -> area) and the local mesh's defects. Raises UsageError for a row that names an unknown defect,
        check or expectation, or that changes the shipped settings."""
        if defects is None:
            from conformance.providers import provider_defects

            defects = provider_defects("local")
        validate_catches(catches, catalogue, defects)
        chosen = tuple(c for c in catches if topology is None or c.topology == topology)
        if not chosen:
            used = sorted({c.topology for c in catches})
            raise UsageError(f"no self-validation rows on topology {topology!r}; rows exist for: {', '.join(used)}")
        if parallel is not None and parallel < 1:
            raise UsageError(f"-n must be at least 1 (checks at once), got {parallel}")
        topologies = tuple(dict.fromkeys(c.topology for c in chosen))
        return cls(chosen, dict(catalogue), dict(defects), topologies, parallel or DEFAULT_PARALLEL,
                   frozenset(serial))

    def measures_load(self, check: str) -> bool:
        """The check measures latency under load (it must not share the machine)."""
        return self.catalogue.get(check) == str(Area.LATENCY)

    @property
    def claimed(self) -> dict[str, set[str]]:
        """Topology -> the checks that rows on it claim."""
        claimed: dict[str, set[str]] = {}
        for catch in self.catches:
            claimed.setdefault(catch.topology, set()).update(catch.checks)
        return claimed

    def first_clean_checks(self) -> tuple[str, ...]:
        """What the first clean run runs: the whole catalogue (empty), less the checks that rows claim only on
        another topology (those pass or fail in that topology's clean run, and need not run twice)."""
        first, claimed = self.topologies[0], self.claimed
        elsewhere_only = {c for t, checks in claimed.items() if t != first for c in checks} - claimed.get(first, set())
        return tuple(sorted(set(self.catalogue) - elsewhere_only)) if elsewhere_only else ()

    def sized(self, run: Run) -> Run:
        """``run`` with its width: a serial check runs alone, so a worker for each of those would only wait."""
        return dataclasses.replace(run, width=max(1, sum(c not in self.serial for c in run.checks)))

    def runs(self) -> list[Run]:
        """Clean runs first, then the defect runs that measure load, then the others (most checks first)."""
        claimed = self.claimed
        first = self.topologies[0]
        clean = [Run(f"clean-{first}", first, None, self.first_clean_checks())]
        clean += [self.sized(Run(f"clean-{t}", t, None, tuple(sorted(claimed[t])))) for t in self.topologies[1:]]
        alone: list[Run] = []
        side_by_side: list[Run] = []
        names: dict[str, int] = {}
        for index, catch in enumerate(self.catches):
            base = catch.defect if catch.topology == "multi-primary" else f"{catch.defect}-{catch.topology}"
            for measuring in (True, False):
                checks = tuple(c for c in catch.checks if self.measures_load(c) == measuring)
                if not checks:
                    continue
                name = f"{base}-load" if measuring else base
                names[name] = names.get(name, 0) + 1
                if names[name] > 1:
                    name = f"{name}-{names[name]}"
                run = self.sized(Run(name, catch.topology, catch.defect, checks, tuple(catch.args), measuring,
                                     (index,)))
                (alone if measuring else side_by_side).append(run)
        side_by_side.sort(key=lambda r: -len(r.checks))
        return clean + alone + side_by_side


def validate_catches(catches: Iterable[Catch], catalogue: Mapping[str, str], defects: Mapping[str, str]) -> None:
    """Raise UsageError for the first row that cannot stand (see :meth:`SelftestPlan.build`)."""
    expectations = {name for name in expect.__all__ if name.startswith("expect_")}
    for catch in catches:
        where = f"self-validation row {catch.defect} ({catch.topology})"
        if catch.defect not in defects:
            raise UsageError(f"{where}: the local mesh has no defect {catch.defect!r} (see `meshconf defects`)")
        if not catch.checks:
            raise UsageError(f"{where}: names no check that catches it")
        for check, expectation in catch.checks.items():
            if check not in catalogue:
                raise UsageError(f"{where}: no check {check!r} in the catalogue (see `meshconf checks`)")
            if expectation is not None and expectation not in expectations:
                raise UsageError(f"{where}: {check} is decided by {expectation!r}, which is not an expect_* of "
                                 f"conformance.expect")
        for arg in catch.args:
            flag = arg.split("=", 1)[0]
            if flag in FORBIDDEN_FLAGS:
                raise UsageError(f"{where}: args may not carry {flag} (self-validation runs at the shipped "
                                 f"settings, and the plan owns selection, parallelism and output)")


def selection(checks: Iterable[str], catalogue: Iterable[str]) -> str:
    """A pytest ``-k`` expression that selects exactly ``checks`` (``-k`` matches substrings, so a check whose
    test name contains another's is excluded by name)."""
    names = {c: "test_" + c.replace("-", "_") for c in catalogue}
    terms = []
    for check in sorted(checks):
        own = names.get(check, "test_" + check.replace("-", "_"))
        longer = sorted(n for c, n in names.items() if c != check and own in n)
        terms.append(" and ".join([own, *(f"not {n}" for n in longer)]))
    return " or ".join(f"({t})" if " and " in t else t for t in terms)

