"""Mesh overhead at 500 rps: (Locust -> client sidecar -> mTLS -> server sidecar -> app) minus (Locust -> app).

Direct and mesh runs alternate (so a noisy moment hits both): up to five pairs of 8 s runs after 2 s of
warm-up, bounded to 4 minutes; a pair with a run short of the rate is not counted. Prints each run, each
pair's overhead, and the median overhead at p50 and p99.

    python benchmarks/mesh_overhead.py
"""

from __future__ import annotations

import statistics

from _mesh import Deadline, local_mesh, measure, profile

RATE_RPS = 500
PAIRS = 5


def main() -> None:
    deadline = Deadline(240)
    overheads: dict[str, list[float]] = {"p50": [], "p99": []}
    with local_mesh() as paths:
        for pair in range(PAIRS):
            if deadline.passed():
                break
            direct = measure(paths.direct, profile(RATE_RPS), paths.work / f"direct-{pair}")
            mesh = measure(paths.mesh, profile(RATE_RPS), paths.work / f"mesh-{pair}")
            if direct is None or mesh is None:
                continue
            for name, values in overheads.items():
                values.append(mesh.percentile_ms(name) - direct.percentile_ms(name))
            print(f"  overhead: p50 {overheads['p50'][-1]:.3f} ms, p99 {overheads['p99'][-1]:.3f} ms", flush=True)
    if not overheads["p50"]:
        print("\nmesh overhead: no pair of runs reached the rate")
        return
    print(f"\nmesh overhead at {RATE_RPS} rps (client sidecar -> mTLS -> server sidecar minus direct, median of "
          f"{len(overheads['p50'])} pairs): p50 {statistics.median(overheads['p50']):.3f} ms, "
          f"p99 {statistics.median(overheads['p99']):.3f} ms")


if __name__ == "__main__":
    main()
