"""Merge an app's logged events into its data folder, each event once: `minirec train-all --from-events`.

The rows are made by `offline_training.export.export_events` (the rules of `minirec data export-events`:
a repeated event_id is kept once, malformed events and events of items missing from the folder's items
are counted and left out). What this module adds is *which* events are new: a ledger beside the data
folder (`<data>.events-merged.json`) remembers what was merged.

The ledger holds a watermark on the time the server received each event (`received`, or `ts` for an
event without it) and the event_ids received since the watermark. An event is new when its id is not in
the ledger and it was received at or after the watermark. The watermark trails the newest merged event
by `SLACK_SECONDS`, so a batch that reached the log a little out of order (worker processes and
replicas stamp `received` on their own clocks, and a batch may still be in flight while we read) is
merged by the next run instead of being lost, while the ledger stays the size of that window.

Crash safety: the ledger to be is written as `<ledger>.pending` with the folder's fingerprint before
the merge; the folder is then replaced atomically (FolderWriter), and the pending ledger renamed over
the ledger. A run that finds a pending ledger commits it if the folder has changed since (the merge
happened) and drops it otherwise, so a crash in between neither loses nor doubles events.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from features.eventlog import iter_events
from features.eventstream import STREAM, is_stream_url, iter_stream_events
from offline_training.datafolder import data_fingerprint, find_table_file
from offline_training.export import export_events
from recsys.schema import INTERACTIONS, ITEMS, MERCHANT_PROFILES, PLATFORM_PROFILES, QUERIES

#: How far the watermark trails the newest merged event (seconds of `received`).
SLACK_SECONDS = 900.0
LEDGER_FORMAT = 1


@dataclass
class MergeResult:
    """What one merge did: events new to the folder, rows added, rows left out and why."""

    new_events: int = 0
    interactions: int = 0
    queries: int = 0
    duplicates: int = 0
    malformed: int = 0
    unknown_items: int = 0

    def summary(self) -> str:
        if not self.new_events:
            return "no new events"
        left = [f"{n} {what}" for n, what in ((self.duplicates, "repeated ids"), (self.malformed, "malformed"),
                                              (self.unknown_items, "of unknown items")) if n]
        return f"+{self.interactions} interactions, +{self.queries} queries" + \
            (f" ({', '.join(left)} left out)" if left else "")


def ledger_path(data_dir: str | os.PathLike) -> Path:
    """Where the merge ledger of a data folder lives: beside it, so replacing the folder keeps it."""
    data = Path(data_dir)
    return data.with_name(f"{data.name}.events-merged.json")


def folder_fingerprint(data_dir: str | os.PathLike, platform_dir: str | os.PathLike | None = None) -> str:
    """`AppData.fingerprint` of a data folder without reading or validating its tables: the sha256 of
    the same files in the same order as `load_data_folder` (tests/test_train_all.py checks they agree)."""
    root = Path(data_dir)
    plat = Path(platform_dir) if platform_dir is not None else root
    files = [find_table_file(root, t.name) for t in (ITEMS, INTERACTIONS, MERCHANT_PROFILES, QUERIES)]
    files.append(find_table_file(plat, PLATFORM_PROFILES.name))
    return data_fingerprint([f for f in files if f is not None])


def _received(event: dict[str, Any]) -> float | None:
    for key in ("received", "ts"):
        value = event.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable merge ledger ({exc}); fix or remove it (removing it merges the "
                         f"whole event log again)") from exc


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("w", encoding="utf-8") as fh:
        json.dump(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _load_ledger(data_dir: Path, platform_dir: str | os.PathLike | None) -> dict[str, Any]:
    """The ledger, after settling a pending one a crashed run left (see the module docstring)."""
    path = ledger_path(data_dir)
    pending_path = path.with_name(path.name + ".pending")
    pending = _read_json(pending_path)
    if pending is not None:
        if folder_fingerprint(data_dir, platform_dir) != pending.get("previous_fingerprint"):
            os.replace(pending_path, path)  # the folder was replaced: that merge happened
        else:
            pending_path.unlink()
    return _read_json(path) or {"format": LEDGER_FORMAT, "watermark": None, "ids": {}}


def _read_log(source: str, app: str, stream: str, since: float | None) -> Iterator[dict[str, Any]]:
    if is_stream_url(source):
        return iter_stream_events(source, app, stream)
    # the local log has one file per day of receipt: files older than the watermark are not read
    return iter_events(source, app, since)


def merge_new_events(source: str | os.PathLike, app: str, data_dir: str | os.PathLike, *,
                     platform_dir: str | os.PathLike | None = None, stream: str = STREAM) -> MergeResult:
    """Append `app`'s events logged at `source` (the server's event log folder, or a `nats://` URL of
    its JetStream server) that are not yet in `data_dir` to its interactions and queries.

    Leaves the folder untouched when there is nothing new. Raises `DataError` if the folder is not a
    valid data folder (nothing is merged then)."""
    data = Path(data_dir)
    ledger = _load_ledger(data, platform_dir)
    watermark: float | None = ledger.get("watermark")
    seen: dict[str, float | None] = dict(ledger.get("ids") or {})
    fresh: list[dict[str, Any]] = []
    for event in _read_log(str(source), app, stream, watermark):
        event_id, received = event.get("event_id"), _received(event)
        if isinstance(event_id, str) and event_id in seen:
            continue
        if watermark is not None and received is not None and received < watermark:
            continue
        fresh.append(event)
        if isinstance(event_id, str):
            seen[event_id] = received
    if not fresh:
        return MergeResult()
    times = [t for t in (_received(e) for e in fresh) if t is not None]
    new_watermark = watermark
    if times:  # never moves back
        new_watermark = max(times) - SLACK_SECONDS if watermark is None else max(watermark, max(times) - SLACK_SECONDS)
    keep = {i: t for i, t in seen.items() if new_watermark is None or t is None or t >= new_watermark}
    path = ledger_path(data)
    pending_path = path.with_name(path.name + ".pending")
    _write_json(pending_path, {"format": LEDGER_FORMAT, "source": str(source), "watermark": new_watermark,
                               "ids": keep, "previous_fingerprint": folder_fingerprint(data, platform_dir)})
    try:
        exported = export_events(source, app, data, base=data, platform_dir=platform_dir, overwrite=True,
                                 events=fresh)
    except BaseException:
        pending_path.unlink(missing_ok=True)
        raise
    os.replace(pending_path, path)
    return MergeResult(len(fresh), exported.interactions, exported.queries, exported.duplicates,
                       exported.malformed, exported.unknown_items)
