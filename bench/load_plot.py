"""The latency-over-time plot of a `make load` run (bench/load_run.py writes its inputs).

`plot(out, summary)` reads `out/timeline.csv` and `out/memory.csv` and writes `out/latency.png`:
p50 and p99 per second (with the recovery limit of the spike profile), requests/s and failures,
and the server processes' RSS, each with the phases shaded and named.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: files only
import matplotlib.pyplot as plt  # noqa: E402

PHASE_COLORS = ["#f2f2f2", "#dde8f5", "#fbe3c8", "#f6c9c9", "#d9f0d3", "#ece2f4", "#fff5c2", "#e0e0e0"]


def _read(path: Path) -> list[dict[str, float | None]]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return [{k: (float(v) if v not in ("", "None") else None) for k, v in row.items()}
                for row in csv.DictReader(fh)]


def _shade(ax: Any, phases: dict[str, Any], label: bool) -> None:
    for i, (name, p) in enumerate(phases.items()):
        ax.axvspan(p["start_s"], p["end_s"], color=PHASE_COLORS[i % len(PHASE_COLORS)], zorder=0)
        if label:
            ax.text((p["start_s"] + p["end_s"]) / 2, 1.0, name, transform=ax.get_xaxis_transform(),
                    ha="center", va="bottom", fontsize=8)


def plot(out: Path, summary: dict[str, Any]) -> Path:
    """Write out/latency.png; returns its path."""
    rows, memory = _read(out / "timeline.csv"), _read(out / "memory.csv")
    phases = summary["phases"]
    fig, (lat, load, mem) = plt.subplots(3, 1, figsize=(11, 8), sharex=True,
                                         gridspec_kw={"height_ratios": [3, 2, 1.4]})
    t = [r["t"] for r in rows]
    lat.plot(t, [r["p99_ms"] for r in rows], color="#c0392b", lw=1.2, label="p99")
    lat.plot(t, [r["p50_ms"] for r in rows], color="#2c3e50", lw=1.2, label="p50")
    ref = phases.get(summary.get("reference_phase") or "", {}).get("p99_ms")
    if ref:
        lat.axhline(ref, color="#7f8c8d", ls=":", lw=1, label=f"{summary['reference_phase']} p99 {ref:.1f} ms")
        if summary["profile"] == "spike":
            lat.axhline(1.5 * ref, color="#27ae60", ls="--", lw=1, label="recovery limit (1.5× steady p99)")
    lat.set_yscale("log")
    lat.set_ylabel("latency per second (ms)")
    title = (f"{summary['profile']}: {summary['requests']} requests, {summary['failures']} failed, "
             f"p99 {summary['p99_ms']} ms")
    if summary.get("recovery_s") is not None:
        title += f", recovery {summary['recovery_s']:.0f} s"
    lat.set_title(title, pad=16)
    lat.legend(loc="upper left", fontsize=8)
    load.plot(t, [r["requests"] for r in rows], color="#2980b9", lw=1.2, label="requests/s (sent)")
    base = summary.get("setup", {}).get("base_rps")
    if base and summary.get("stages"):  # what the shape asked for: base × the plan's multiplier
        xs = [x for s in summary["stages"] for x in (s["start_s"], s["end_s"])]
        ys = [base * m for s in summary["stages"] for m in (s["multiplier_from"], s["multiplier_to"])]
        load.plot(xs, ys, color="#7f8c8d", ls="--", lw=1, label="target (base × shape)")
    failures = [r["failures"] for r in rows]
    if any(failures):
        load.bar(t, failures, color="#e74c3c", width=1.0, label="failures/s")
    load.set_ylabel("requests/s")
    load.legend(loc="upper left", fontsize=8)
    if memory:
        mt = [m["t"] for m in memory]
        mem.plot(mt, [m["server_rss_mb"] for m in memory], color="#8e44ad", lw=1.2, label="server RSS")
        mem.legend(loc="upper left", fontsize=8)
        redis = mem.twinx()  # its own scale: a few MB next to the workers' hundreds
        redis.plot(mt, [m["redis_rss_mb"] for m in memory], color="#16a085", lw=1.0, label="redis RSS")
        redis.set_ylabel("redis MB")
        redis.legend(loc="upper right", fontsize=8)
    mem.set_ylabel("server MB")
    mem.set_xlabel("seconds since the start of the run (by send time)")
    for i, ax in enumerate((lat, load, mem)):
        _shade(ax, phases, label=i == 0)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    target = out / "latency.png"
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return target
