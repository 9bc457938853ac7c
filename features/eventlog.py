"""Durable append-only event log, and its export into the data folder contract (the feedback loop).

Layout: `LOG_DIR/<app>/events-YYYYMMDD.jsonl`, one JSON object per line, one file per UTC day of
receipt. The objects are the events as the API accepted them (`features.store.EventRecord` fields:
event_id, user_id, type, ts, item_id, query, request_id, category, value, source, amount) plus
`received`; `analytics/` reads them for the merchant's reports.

Durability guarantee: when `EventLog.append` returns, the whole batch is on stable storage. It is
written with one write(2) on an O_APPEND descriptor while holding an exclusive flock (so batches of
several worker processes never interleave), then fsync'd; when the call creates a file or folder,
the folder holding it is fsync'd too. Within one process, batches that arrive while a write is in
flight are committed together (group commit): the next thread to commit writes all of them, each
still whole and contiguous, with one fsync, and every caller returns only after that fsync — so a
burst of single-event requests costs a few fsyncs instead of one each. An acknowledged batch
therefore survives a crash of the process and of the machine (power loss included, on storage that
honours fsync; flock needs a local file system, not NFS). A crash during a write can leave a torn
last line: that batch was never acknowledged, so the client retries it. Readers skip any line that
is not a complete JSON object with a `TornLineWarning`, and the next append first ends a torn line,
so it never swallows a valid one. A batch cut exactly at a line boundary may leave some of its
events in the log as well as in the retried batch: the export keeps the first of each event_id.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import shutil
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from features.keys import check_app
from recsys.schema import EVENT_TYPES, ITEMS, MERCHANT_PROFILES, PLATFORM_PROFILES

if TYPE_CHECKING:
    import pandas as pd

#: Event types exported as interactions (the contract's types; `rating` never comes from the API).
ITEM_EVENTS = frozenset(EVENT_TYPES) - {"rating"}
_LATEST_TS = 4_102_444_800  # 2100-01-01, as in the data folder validation


class TornLineWarning(UserWarning):
    """A log line was not a complete JSON object (a write cut by a crash); it was skipped."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_dir(path: Path) -> None:
    """mkdir -p that fsyncs the parent of every folder it creates (so the new entry is durable)."""
    if path.is_dir():
        return
    _make_dir(path.parent)
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        return
    _fsync_dir(path.parent)


@dataclass(eq=False)
class _Ticket:
    """One caller's encoded batch, waiting for the commit that writes it."""

    data: bytes
    wake: threading.Event = field(default_factory=threading.Event)
    done: bool = False
    error: BaseException | None = None


class EventLog:
    """Appends event batches to `log_dir`; safe across threads and processes on one machine."""

    def __init__(self, log_dir: str | os.PathLike, clock: Callable[[], float] = time.time) -> None:
        self.log_dir = Path(log_dir)
        self._clock = clock
        self._mutex = threading.Lock()
        self._waiting: dict[Path, list[_Ticket]] = {}  # batches not yet taken by a commit, per file
        self._committing: set[Path] = set()  # files with a commit in flight in this process
        #: fsyncs of data so far (each commits one or more batches); for tests and metrics.
        self.commits = 0

    def path_for(self, app: str, when: float) -> Path:
        """The file receiving `app`'s events at Unix time `when` (its UTC day)."""
        return self.log_dir / check_app(app) / time.strftime("events-%Y%m%d.jsonl", time.gmtime(when))

    def append(self, app: str, events: Sequence[Mapping[str, Any]]) -> Path:
        """Append a batch durably (see the module docstring) and return the file written.

        Raises ValueError or TypeError, before writing anything, if an event is not JSON-serializable
        (NaN included); OSError if the disk fails (then nothing may be acknowledged)."""
        path = self.path_for(app, self._clock())
        if not events:
            return path
        data = "".join(json.dumps(dict(ev), ensure_ascii=False, separators=(",", ":"), allow_nan=False) + "\n"
                       for ev in events).encode("utf-8")
        ticket = _Ticket(data)
        with self._mutex:
            self._waiting.setdefault(path, []).append(ticket)
            lead = path not in self._committing
            self._committing.add(path)
        if not lead:
            ticket.wake.wait()  # woken when a commit has written our batch, or to commit next
        if not ticket.done:
            self._commit_waiting(path)
        if ticket.error is not None:
            raise ticket.error
        return path

    def _commit_waiting(self, path: Path) -> None:
        """Write every batch waiting for `path` with one fsync, then hand the file to the next waiter."""
        with self._mutex:
            group = self._waiting.pop(path)
        error: BaseException | None = None
        try:
            self._write(path, b"".join(t.data for t in group))
        except BaseException as exc:  # every batch of the group shares the fate of the write
            error = exc
        with self._mutex:
            later = self._waiting.get(path)
            if later:
                later[0].wake.set()  # not done: that caller commits what has queued meanwhile
            else:
                self._committing.discard(path)
        for t in group:
            t.error, t.done = error, True
            t.wake.set()

    def _write(self, path: Path, data: bytes) -> None:
        """Append `data` with one write(2) under the file's flock, then fsync (see the module docstring)."""
        _make_dir(path.parent)
        flags = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC
        try:
            fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600)  # user ids and queries: owner only
            created = True
        except FileExistsError:
            fd = os.open(path, flags)
            created = False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                data = b"\n" + data  # end a torn line left by a crash, so it cannot absorb our first line
            view = memoryview(data)
            try:
                while view:  # one write(2) in practice; a regular file writes short only when the disk is full
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except OSError:
                os.ftruncate(fd, size)  # nothing half-written stays behind a failed batch
                raise
            self.commits += 1
        finally:
            os.close(fd)  # also releases the lock
        if created:
            _fsync_dir(path.parent)


