"""The wheel works outside a clone: `pip install meshconf && meshconf run` finds the checks it ships.

Builds the real wheel (pip fetches hatchling from the package index, as any install does; skipped with the
reason when it cannot), unpacks it, and runs meshconf from it with the repository out of reach.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conformance.cli import list_checks
from tests.conftest import REPO, run_meshconf

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def unpacked_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(dist), str(REPO)],
                           capture_output=True, text=True, timeout=300, check=False)
    if built.returncode != 0:
        pytest.skip("the wheel could not be built (pip needs hatchling from the package index): "
                    + (built.stderr.strip().splitlines() or ["no output"])[-1])
    (wheel,) = dist.glob("meshconf-*.whl")
    target = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)
    return target


def _meshconf(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """meshconf from the unpacked wheel only: PYTHONPATH puts it ahead of the editable install."""
    return run_meshconf(*args, cwd=cwd, timeout=300, env={"PYTHONPATH": str(site)})


def test_the_wheel_ships_every_check_with_its_yaml(unpacked_wheel: Path) -> None:
    bundled = unpacked_wheel / "conformance" / "_bundled" / "suites"
    shipped = sorted(p.relative_to(bundled) for p in bundled.rglob("*") if p.suffix in (".py", ".yaml"))
    in_repo = sorted(p.relative_to(REPO / "suites") for p in (REPO / "suites").rglob("*")
                     if p.suffix in (".py", ".yaml"))
    assert shipped == in_repo


def test_meshconf_checks_from_the_wheel_lists_the_catalogue(unpacked_wheel: Path, tmp_path: Path) -> None:
    done = _meshconf(unpacked_wheel, tmp_path, "checks", "--json")
    assert done.returncode == 0, done.stderr
    listed = {c["id"] for c in json.loads(done.stdout)}
    assert listed == {c.id for c in list_checks(REPO / "suites")}


def test_meshconf_run_from_the_wheel_runs_a_check_on_the_local_mesh(unpacked_wheel: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = _meshconf(unpacked_wheel, tmp_path, "run", "--out", str(out), "-k", "mtls_strict_rejects")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    report = json.loads((out / "conformance-report.json").read_text())
    statuses = {c["id"]: c["status"] for c in report["checks"]}
    assert statuses == {"mtls-strict-rejects-plaintext": "passed"}
