"""Measurement floor: what the direct path (Locust -> the probe app, no mesh) costs at 500 rps, p50 and p99.

Nothing measured through the mesh can be resolved below this: it is Locust's own client, the loopback and
the probe app. Three runs of 8 s (after 2 s of warm-up), bounded to 3 minutes; prints each and the median.

    python benchmarks/measurement_floor.py
"""

from __future__ import annotations

from _mesh import Deadline, local_mesh, measure, median_ms, profile

RATE_RPS = 500
RUNS = 3


def main() -> None:
    deadline = Deadline(180)
    with local_mesh() as paths:
        results = []
        for run in range(RUNS):
            if deadline.passed():
                break
            result = measure(paths.direct, profile(RATE_RPS), paths.work / f"floor-{run}")
            if result is not None:
                results.append(result)
    if not results:
        print("\nmeasurement floor: no run reached the rate")
        return
    print(f"\nmeasurement floor (direct path, {RATE_RPS} rps, median of {len(results)} runs): "
          f"p50 {median_ms(results, 'p50'):.3f} ms, p99 {median_ms(results, 'p99'):.3f} ms")


if __name__ == "__main__":
    main()
