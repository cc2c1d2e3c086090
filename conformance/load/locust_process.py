"""Locust, headless, in a process of its own: start it, mark events while it runs, collect its LoadResult.

Locust is never imported here: ``import locust`` monkey-patches sockets, ssl and threads (gevent) in the
importing process, which breaks pytest-xdist. The run is bounded three ways: the locustfile quits when its
window closes, Locust's own ``--run-time`` is a hard limit, and :meth:`LocustRun.wait` stops the process
group by PID once ``planned + grace`` seconds have passed.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Any

from conformance.errors import EnvironmentBroken, ProviderError
from conformance.lifetime import die_with_parent
from conformance.load.profile import HttpTarget, LoadProfile
from conformance.load.result import LoadEvent, LoadResult, decode_histogram, timeline_of

__all__ = ["LocustRun", "locustfile_source", "result_of_locust", "run_locust", "start_locust"]


def locustfile_source() -> Path:
    """Path of meshconf's locustfile: the repository's ``workloads/locust/``, or the copy in the wheel."""
    repo = Path(__file__).resolve().parents[2] / "workloads" / "locust" / "locustfile.py"
    if repo.is_file():
        return repo
    bundled = Path(str(resources.files("conformance") / "_bundled" / "locustfile.py"))
    if bundled.is_file():
        return bundled
    raise ProviderError("locustfile.py is missing: reinstall meshconf (it ships workloads/locust/locustfile.py)")


class LocustRun:
    """A running Locust process. Use as a context manager: leaving it stops the process (by PID) if needed."""

    def __init__(self, target: HttpTarget, profile: LoadProfile, out_dir: Path, *, label: str = "",
                 grace_s: float = 30.0, locustfile: Path | None = None) -> None:
        self.target = target
        self.profile = profile
        self.out_dir = out_dir.resolve()  # Locust runs in its own working directory
        self.label = label or target.label or str(target)
        self.grace_s = grace_s
        self.locustfile = locustfile or locustfile_source()
        self.events: list[LoadEvent] = []
        self.process: subprocess.Popen[bytes] | None = None
        self._started = 0.0
        self._opened_at: float | None = None

    @property
    def result_file(self) -> Path:
        return self.out_dir / "result.json"

    @property
    def window_file(self) -> Path:
        return self.out_dir / "window.json"

    @property
    def log_file(self) -> Path:
        return self.out_dir / "locust.log"

    def argv(self) -> list[str]:
        profile = self.profile
        run_time = math.ceil(profile.planned_s + 5)  # Locust's own hard limit; the locustfile quits earlier
        return [
            sys.executable, "-m", "locust", "-f", str(self.locustfile), "--headless",
            "--host", self.target.base_url, "-u", str(profile.users), "-r", f"{profile.spawn_rate_per_s:g}",
            "-t", f"{run_time}s", "--csv", str(self.out_dir / "locust"), "--html", str(self.out_dir / "locust.html"),
            "--exit-code-on-error", "0", "--only-summary", "--loglevel", "WARNING",
            "--meshconf-plan", str(self.out_dir / "plan.json"),
        ]

    def start(self) -> LocustRun:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for stale in (self.result_file, self.window_file):
            stale.unlink(missing_ok=True)
        plan = {
            "path": self.target.path, "host_header": self.target.host, "name": self.target.label or None,
            "rate_rps": self.profile.rate_rps, "users": self.profile.users, "warmup_s": self.profile.warmup_s,
            "duration_s": self.profile.duration_s, "timeout_s": self.profile.timeout_s,
            "result": str(self.result_file), "window": str(self.window_file),
        }
        (self.out_dir / "plan.json").write_text(json.dumps(plan, indent=1))
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOCUST_")}  # the plan says it all
        with open(self.log_file, "ab") as log:
            # cwd = out_dir: Locust reads locust.conf / pyproject.toml from its working directory
            # its own session (stopped as a group), and gone with the check's process even if that is killed
            self.process = subprocess.Popen(self.argv(), cwd=self.out_dir, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                            preexec_fn=die_with_parent())
        self._started = time.monotonic()
        return self

    # -- while it runs ---------------------------------------------------------------------------------------

    def window_opened_at(self, wait: bool = True) -> float:
        """Wall-clock time the measured window opened (after spawning and warm-up); waits for it by default."""
        if self._opened_at is not None:
            return self._opened_at
        deadline = self._started + self.profile.spawn_s + self.profile.warmup_s + self.grace_s
        while True:
            with contextlib.suppress(OSError, ValueError, KeyError):
                self._opened_at = float(json.loads(self.window_file.read_text())["openedAt"])
                return self._opened_at
            if not wait or self.process is None or self.process.poll() is not None or time.monotonic() > deadline:
                raise EnvironmentBroken(f"the Locust run never opened its measured window; {self._log_tail()}")
            time.sleep(0.02)

    def mark(self, label: str) -> LoadEvent:
        """Put an event at this moment on the window's time axis (plots show it as a marker)."""
        event = LoadEvent(round(time.time() - self.window_opened_at(), 3), label)
        self.events.append(event)
        return event

    # -- the end ---------------------------------------------------------------------------------------------

    def wait(self) -> LoadResult:
        """Wait for the run to end and return its result (generator shortfall is *not* checked here).

        Raises EnvironmentBroken when Locust failed, hung (stopped after planned + grace seconds), or ended
        before its window closed.
        """
        if self.process is None:
            raise EnvironmentBroken("the Locust run was never started")
        budget = self.profile.planned_s + self.grace_s
        try:
            code = self.process.wait(max(0.1, self._started + budget - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.stop()
            raise EnvironmentBroken(f"Locust did not finish within {budget:.0f} s and was stopped "
                                    f"(raise --timeout load_grace_s=...); {self._log_tail()}") from None
        if code != 0:
            raise EnvironmentBroken(f"Locust exited with code {code}; {self._log_tail()}")
        try:
            data = json.loads(self.result_file.read_text())
        except (OSError, ValueError):
            raise EnvironmentBroken(f"Locust wrote no result ({self.result_file}); {self._log_tail()}") from None
        if not data.get("complete"):
            raise EnvironmentBroken(f"the Locust run ended before its measured window closed; {self._log_tail()}")
        return self._result(data)

    def _result(self, data: dict[str, Any]) -> LoadResult:
        return result_of_locust(data, self.target, self.profile, self.out_dir, label=self.label,
                                events=tuple(self.events))

    def stop(self) -> None:
        """Stop the Locust process (its process group, by PID): SIGTERM, then SIGKILL. Idempotent."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        for sig, wait_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)  # start_new_session: its group id is its PID
            try:
                process.wait(wait_s)
                return
            except subprocess.TimeoutExpired:
                continue

    def _log_tail(self, lines: int = 8) -> str:
        try:
            text = self.log_file.read_text(errors="replace").strip().splitlines()[-lines:]
        except OSError:
            return "no Locust log"
        return "Locust log: " + " | ".join(text) if text else "the Locust log is empty"

    def __enter__(self) -> LocustRun:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def result_of_locust(data: Mapping[str, Any], target: HttpTarget, profile: LoadProfile, out_dir: Path, *,
                     label: str, events: tuple[LoadEvent, ...] = ()) -> LoadResult:
    """A LoadResult from the locustfile's ``result.json``; Locust's files in ``out_dir`` become artifacts."""
    window_s = float(data["windowS"])
    seconds = {int(k): (int(v[0]), int(v[1]), decode_histogram(v[2])) for k, v in data["seconds"].items()}
    artifacts = {
        "locust-html": out_dir / "locust.html", "locust-stats-csv": out_dir / "locust_stats.csv",
        "locust-failures-csv": out_dir / "locust_failures.csv", "locust-log": out_dir / "locust.log",
    }
    return LoadResult.from_histogram(
        decode_histogram(data["histogram"]), label=label, generator="locust", target=str(target),
        target_rps=profile.rate_rps, users=profile.users, warmup_s=profile.warmup_s, window_s=window_s,
        errors=int(data["errors"]), generator_cpu_pct=float(data["cpuPct"]),
        error_kinds=data.get("errorKinds") or {}, timeline=timeline_of(seconds, window_s), events=events,
        artifacts={k: str(p) for k, p in artifacts.items() if p.exists()},
    )


def start_locust(target: HttpTarget, profile: LoadProfile, out_dir: Path, *, label: str = "",
                 grace_s: float = 30.0, locustfile: Path | None = None) -> LocustRun:
    """Start a headless Locust run on ``target``; returns at once. ``with start_locust(...) as run:``."""
    return LocustRun(target, profile, out_dir, label=label, grace_s=grace_s, locustfile=locustfile).start()


def run_locust(target: HttpTarget, profile: LoadProfile, out_dir: Path, *, label: str = "",
               events: Iterable[LoadEvent] = (), grace_s: float = 30.0, locustfile: Path | None = None) -> LoadResult:
    """Run Locust on ``target`` for ``profile`` and return the measured window's result.

    Locust's CSV, HTML report and log stay in ``out_dir`` (listed in ``result.artifacts``). Raises
    LoadShortfall (carrying the result) when the generator could not produce the rate, EnvironmentBroken
    when Locust failed or hung.
    """
    with start_locust(target, profile, out_dir, label=label, grace_s=grace_s, locustfile=locustfile) as run:
        result = run.wait().with_events(events)
    profile.require_rate(result)
    return result

