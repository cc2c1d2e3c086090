"""Load-generator headroom: the highest rate one Locust process sustains against the direct path (the probe
app, no mesh) within 2% of its target, and the p99 at that rate.

Rates step up from 500 rps until a run falls short (achieved < 98% of the target) or Locust is CPU-bound
(> 90% of a core); at most 12 steps of 5 s (after 1 s of warm-up), bounded to 4 minutes. Each line says
whether the generator (its CPU) or the target was the limit: the probe app is one Python process too.

    python benchmarks/headroom.py
"""

from __future__ import annotations

from _mesh import Deadline, line, local_mesh, profile

from conformance.load import LoadResult, LoadShortfall, run_locust

RATES = (500, 1000, 1500, 2000, 3000, 4000, 5000, 6000, 8000, 10000, 12000, 15000)
MIN_RATE_PCT = 98.0
MAX_CPU_PCT = 90.0


def main() -> None:
    deadline = Deadline(240)
    best: LoadResult | None = None
    with local_mesh() as paths:
        for rate in RATES:
            if deadline.passed():
                print("time bound reached", flush=True)
                break
            try:
                result = run_locust(paths.direct, profile(rate, duration_s=5, warmup_s=1),
                                    paths.work / f"rate-{rate}")
            except LoadShortfall as shortfall:
                assert shortfall.result is not None
                limit = "generator" if shortfall.result.generator_cpu_pct > MAX_CPU_PCT * 0.95 else "target"
                print(f"{line(shortfall.result)}  <- short of {rate} rps ({limit}-bound)", flush=True)
                break
            print(line(result), flush=True)
            best = result
    if best is None:
        print("\nheadroom: not even the first rate was sustained")
        return
    print(f"\nheadroom of one Locust process (direct path): {best.target_rps:g} rps sustained within 2% "
          f"({best.achieved_rps:.0f} achieved, generator CPU {best.generator_cpu_pct:.0f}%), "
          f"p99 {best.p99_us / 1000:.3f} ms at that rate")


if __name__ == "__main__":
    main()
