"""meshconf doctor's inotify row, read from a /proc laid out by the test."""

from __future__ import annotations

import os
from pathlib import Path

from conformance.doctor import INOTIFY_PER_MESH, _inotify, render_findings


def _proc(tmp_path: Path, limit: int, inotify_fds: dict[int, int]) -> Path:
    proc = tmp_path / "proc"
    (proc / "sys/fs/inotify").mkdir(parents=True)
    (proc / "sys/fs/inotify/max_user_instances").write_text(f"{limit}\n")
    (proc / "self").mkdir()  # not a PID: ignored
    for pid, count in inotify_fds.items():
        fd = proc / str(pid) / "fd"
        fd.mkdir(parents=True)
        for n in range(count):
            os.symlink("anon_inode:inotify", fd / str(n))
        os.symlink("socket:[1234]", fd / "99")
    return proc


def test_inotify_counts_this_users_instances(tmp_path: Path) -> None:
    finding = _inotify(_proc(tmp_path, 128, {101: 3, 102: 2, 103: 0}))
    assert finding.found
    assert finding.version.startswith("123 of 128 free")
    assert finding.needed_by == ("local",)


def test_too_few_free_instances_mean_not_ready_for_local(tmp_path: Path) -> None:
    finding = _inotify(_proc(tmp_path, 128, {101: 128 - INOTIFY_PER_MESH + 1}))
    assert not finding.found
    text, ready = render_findings([finding], "local")
    assert not ready
    assert "MISSING inotify instances" in text and "fs.inotify.max_user_instances" in text
    assert render_findings([finding], "kind")[1]  # kind does not run Envoy on this machine


def test_no_limit_to_read_is_not_a_failure(tmp_path: Path) -> None:
    assert _inotify(tmp_path / "nothing").found
