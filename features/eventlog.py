"""Durable append-only event log. Its export into the data folder contract (the feedback loop) is
`offline_training/export.py`.

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
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from features.keys import check_app


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
