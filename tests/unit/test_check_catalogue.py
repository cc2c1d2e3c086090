"""`meshconf checks` and the README's check table say the same: every check, and which providers run it."""

from __future__ import annotations

import re

from conformance.cli import list_checks, providers_for, runs_on
from conformance.provider import Feature
from conformance.providers import build_config, provider_offers
from conformance.providers.existing.provider import ExistingProvider
from conformance.providers.kind.provider import KindProvider
from conformance.providers.local.provider import LocalProvider
from conformance.topology import load_topology
from tests.conftest import REPO


def _readme_rows() -> dict[str, str]:
    text = (REPO / "README.md").read_text()
    table = text[text.index("| id | runs on | proves |"):]
    rows = re.findall(r"^\| `([a-z0-9-]+)` \| ([a-z0-9, ]+) \|", table.split("\n\n")[0], re.MULTILINE)
    return dict(rows)


def test_the_readme_table_lists_every_check_with_the_providers_that_run_it() -> None:
    checks = {info.id: info for info in list_checks(REPO / "suites")}
    rows = _readme_rows()
    assert set(rows) == set(checks)
    assert {c: ", ".join(providers_for(i)["providers"]) for c, i in checks.items()} == rows


def test_a_check_that_needs_what_a_provider_lacks_says_which() -> None:
    overhead = next(i for i in list_checks(REPO / "suites") if i.id == "latency-mesh-overhead")
    assert runs_on(overhead) == ("runs on: local (kind lacks sidecar-entry; existing lacks sidecar-entry; k3s lacks "
                                 "sidecar-entry)")


def test_a_provider_offers_at_least_what_it_reports_in_every_topology() -> None:
    for name in ("multi-primary", "multi-network", "primary-remote", "three-cluster"):
        topology = load_topology(name)
        contexts = tuple(f"ctx{i}" for i in range(len(topology.clusters)))
        assert LocalProvider(build_config(topology=name), topology).features() <= provider_offers("local")
        assert KindProvider(build_config(provider="kind", topology=name), topology).features() <= \
            provider_offers("kind")
        existing = build_config(provider="existing", topology=name, contexts=contexts, allow_mesh_wide=True)
        assert ExistingProvider(existing, topology).features() <= provider_offers("existing")
    assert provider_offers("local") == frozenset(Feature)
    assert LocalProvider.OFFERS and KindProvider.OFFERS and ExistingProvider.OFFERS
