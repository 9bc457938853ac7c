"""The evaluation report of a bundle: Markdown (tuning trials, winner, test tables, publish gate) and a
PNG with the search's validation score over trials beside each protocol's model-vs-baseline bars."""

from __future__ import annotations

import io
import json
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402

METRIC_ORDER = ("ndcg", "precision", "recall", "map", "hr")


def metric_keys(report: dict[str, Any]) -> list[str]:
    k = report["k"]
    return [f"{m}@{k}" for m in METRIC_ORDER] + ["coverage"]


def _lift(model: float, base: float) -> str:
    return f"{(model / base - 1) * 100:+.1f}%" if base > 0 else "n/a"


def table(report: dict[str, Any]) -> str:
    """A fixed-width table: metric, model, baseline, lift."""
    rows = [f"{'metric':<14}{'model':>10}{'baseline':>10}{'lift':>9}"]
    for key in metric_keys(report):
        model, base = report["model"][key], report["popularity"][key]
        rows.append(f"{key:<14}{model:>10.4f}{base:>10.4f}{_lift(model, base):>9}")
    return "\n".join(rows)


def groups_table(report: dict[str, Any]) -> str:
    """The temporal protocol's groups: NDCG@k and recall@k of the model and every baseline, per group."""
    k = report["k"]
    lines = []
    for name, group in report.get("groups", {}).items():
        lines += ["", f"{name} ({group['n_users']} users)", f"{'':<52}{'NDCG@' + str(k):>10}{'recall@' + str(k):>11}"]
        rows = [("minirec", group["model"]), *group["baselines"].items()]
        lines += [f"{label[:52]:<52}{m[f'ndcg@{k}']:>10.4f}{m[f'recall@{k}']:>11.4f}" for label, m in rows]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (list, dict)) else str(value)


def tuning_markdown(tuning: dict[str, Any] | None) -> list[str]:
    """The search: every trial with its settings, validation score and time; the winner; what was skipped."""
    if not tuning or not (tuning.get("known") or tuning.get("cold") or tuning.get("skipped")):
        return ["## Tuning\n", "not run (--no-tune or `tuning.enabled = false`): the config was trained as written\n"]
    parts = ["## Tuning\n"]
    if tuning.get("protocol"):
        parts.append(f"Validation: {'on time (train before a cut, judged on what users did after it)' if tuning['protocol'] == 'temporal' else tuning['protocol'] + ' held-out pairs'}.\n")
    for reason in tuning.get("skipped", []):
        parts.append(f"- skipped: {reason}")
    known = tuning.get("known")
    if known:
        k = known["k"]
        parts += ["", f"Known-user model: {len(known['trials'])} trials in {known['seconds']} s (budget "
                      f"{known['budget_seconds']} s) on {known['n_users']} validation users. **Winner: "
                      f"{known['family']}** with validation NDCG@{k} {known['value']:.4f}; popularity "
                      f"{known['popularity']:.4f}. Popularity half-life: "
                      f"{known['popularity_half_life_days']} days.", ""]
        if known.get("note"):
            parts += [known["note"], ""]
        if known["params"]:
            parts.append("Settings: " + ", ".join(f"`{p}` = {_fmt(v)}" for p, v in known["params"].items()) + "\n")
        if known.get("finalists"):
            parts += ["Finals: each family's best refitted on a second validation split (the winner has the best "
                      "mean; the first split flatters what was chosen on it):", "",
                      f"| family | trial | NDCG@{k} search split | NDCG@{k} second split | seconds |",
                      "|---|---|---|---|---|"]
            parts += [f"| {f['family']} | {f['trial']} | {f['search']:.4f} | {f['final']:.4f} | {f['seconds']} |"
                      for f in known["finalists"]]
            if known.get("gain") is not None:
                parts.append(f"\nWinner vs popularity on the second split: per-user NDCG gain {known['gain']:+.4f} "
                             f"± {known['stderr']:.4f} (standard error).")
            parts.append("")
        parts += [f"| trial | model | settings | NDCG@{k} | seconds | state |", "|---|---|---|---|---|---|"]
        for t in known["trials"]:
            settings = ", ".join(f"{p.split('.', 1)[1]}={_fmt(v)}" for p, v in t["params"].items())
            value = "" if t["value"] is None else f"{t['value']:.4f}"
            parts.append(f"| {t['number']} | {t['family']} | {settings} | {value} | {t['seconds']} | {t['state']} |")
        parts.append("")
    cold = tuning.get("cold")
    parts += repeat_markdown(tuning.get("repeat"))
    if cold:
        k = cold["k"]
        parts += [f"First visits: {len(cold['trials'])} trials in {cold['seconds']} s on {cold['n_users']} held-out "
                  f"users ({cold.get('folds', 1)} folds); best NDCG@{k} {cold['value']:.4f} "
                  f"(popularity {cold['popularity']:.4f}) with "
                  + ", ".join(f"`{p}` = {_fmt(v)}" for p, v in cold["settings"].items()) + "\n"]
    return parts