@dataclass
class ReadStats:
    files: int = 0
    lines: int = 0
    torn_lines: int = 0


def _day_of(path: Path) -> str:
    return path.name[len("events-"):-len(".jsonl")]


def iter_events(log_dir: str | os.PathLike, app: str, since: float | None = None,
                stats: ReadStats | None = None) -> Iterator[dict[str, Any]]:
    """Logged events of `app` in log order; with `since`, only files that may hold events with
    ts >= since (the filter on ts itself is the caller's). Torn lines are skipped with a warning."""
    stats = stats if stats is not None else ReadStats()
    folder = Path(log_dir) / check_app(app)
    first_day = time.strftime("%Y%m%d", time.gmtime(since - 86400)) if since is not None else ""  # 1 day of clock skew
    for path in sorted(folder.glob("events-????????.jsonl")):
        if _day_of(path) < first_day:
            continue
        stats.files += 1
        with path.open("rb") as fh:
            for number, raw in enumerate(fh, start=1):
                if not raw.strip():
                    continue
                stats.lines += 1
                try:
                    event = json.loads(raw)
                except ValueError:  # includes UnicodeDecodeError
                    event = None
                if not isinstance(event, dict):
                    stats.torn_lines += 1
                    warnings.warn(f"{path}, line {number}: not a complete JSON object (torn write?); skipped",
                                  TornLineWarning, stacklevel=2)
                    continue
                yield event


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


def _valid_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def _valid_ts(value: Any) -> bool:
    return _valid_number(value) and value <= _LATEST_TS


def _rows(events: Iterator[dict[str, Any]], since: float | None) -> tuple[list[dict], list[dict], int, int]:
    """Split logged events into interaction and query rows; drop repeated event_ids and malformed events."""
    seen: set[str] = set()
    interactions: list[dict] = []
    queries: list[dict] = []
    duplicates = malformed = 0
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
    return interactions, queries, duplicates, malformed


def _frame(rows: list[dict], columns: dict[str, str]) -> pd.DataFrame:
    import pandas as pd

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
) -> ExportResult:
    """Export `app`'s logged events (ts >= `since`, if given) into a data folder at `out_dir`.
    `log_dir` is the local log's folder, or a `nats://` URL of the JetStream server holding `stream`
    (features/eventstream.py).

    Item events become `interactions` (user_id, item_id, event, ts, value) and searches become
    `queries` (user_id, query, ts, clicked_item_id=''); a repeated event_id is exported once.

    Without `base`, `out_dir` receives only `interactions.parquet` (and `queries.parquet` when
    there were searches): add the items table, or merge the rows into your folder, to train on it.
    With `base` (an existing, valid data folder), `out_dir` becomes a complete folder: the base's
    items and profile tables copied as they are, its interactions and queries followed by the
    exported rows. Events for items missing from the base's items are left out and counted (items
    published through the API after the folder was made: add them to items to keep their events).
    Use `since` (e.g. the time of the previous export) so that rows already in `base` are not added
    twice. `out_dir` may be `base` itself with `overwrite=True`: everything is read first and the
    folder is replaced atomically. Raises FileExistsError if `out_dir` is not empty and not
    `overwrite`, and `offline_training.datafolder.DataError` if `base` is not a valid folder.
    """
    # Imported here: appending (the serving hot path, many worker processes) needs neither.
    import pandas as pd

    from offline_training.datafolder import FolderWriter, find_table_file, load_data_folder

    from features.eventstream import is_stream_url, iter_stream_events

    stats = ReadStats()
    source = iter_stream_events(str(log_dir), app, stream) if is_stream_url(str(log_dir)) else \
        iter_events(log_dir, app, since, stats)
    inter_rows, query_rows, duplicates, malformed = _rows(source, since)
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
                        stats.torn_lines)
