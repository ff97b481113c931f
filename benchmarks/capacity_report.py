"""Tables and the plot of the trigger capacity benchmark, from its results JSON (no measuring here).

.venv/bin/python -m benchmarks.capacity_report benchmarks/results/capacity-YYYY-MM-DD.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

# (column title, how to read the figure from a point) for the side-by-side table.
METRICS: list[tuple[str, Any]] = [
    ("lag p99 ms", lambda p: p["lag_ms"]["p99"]),
    ("CPU s/min", lambda p: p["cpu_s_per_min"]),
    ("steady CPU s/min", lambda p: p["steady_cpu_s_per_min"]),
    ("peak RSS MiB", lambda p: p["rss_peak_mib"]),
    ("RSS growth MiB", lambda p: round(p["rss_peak_mib"] - p["rss_baseline_mib"], 1)),
    ("detection p95 s", lambda p: p["detection_s"]["p95"]),
]


def _point(points: list[dict[str, Any]], impl: str, mode: str, count: int) -> dict[str, Any] | None:
    for point in points:
        if point.get("impl") == impl and point.get("logs_mode") == mode and point.get("count") == count:
            return point
    return None


def _value(point: dict[str, Any] | None, read: Any) -> str:
    if point is None or "error" in point:
        return "not measured"
    value = read(point)
    if value is None:
        return "n/a"
    # Detection over the events that came before the cap; a capped point says how many did not.
    missing = point["count"] - point["detected"]
    return f"{value:g}" + (f" ({missing} missed)" if missing and read is METRICS[-1][1] else "")


def _ratio(ours: dict[str, Any] | None, astro: dict[str, Any] | None, read: Any) -> str:
    if not ours or not astro or "error" in ours or "error" in astro:
        return ""
    a, b = read(astro), read(ours)
    if a is None or b is None or b == 0:
        return ""
    return f" ({a / b:.1f}x)"


def markdown_table(results: dict[str, Any]) -> str:
    """One row per (N, job logs); each cell ``ours / astro (astro/ours)``."""
    points = results["points"]
    modes = sorted({p["logs_mode"] for p in points if "logs_mode" in p}, key=lambda m: m != "streaming")
    header = ["N", "job logs", *(title for title, _ in METRICS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for mode in modes:
        for count in sorted({p["count"] for p in points if p.get("logs_mode") == mode}):
            ours, astro = _point(points, "flyray", mode, count), _point(points, "astro", mode, count)
            row = [str(count), mode]
            row += [f"{_value(ours, r)} / {_value(astro, r)}{_ratio(ours, astro, r)}" for _, r in METRICS]
            lines.append("| " + " | ".join(row) + " |")
    lines.append("\nEach cell: ours / astro-provider-ray 0.4.0 (astro/ours).")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (lag_ax, cpu_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    labels = {"flyray": "airflow-provider-flyray", "astro": "astro-provider-ray 0.4.0"}
    for impl, style in (("flyray", "o-"), ("astro", "s--")):
        points = sorted(
            (p for p in results["points"] if p.get("impl") == impl and p.get("logs_mode") == "streaming"),
            key=lambda p: p["count"],
        )
        points = [p for p in points if "error" not in p]
        counts = [p["count"] for p in points]
        lag_ax.plot(counts, [p["lag_ms"]["p99"] for p in points], style, label=labels[impl])
        cpu_ax.plot(counts, [p["cpu_s_per_min"] for p in points], style, label=labels[impl])
    settings = results["settings"]
    for ax, title in ((lag_ax, "event-loop lag p99 (ms)"), (cpu_ax, "CPU seconds per minute of waiting")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("concurrent triggers (N)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    lag_ax.axhline(50, color="grey", lw=0.8, ls=":")
    cpu_ax.axhline(6, color="grey", lw=0.8, ls=":")
    fig.suptitle(
        f"RayJobTrigger capacity, one event loop, poll {settings['poll_interval']:g}s, "
        f"logs every {settings['log_every']:g}s, {results['machine']['cpu_count']} CPUs ({results['date']})"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--plot", type=Path, help="also write the PNG here")
    args = parser.parse_args()
    results = json.loads(args.results.read_text())
    print(markdown_table(results))
    if args.plot:
        plot(results, args.plot)


if __name__ == "__main__":
    main()
