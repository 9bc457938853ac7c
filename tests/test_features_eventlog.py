"""The durable event log: concurrent appends, torn lines, and export into a valid data folder."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from features.eventlog import EventLog, ReadStats, TornLineWarning, iter_events
from offline_training.datafolder import load_data_folder
from offline_training.export import export_events
from tests.factories import write_csv_folder

REPO = Path(__file__).resolve().parents[1]
T0 = 1_800_000_000  # 2027-01-15 08:00 UTC


def event(event_id: str, kind: str = "click", user: str = "u1", item: str | None = "i1", ts: float = T0,
          **extra) -> dict:
    return {"event_id": event_id, "user_id": user, "type": kind, "ts": ts, "item_id": item, **extra}


def test_append_writes_one_file_per_utc_day(tmp_path: Path) -> None:
    now = [T0]
    log = EventLog(tmp_path, clock=lambda: now[0])
    first = log.append("shop", [event("e1"), event("e2", "search", item=None, query="茶 杯")])
    now[0] = T0 + 86400
    second = log.append("shop", [event("e3")])
    assert first == tmp_path / "shop" / "events-20270115.jsonl"
    assert second == tmp_path / "shop" / "events-20270116.jsonl"
    assert first.read_text(encoding="utf-8").splitlines()[1] == (
        '{"event_id":"e2","user_id":"u1","type":"search","ts":1800000000,"item_id":null,"query":"茶 杯"}')
    assert [e["event_id"] for e in iter_events(tmp_path, "shop")] == ["e1", "e2", "e3"]
    assert [e["event_id"] for e in iter_events(tmp_path, "shop", since=T0 + 2 * 86400)] == ["e3"]
    assert log.append("shop", []) == first.with_name("events-20270116.jsonl")


def test_append_refuses_bad_input_before_writing(tmp_path: Path) -> None:
    log = EventLog(tmp_path)
    with pytest.raises(ValueError):
        log.append("shop", [event("e1"), event("e2", value=float("nan"))])
    with pytest.raises(ValueError, match="app id"):
        log.append("../elsewhere", [event("e1")])
    assert not (tmp_path / "shop").exists() or not any((tmp_path / "shop").iterdir())


_WRITER = textwrap.dedent("""
    import os, sys, time
    from features.eventlog import EventLog
    name, batches, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    log = EventLog(sys.argv[4])
    open(sys.argv[5] + "-" + name, "w").close()  # imported: ready to start
    while not os.path.exists(sys.argv[5]):  # start together, so that the appends really overlap
        time.sleep(0.001)
    pad = "x" * 2000  # ~2 KB per line: a batch is far larger than a pipe buffer or a page
    for b in range(batches):
        log.append("shop", [{"event_id": f"{name}-{b}-{i}", "user_id": name, "type": "view",
                             "ts": 1800000000, "item_id": "i1", "pad": pad} for i in range(size)])
