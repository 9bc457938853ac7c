"""Export of the durable event log (features/eventlog.py) into a data folder, the contract training
reads: the feedback loop from served traffic to the next training.

It lives beside the data folder code it writes with (offline_training/datafolder.py): training sits
above the feature store in minirec's layers, so it may read the log; the log never imports training.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from features.eventlog import ReadStats, iter_events
from offline_training.datafolder import FolderWriter, find_table_file, load_data_folder
from recsys.schema import EVENT_TYPES, ITEMS, MERCHANT_PROFILES, PLATFORM_PROFILES

#: Event types exported as interactions (the contract's types; `rating` never comes from the API).
ITEM_EVENTS = frozenset(EVENT_TYPES) - {"rating"}
_LATEST_TS = 4_102_444_800  # 2100-01-01, as in the data folder validation


@dataclass
class ExportResult:
    """What `export_events` wrote and what it left out."""

    out_dir: Path
    interactions: int  # rows exported from the log (not counting a base folder's rows)
    queries: int
    duplicates: int  # events whose event_id was already exported
    malformed: int  # events missing a field the contract needs, or of an unknown type
    unknown_items: int  # with a base folder: events for items not in its items table (left out)
    torn_lines: int
    #: events left out as not human: flagged, or of a user flagged at some point (docs/risk.md)
    flagged: int = 0


def _valid_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def _valid_ts(value: Any) -> bool:
    return _valid_number(value) and value <= _LATEST_TS


def _rows(events: Iterator[dict[str, Any]], since: float | None) -> tuple[list[dict], list[dict], int, int, int]:
    """Split logged events into interaction and query rows; drop repeated event_ids, malformed
    events and the traffic risk control judged not human: every flagged event, and every event of a
    user whose events were flagged "user:…" at some point (also those logged before the flag)."""
    seen: set[str] = set()
    interactions: list[dict] = []
    queries: list[dict] = []
    duplicates = malformed = flagged = 0
    bots: set[str] = set()
    for ev in events:
        event_id = ev.get("event_id")
        if isinstance(event_id, str) and event_id:
            if event_id in seen:
                duplicates += 1
                continue
            seen.add(event_id)
        ts, kind, user = ev.get("ts"), ev.get("type"), ev.get("user_id") or ""
        if not _valid_ts(ts) or not isinstance(user, str):
            malformed += 1
            continue
        if since is not None and ts < since:
            continue
        flag = ev.get("flag")
        if flag:
            flagged += 1
            if isinstance(flag, str) and flag.startswith("user:"):
                bots.add(user)
            continue
        if kind == "search":
            query = ev.get("query")
            if not isinstance(query, str) or not query.strip():
                malformed += 1
                continue
            queries.append({"user_id": user, "query": query.strip(), "ts": int(ts), "clicked_item_id": ""})
        elif kind == "impression" and not ev.get("item_id") and ev.get("query"):
            continue  # a shading word or chip shown: analytics only, no interaction
        elif kind in ITEM_EVENTS:
            item, value = ev.get("item_id"), ev.get("value")
            value = 1.0 if value is None else value
            if not user or not isinstance(item, str) or not item or not _valid_number(value):
                malformed += 1
                continue
            interactions.append({"user_id": user, "item_id": item, "event": kind, "ts": int(ts), "value": float(value)})
        else:
            malformed += 1
    if bots:
        kept_inter = [row for row in interactions if row["user_id"] not in bots]
        kept_queries = [row for row in queries if row["user_id"] not in bots]
        flagged += len(interactions) - len(kept_inter) + len(queries) - len(kept_queries)
        interactions, queries = kept_inter, kept_queries
    return interactions, queries, duplicates, malformed, flagged


def _frame(rows: list[dict], columns: dict[str, str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(columns))
    return frame.astype(columns)


_INTERACTION_COLUMNS = {"user_id": "str", "item_id": "str", "event": "str", "ts": "int64", "value": "float64"}
_QUERY_COLUMNS = {"user_id": "str", "query": "str", "ts": "int64", "clicked_item_id": "str"}


def export_events(
    log_dir: str | os.PathLike,
    app: str,
    out_dir: str | os.PathLike,
    *,
    since: float | None = None,
    base: str | os.PathLike | None = None,
    platform_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    stream: str = "MINIREC_EVENTS",
    events: Iterable[dict[str, Any]] | None = None,
) -> ExportResult:
    """Export `app`'s logged events (ts >= `since`, if given) into a data folder at `out_dir`.
    `log_dir` is the local log's folder, or a `nats://` URL of the JetStream server holding `stream`
    (features/eventstream.py).

    Item events become `interactions` (user_id, item_id, event, ts, value) and searches become
    `queries` (user_id, query, ts, clicked_item_id=''); a repeated event_id is exported once.
    Traffic judged not human is left out (`flagged` counts it; docs/risk.md).

    Without `base`, `out_dir` receives only `interactions.parquet` (and `queries.parquet` when
    there were searches): add the items table, or merge the rows into your folder, to train on it.
    With `base` (an existing, valid data folder), `out_dir` becomes a complete folder: the base's
    items and profile tables copied as they are, its interactions and queries followed by the
    exported rows. Events for items missing from the base's items are left out and counted (items
    published through the API after the folder was made: add them to items to keep their events).
    `events`, when given, are exported instead of reading `log_dir` (`minirec train-all --from-events`
    passes the logged events it has not merged before; offline_training/event_merge.py).
    Use `since` (e.g. the time of the previous export) so that rows already in `base` are not added
    twice. `out_dir` may be `base` itself with `overwrite=True`: everything is read first and the
    folder is replaced atomically. Raises FileExistsError if `out_dir` is not empty and not
    `overwrite`, and `offline_training.datafolder.DataError` if `base` is not a valid folder.
    """
    # Imported here: the NATS client is needed only for a stream URL.
    from features.eventstream import is_stream_url, iter_stream_events

    stats = ReadStats()
    if events is not None:
        source: Iterator[dict[str, Any]] = iter(events)
    elif is_stream_url(str(log_dir)):
        source = iter_stream_events(str(log_dir), app, stream)
    else:
        source = iter_events(log_dir, app, since, stats)
    inter_rows, query_rows, duplicates, malformed, flagged = _rows(source, since)
    interactions = _frame(inter_rows, _INTERACTION_COLUMNS)
    queries = _frame(query_rows, _QUERY_COLUMNS)
    exported_inter, exported_queries, unknown = len(interactions), len(queries), 0
    copies: list[Path] = []
    if base is not None:
        data = load_data_folder(base, platform_dir=platform_dir)
        known = interactions["item_id"].isin(data.items["item_id"])
        unknown = int((~known).sum())
        interactions = interactions[known]
        exported_inter -= unknown
        interactions = pd.concat([data.interactions[list(_INTERACTION_COLUMNS)], interactions], ignore_index=True)
        if data.queries is not None:
            queries = pd.concat([data.queries[list(_QUERY_COLUMNS)], queries], ignore_index=True)
        for table in (ITEMS, MERCHANT_PROFILES, PLATFORM_PROFILES):
            found = find_table_file(Path(base), table.name)
            if found is not None:
                copies.append(found)
    with FolderWriter(out_dir, overwrite=overwrite) as writer:
        for path in copies:
            shutil.copy2(path, writer.tmp / path.name)
        writer.write("interactions", interactions.astype(_INTERACTION_COLUMNS))
        if len(queries):
            writer.write("queries", queries.astype(_QUERY_COLUMNS))
    return ExportResult(Path(out_dir), exported_inter, exported_queries, duplicates, malformed, unknown,
                        stats.torn_lines, flagged)
