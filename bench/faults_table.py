"""Render the rows that `tests/test_faults_under_load.py` writes to `artifacts/faults/*.json` as the
Markdown table of docs/faults.md: `python -m bench.faults_table [FOLDER]`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ORDER = ["redis_external", "redis_embedded", "bundle_swap", "worker_killed", "eventlog_unwritable"]


def _recovery(row: dict) -> str:
    if row.get("restarted_by_server"):
        return f"full answers {row['recovery_s']} s after the kill (the server restarted it)"
    for key, label in (("recovery_s", "full answers {v} s after Redis is back"),
                       ("swap_s", "new version served {v} s after publishing"),
                       ("replaced_s", "worker replaced in {v} s")):
        if key in row:
            return label.format(v=row[key])
    return "events accepted again at once"


def table(folder: Path) -> str:
    rows = {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}
    lines = ["| fault | requests sent / failed | degraded answers | events acknowledged / lost | recovery | "
             "reproduce |", "|---|---:|---:|---:|---|---|"]
    for name in sorted(rows, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER)):
        row = rows[name]
        lost = row.get("events_lost", 0)
        extra = ""
        if "events_acknowledged_while_down" in row:
            extra = f" ({row['events_acknowledged_while_down']} while Redis was down)"
        if row.get("events_refused"):
            extra += f"; {row['events_refused']} refused with 503, none written"
        if "corrupt_served" in row:
            extra += f"; corrupt bundle served {row['corrupt_served']} times"
        failed = row["failed"]
        if row.get("failed_in_flight"):
            failed = f"{failed} (held by the killed worker)"
        lines.append(f"| {row['fault']} | {row['requests']:,} / {failed} | {row['degraded']:,} | "
                     f"{row['events_acknowledged']:,} / {lost}{extra} | {_recovery(row)} | `{row['command']}` |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(Path(sys.argv[1] if len(sys.argv) > 1 else "artifacts/faults")))