""")


def test_concurrent_appends_from_two_processes_stay_intact(tmp_path: Path) -> None:
    batches, size = 60, 50
    env = dict(os.environ, PYTHONPATH=str(REPO))
    log_dir, go = tmp_path / "log", tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, name, str(batches), str(size), str(log_dir), str(go)],
                              env=env) for name in ("a", "b")]
    deadline = time.monotonic() + 60
    while not all(Path(f"{go}-{name}").exists() for name in ("a", "b")) and time.monotonic() < deadline:
        time.sleep(0.01)  # both imported (a slow import must not let one writer finish alone)
    go.touch()
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    (path,) = (log_dir / "shop").iterdir()
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b""  # ends with a newline
    events = [json.loads(line) for line in lines[:-1]]  # every line parses: nothing interleaved
    assert len(events) == 2 * batches * size
    for name in ("a", "b"):
        ids = [e["event_id"] for e in events if e["user_id"] == name]
        assert ids == [f"{name}-{b}-{i}" for b in range(batches) for i in range(size)]
    # Each batch is contiguous: its 50 lines were one write under the lock.
    owners = [e["event_id"].rsplit("-", 1)[0] for e in events]
    assert all(owners[k] == owners[k - k % size] for k in range(len(owners)))
    writers = [owner[0] for owner in owners[::size]]
    assert sum(a != b for a, b in zip(writers, writers[1:])) >= 2  # the two processes did take turns


def test_batches_arriving_during_a_write_are_committed_together(tmp_path: Path) -> None:
    """Group commit: while another process holds the file's lock, the first thread waits in its write
    and every batch arriving meanwhile queues; they are then written whole, with one more fsync."""
    log = EventLog(tmp_path, clock=lambda: T0)
    path = log.append("shop", [event("warm-up")])  # the file exists, so its lock can be held
    commits_before = log.commits
    fd = os.open(path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as a writer in another worker process would
    threads = [threading.Thread(target=log.append, args=("shop", [event(f"t{n}-{i}") for i in range(3)]))
               for n in range(12)]
    try:
        threads[0].start()
        deadline = time.monotonic() + 10
        while path not in log._committing and time.monotonic() < deadline:
            time.sleep(0.001)
        for thread in threads[1:]:
            thread.start()
        while len(log._waiting.get(path, [])) < 11 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert len(log._waiting[path]) == 11  # all queued behind the blocked write
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    for thread in threads:
        thread.join(timeout=10)
    assert log.commits - commits_before == 2  # the blocked batch, then the eleven queued ones at once
    events = [json.loads(line) for line in path.read_text().splitlines()]
    ids = [e["event_id"] for e in events]
    assert sorted(ids) == sorted(["warm-up"] + [f"t{n}-{i}" for n in range(12) for i in range(3)])
    for n in range(12):  # every batch whole and contiguous
        at = ids.index(f"t{n}-0")
        assert ids[at:at + 3] == [f"t{n}-0", f"t{n}-1", f"t{n}-2"]


def test_a_failed_write_reaches_its_caller_and_the_next_append_still_works(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "log", clock=lambda: T0)
    (tmp_path / "log").mkdir()
    (tmp_path / "log" / "shop").write_text("not a folder")  # the app's folder cannot be made
    with pytest.raises(OSError):
        log.append("shop", [event("e1")])
    (tmp_path / "log" / "shop").unlink()
    path = log.append("shop", [event("e2")])  # nothing left locked or waiting
    assert [json.loads(line)["event_id"] for line in path.read_text().splitlines()] == ["e2"]


def test_a_torn_last_line_is_skipped_and_does_not_swallow_the_next_batch(tmp_path: Path) -> None:
    log = EventLog(tmp_path, clock=lambda: T0)
    path = log.append("shop", [event("e1"), event("e2")])
    with path.open("ab") as fh:  # what a crash in the middle of a write leaves behind
        fh.write(b'{"event_id":"e3","user_id":"u1","ty')
    stats = ReadStats()
    with pytest.warns(TornLineWarning, match="line 3"):
        assert [e["event_id"] for e in iter_events(tmp_path, "shop", stats=stats)] == ["e1", "e2"]
    assert stats.torn_lines == 1
    log.append("shop", [event("e4")])  # the retried / next batch starts on a line of its own
    with pytest.warns(TornLineWarning):
        assert [e["event_id"] for e in iter_events(tmp_path, "shop")] == ["e1", "e2", "e4"]


def _logged(tmp_path: Path) -> Path:
    log_dir = tmp_path / "log"
    log = EventLog(log_dir, clock=lambda: T0)
    log.append("shop", [
        event("e1", "impression", item="i1"),
        event("e2", "click", item="i1", ts=T0 + 1),
        event("e3", "purchase", user="u2", item="i2", ts=T0 + 2, value=2, request_id="r1"),
        event("e4", "search", user="", item=None, query=" 坚果 ", ts=T0 + 3),
        event("e5", "view", item="new-item", ts=T0 + 4),
    ])
    log.append("shop", [event("e2", "click", item="i1", ts=T0 + 1),  # a retried batch: duplicate id
                        {"event_id": "e6", "type": "click", "user_id": "u1"}])  # no ts, no item: malformed
    return log_dir


def test_export_writes_interactions_and_queries(tmp_path: Path) -> None:
    out = tmp_path / "export"
    result = export_events(_logged(tmp_path), "shop", out)
    assert (result.interactions, result.queries, result.duplicates, result.malformed) == (4, 1, 1, 1)
    assert sorted(p.name for p in out.iterdir()) == ["interactions.parquet", "queries.parquet"]
    inter = pd.read_parquet(out / "interactions.parquet")
    assert inter.to_dict("records") == [
        {"user_id": "u1", "item_id": "i1", "event": "impression", "ts": T0, "value": 1.0},
        {"user_id": "u1", "item_id": "i1", "event": "click", "ts": T0 + 1, "value": 1.0},
        {"user_id": "u2", "item_id": "i2", "event": "purchase", "ts": T0 + 2, "value": 2.0},
        {"user_id": "u1", "item_id": "new-item", "event": "view", "ts": T0 + 4, "value": 1.0},
    ]
    queries = pd.read_parquet(out / "queries.parquet")
    assert queries.to_dict("records") == [{"user_id": "", "query": "坚果", "ts": T0 + 3, "clicked_item_id": ""}]
    # With an items table beside it, the export is a valid data folder.
    items = write_csv_folder(tmp_path / "tiny", items=[
        {"item_id": i, "title": f"item {i}", "category": "食品/坚果"} for i in ("i1", "i2", "new-item")])
    (out / "items.csv").write_bytes((items / "items.csv").read_bytes())
    data = load_data_folder(out)
    assert len(data.interactions) == 4 and data.queries is not None and len(data.queries) == 1
    with pytest.raises(FileExistsError):
        export_events(tmp_path / "log", "shop", out)


def test_export_onto_a_base_folder_makes_a_complete_folder(tmp_path: Path) -> None:
    base = write_csv_folder(tmp_path / "base", merchant_profiles=[{"user_id": "u1", "member_level": "gold"}])
    out = tmp_path / "next"
    result = export_events(_logged(tmp_path), "shop", out, base=base, since=T0 + 1)
    assert (result.interactions, result.queries, result.unknown_items) == (2, 1, 1)  # new-item is not in base
    data = load_data_folder(out)
    assert len(data.interactions) == 2 + 2
    assert data.interactions["event"].tolist()[-2:] == ["click", "purchase"]
    assert data.merchant_profiles["member_level"].tolist() == ["gold"]
    assert len(data.items) == 2
    # In place, when asked to: everything is read before the folder is replaced.
    again = export_events(tmp_path / "log", "shop", base, base=base, since=T0 + 2, overwrite=True)
    assert again.interactions == 1
    assert len(load_data_folder(base).interactions) == 3


def test_export_of_an_empty_log_writes_an_empty_valid_table(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = export_events(tmp_path / "nothing", "shop", out)
    assert (result.interactions, result.queries) == (0, 0)
    frame = pd.read_parquet(out / "interactions.parquet")
    assert list(frame.columns) == ["user_id", "item_id", "event", "ts", "value"] and frame.empty
