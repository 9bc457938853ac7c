"""The fault table of docs/faults.md, measured: run `tests/test_faults_under_load.py` with its rows
written to a folder, then render them as Markdown.

    python -m bench.faults_table --run                  # run the fault tests, print the table
    python -m bench.faults_table --rows FOLDER          # only render rows already written there

The tests write their rows only where $MINIREC_FAULT_ROWS points (this command sets it to `--rows`);
a plain `make test` keeps them in a temporary folder, so a test run never changes the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.harness import ROOT

ORDER = ["redis_external", "redis_embedded", "bundle_swap", "worker_killed", "eventlog_unwritable"]
DEFAULT_ROWS = Path("bench-work/faults")


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
    """The Markdown table of the rows (`<name>.json`) in `folder`."""
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


def run_fault_tests(rows: Path, pytest_args: Sequence[str] = ()) -> int:
    """Run the fault tests with their rows written to `rows` (emptied first); pytest's exit status."""
    rows.mkdir(parents=True, exist_ok=True)
    for stale in rows.glob("*.json"):
        stale.unlink()
    env = {**os.environ, "MINIREC_FAULT_ROWS": str(rows.resolve())}
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    return subprocess.call([sys.executable, "-m", "pytest", "-q", "tests/test_faults_under_load.py", *pytest_args],
                           cwd=ROOT, env=env)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path, help=argparse.SUPPRESS)  # the old positional form
    parser.add_argument("--rows", type=Path, default=None,
                        help=f"folder of the rows (<name>.json); default {DEFAULT_ROWS}")
    parser.add_argument("--run", action="store_true", help="run the fault tests first (a few minutes)")
    args, pytest_args = parser.parse_known_args(argv)
    rows = args.rows or args.folder or DEFAULT_ROWS
    if args.run:
        status = run_fault_tests(rows, pytest_args)
        if status != 0:
            print(f"the fault tests failed (pytest exit {status}); rows so far in {rows}", file=sys.stderr)
            return status
    elif pytest_args:
        parser.error(f"unrecognized arguments: {' '.join(pytest_args)}")
    if not rows.is_dir() or not any(rows.glob("*.json")):
        print(f"no rows in {rows}: run `python -m bench.faults_table --run`", file=sys.stderr)
        return 2
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
