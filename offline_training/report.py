"""The evaluation report of a bundle: Markdown with a table per protocol, and a bar chart."""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402

METRIC_ORDER = ("ndcg", "precision", "recall", "map", "hr")


def metric_keys(report: dict[str, Any]) -> list[str]:
    k = report["k"]
    return [f"{m}@{k}" for m in METRIC_ORDER] + ["coverage"]


def table(report: dict[str, Any]) -> str:
    """A fixed-width table: metric, model, baseline, lift."""
    rows = [f"{'metric':<14}{'model':>10}{'baseline':>10}{'lift':>9}"]
    for key in metric_keys(report):
        model, base = report["model"][key], report["popularity"][key]
        lift = f"{(model / base - 1) * 100:+.1f}%" if base > 0 else "n/a"
        rows.append(f"{key:<14}{model:>10.4f}{base:>10.4f}{lift:>9}")
    return "\n".join(rows)


def markdown(reports: list[dict[str, Any]], title: str) -> str:
    parts = [f"# {title}\n", "![metrics](report.png)\n"]
    for report in reports:
        if "skipped" in report:
            parts.append(f"## {report['protocol']}\n\nskipped: {report['skipped']}\n")
            continue
        parts.append(
            f"## {report['protocol']} (k={report['k']}, seed {report['seed']}, {report['n_users']} users)\n\n"
            f"model: {report['model_name']}; baseline: {report['baseline_name']}\n\n"
            "| metric | model | baseline | lift |\n|---|---|---|---|"
        )
        for key in metric_keys(report):
            model, base = report["model"][key], report["popularity"][key]
            lift = f"{(model / base - 1) * 100:+.1f}%" if base > 0 else "n/a"
            parts.append(f"| {key} | {model:.4f} | {base:.4f} | {lift} |")
        parts.append("")
    return "\n".join(parts)


def bar_chart(reports: list[dict[str, Any]]) -> bytes:
    """PNG: per protocol, model vs baseline on each metric."""
    done = [r for r in reports if "skipped" not in r]
    fig, axes = plt.subplots(1, max(len(done), 1), figsize=(5 * max(len(done), 1), 3.5), squeeze=False)
    for ax, report in zip(axes[0], done):
        keys = metric_keys(report)
        xs = range(len(keys))
        ax.bar([x - 0.2 for x in xs], [report["model"][k] for k in keys], width=0.4, label=report["model_name"][:28])
        ax.bar([x + 0.2 for x in xs], [report["popularity"][k] for k in keys], width=0.4, label=report["baseline_name"])
        ax.set_xticks(list(xs), [k.split("@")[0] for k in keys], fontsize=8)
        ax.set_title(report["protocol"])
        ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()
