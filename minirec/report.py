"""`minirec report`: the analytics document of one app from its event log, as tables or JSON."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's options."""
    parser.add_argument("--app", required=True, help="the app id")
    parser.add_argument("--config", default="minirec.toml",
                        help="the server's minirec.toml: where its event log is (state_dir) and the app's "
                             "experiments (default ./minirec.toml)")
    parser.add_argument("--log", help="the event log folder, or the nats:// URL of the event stream, instead of "
                                      "the config's (experiments still come from --config if it exists)")
    parser.add_argument("--from", dest="start", help="start: Unix seconds or ISO date (default: 7 days before --to)")
    parser.add_argument("--to", dest="end", help="end, exclusive: Unix seconds or ISO date (default: now)")
    parser.add_argument("--window-hours", type=float, default=24.0,
                        help="last-touch credit window for outcomes sent without a request_id (default 24)")
    parser.add_argument("--json", help="also write the whole document to this file ('-' prints it instead)")


def _fmt(metric: dict | None, percent: bool = False) -> str:
    if metric is None:
        return "—"
    lo, hi = metric["ci95"]
    if percent:
        return f"{metric['value']:+.1%} [{lo:+.1%}, {hi:+.1%}]"
    return f"{metric['value']:.4g} [{lo:.4g}, {hi:.4g}]"


def render(doc: dict[str, Any]) -> str:
    """The document as plain-text tables (experiments first)."""
    lines = [f"app {doc['app']}: {doc['events']['total']} events "
             + ", ".join(f"{k} {v}" for k, v in doc["events"]["by_type"].items())]
    names = ("ctr", "exposure_per_user", "conversion", "gmv_per_user", "search_pv_per_user")
    for exp in doc["experiments"]:
        lines += ["", f"experiment {exp['name']} (scene {exp['scene']}, control {exp['control']})"]
        for variant, cell in exp["variants"].items():
            lines.append(f"  {variant:<16} users {cell['users']:>6}  " + "  ".join(
                f"{m} {_fmt(cell[m])}" for m in names))
            for metric, found in (cell.get("lift") or {}).items():
                mark = " *" if found and found["significant"] else ""
                lines.append(f"  {'':<16} lift {metric:<20} {_fmt(found, percent=True)}{mark}")
    if not doc["experiments"]:
        lines += ["", "no experiments configured for this app"]
    lines += ["", "scene × variant"]
    for cell in doc["scenes"]:
        label = cell["scene"] + (f" {cell['experiment']}/{cell['variant']}" if cell["experiment"] else "")
        lines.append(f"  {label:<36} users {cell['users']:>6} impressions {cell['impressions']:>7} "
                     f"ctr {_fmt(cell['ctr'])}  gmv/user {_fmt(cell['gmv_per_user'])}")
    search = doc["search"]
    lines += ["", "search by source"] + [
        f"  {source:<10} searches {row['searches']:>6}  ctr {_fmt(row['ctr'])}"
        for source, row in search["by_source"].items()]
    for key in ("zero_result_queries", "fallback_queries"):
        if search[key]:
            lines.append(f"{key.replace('_', ' ')}: " + ", ".join(f"{q['query']} ({q['count']})" for q in search[key]))
    if doc.get("campaigns"):
        lines += ["", "campaigns (platform placements of lookalike audiences)"] + [
            f"  {c['campaign']}  impressions {c['impressions']:>6}  clicks {c['clicks']:>5}  users {c['users']:>5}  "
            f"buyers {c['buyers']:>4}  purchases {c['purchases']:>4}  gmv {c['gmv']:.2f}" for c in doc["campaigns"]]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Build the report; exit 2 with a message when the config or log cannot be read."""
    from analytics.report import build_report, parse_time
    from serving.server_config import load_server_config

    config_path = Path(args.config)
    experiments: dict = {}
    log_dir: str | Path | None = args.log if args.log and "://" in args.log else Path(args.log) if args.log else None
    stream = "MINIREC_EVENTS"
    if config_path.exists() or log_dir is None:
        config = load_server_config(config_path)
        if args.app not in config.apps:
            raise ValueError(f"app {args.app!r} is not in {config_path} (apps: {', '.join(config.apps)})")
        experiments = config.apps[args.app].experiments
        log_dir = log_dir or config.event_stream or config.state_dir / "events"
        stream = config.event_stream_name
    doc = build_report(log_dir, args.app, parse_time(args.start, "--from"), parse_time(args.end, "--to"),
                       experiments, args.window_hours, stream)
    if args.json == "-":
        print(json.dumps(doc, ensure_ascii=False, indent=2))
        return 0
    print(render(doc))
    if args.json:
        Path(args.json).write_text(json.dumps(doc, ensure_ascii=False, indent=2), encoding="utf-8")
        print(f"\nwrote {args.json}", file=sys.stderr)
    return 0
