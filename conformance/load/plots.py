"""PNG plots of load results: the latency histogram, and latency over time with events marked.

matplotlib is imported inside the functions (never when ``conformance`` is imported) and used through its
object API with the Agg canvas, so no GUI backend and no global pyplot state are involved.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from conformance.load.result import LoadResult

__all__ = ["plot_histogram", "plot_timeline"]

COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b")


def _figure(width: float = 9.0, height: float = 4.8) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def plot_histogram(results: Sequence[LoadResult], path: Path, title: str = "Latency distribution") -> Path:
    """Latency histogram (log-spaced buckets, ms) of each result, with its p50 and p99 marked."""
    import numpy as np

    figure = _figure()
    axes = figure.add_subplot()
    lowest = max(1, min((r.min_us for r in results if r.requests), default=1))
    highest = max((r.max_us for r in results if r.requests), default=1000)
    bins = np.geomspace(lowest / 1000 * 0.95, highest / 1000 * 1.05, 80)
    for colour, result in zip(COLOURS, results, strict=False):
        if not result.requests:
            continue
        values, counts = [], []
        for item in result.decoded_histogram().get_recorded_iterator():
            values.append(item.value_iterated_to / 1000)
            counts.append(item.count_at_value_iterated_to)
        axes.hist(values, bins=bins, weights=counts, histtype="step", linewidth=1.6, color=colour,
                  label=f"{result.label} ({result.requests} requests)")
        for name, style in (("p50", "--"), ("p99", ":")):
            value = result.percentile_ms(name)
            axes.axvline(value, color=colour, linestyle=style, linewidth=1)
            axes.annotate(f"{name} {value:.3f} ms", (value, 1), xycoords=("data", "axes fraction"),
                          rotation=90, va="top", ha="right", fontsize=8, color=colour)
    axes.set_xscale("log")
    axes.set_xlabel("latency (ms, log scale)")
    axes.set_ylabel("requests")
    axes.set_title(title)
    axes.legend(loc="upper right", fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


def plot_timeline(results: Sequence[LoadResult], path: Path, title: str = "Latency over time") -> Path:
    """Per-second p50 and p99 (ms) of each result, errors per second as bars, and every event marked."""
    figure = _figure()
    axes = figure.add_subplot()
    errors_axes = None
    for colour, result in zip(COLOURS, results, strict=False):
        seconds = [s.at_s + 0.5 for s in result.timeline if s.requests]
        axes.plot(seconds, [s.p99_us / 1000 for s in result.timeline if s.requests], color=colour,
                  marker="o", markersize=3, label=f"{result.label} p99")
        axes.plot(seconds, [s.p50_us / 1000 for s in result.timeline if s.requests], color=colour,
                  linestyle="--", linewidth=1, label=f"{result.label} p50")
        if any(s.errors for s in result.timeline):
            errors_axes = errors_axes or axes.twinx()
            errors_axes.bar([s.at_s + 0.5 for s in result.timeline], [s.errors for s in result.timeline],
                            width=0.8, alpha=0.3, color="#d62728", label=f"{result.label} errors/s")
            errors_axes.set_ylabel("errors per second", color="#d62728")
    for result in results:
        for event in result.events:
            axes.axvline(event.at_s, color="#d62728", linestyle="-.", linewidth=1.2)
            axes.annotate(f"{event.label} at t={event.at_s:g}s", (event.at_s, 0.98), xycoords=("data", "axes fraction"),
                          rotation=90, va="top", ha="right", fontsize=8, color="#d62728")
    axes.set_xlabel("time in the measured window (s)")
    axes.set_ylabel("latency (ms)")
    axes.set_ylim(bottom=0)
    axes.set_title(title)
    axes.legend(loc="upper left", fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path