def repeat_markdown(repeat: dict[str, Any] | None) -> list[str]:
    """Repeat purchases as tuned on the split in time: how much the app rebuys, what was chosen, and the
    home feed beside "buy again" and best sellers on the finals half."""
    if not repeat:
        return []
    stats, chosen = repeat["stats"], repeat["settings"]
    parts = [f"Repeat purchases: {stats['repeat_rate']:.1%} of {stats['purchase_pairs']} purchased (user, item) pairs "
             f"were bought again on a later day (median gap {stats['median_gap_days']:g} days, "
             f"{stats['items_with_repeats']} items). Chosen: recency half-life {chosen['half_life_days']:g} days, "
             f"cycle weight {chosen['cycle_weight']:g}, home-feed mix {chosen['mix_weight']:g}. "
             f"On {repeat['n_users']} validation users, everything bought after the cut: home feed "
             f"{repeat['home']:.4f}, without the mix {repeat['model_alone']:.4f}, buy again {repeat['buy_again']:.4f}, "
             f"best sellers {repeat['best_sellers']:.4f}."]
    if repeat.get("note"):
        parts.append(repeat["note"])
    return parts + [""]


def groups_markdown(report: dict[str, Any]) -> list[str]:
    """The temporal protocol's groups, each with the baselines of the same run."""
    k = report["k"]
    parts = []
    for name, group in report.get("groups", {}).items():
        parts += [f"**{name}** ({group['n_users']} users)", "", f"| ranking | NDCG@{k} | recall@{k} |", "|---|---|---|"]
        for label, m in [("minirec", group["model"]), *group["baselines"].items()]:
            parts.append(f"| {label} | {m[f'ndcg@{k}']:.4f} | {m[f'recall@{k}']:.4f} |")
        parts.append("")
    return parts


def gate_markdown(gate: dict[str, Any] | None) -> list[str]:
    if not gate:
        return []
    verdict = "passed" if gate["passed"] else "**failed**"
    parts = ["## Publish gate\n", f"{verdict} on {gate['n_users']} validation users: new "
             f"{_fmt(gate['new'])}, popularity {_fmt(gate['popularity'])}"
             + (f", published {gate['published_version']} {_fmt(gate['published'])}"
                if gate["published_version"] else "")
             + "\n"]
    parts += [f"- {r}" for r in gate["reasons"]]
    return parts + [""]


def protocol_markdown(report: dict[str, Any]) -> list[str]:
    if "skipped" in report:
        return [f"## {report['protocol']}\n", f"skipped: {report['skipped']}\n"]
    parts = [f"## {report['protocol']} (k={report['k']}, seed {report['seed']}, {report['n_users']} users)\n",
             f"model: {report['model_name']}; baseline: {report['baseline_name']}\n",
             "| metric | model | baseline | lift |", "|---|---|---|---|"]
    for key in metric_keys(report):
        model, base = report["model"][key], report["popularity"][key]
        parts.append(f"| {key} | {model:.4f} | {base:.4f} | {_lift(model, base)} |")
    return parts + [""] + groups_markdown(report)


def markdown(full: dict[str, Any], title: str) -> str:
    """The bundle's report.md: tuning, each protocol's test table, the gate."""
    parts = [f"# {title}\n", "![report](report.png)\n"]
    parts += tuning_markdown(full.get("tuning"))
    for report in full.get("protocols", []):
        parts += protocol_markdown(report)
    parts += gate_markdown(full.get("gate"))
    return "\n".join(parts)


def chart(full: dict[str, Any]) -> bytes:
    """PNG: the search (validation NDCG per trial, by family, with the running best and popularity),
    then per protocol the model vs the baseline on each metric."""
    known = (full.get("tuning") or {}).get("known")
    done = [r for r in full.get("protocols", []) if "skipped" not in r]
    panels = (1 if known else 0) + len(done)
    fig, axes = plt.subplots(1, max(panels, 1), figsize=(5 * max(panels, 1), 3.5), squeeze=False)
    axes = list(axes[0])
    if known:
        ax = axes.pop(0)
        finished = [t for t in known["trials"] if t["value"] is not None and t.get("state") != "proxy"]
        for family in sorted({t["family"] for t in finished}):
            mine = [t for t in finished if t["family"] == family]
            ax.scatter([t["number"] for t in mine], [t["value"] for t in mine], s=12, label=family)
        if finished:
            best, xs, ys = float("-inf"), [], []
            for t in sorted(finished, key=lambda t: t["number"]):
                best = max(best, t["value"])
                xs.append(t["number"])
                ys.append(best)
            ax.step(xs, ys, where="post", color="black", linewidth=1, label="best so far")
        ax.axhline(known["popularity"], color="grey", linestyle="--", linewidth=1, label="popularity")
        ax.set_xlabel("trial")
        ax.set_ylabel(f"validation NDCG@{known['k']}")
        ax.set_title("tuning")
        ax.legend(fontsize=7)
    for ax, report in zip(axes, done):
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
