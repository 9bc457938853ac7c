"""Faults during a traffic mix, against real processes: Redis killed and restarted (external and
embedded), a bundle published (and a corrupt one) mid-load, a worker killed, the event log unwritable.

The tests assert behaviour (nothing fails, nothing acknowledged is lost, the service recovers within a
generous deadline), never how fast: the measured times go into each test's row of the fault table
(docs/faults.md), written to a temporary folder, or to $MINIREC_FAULT_ROWS when set
(`python -m bench.faults_table --run` sets it and renders the table)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import psutil
import pytest

from bench.harness.mix import Answer, MixResult, TrafficMix
from bench.harness.server import ServerProcess
from recsys import bundle
from tests.serving_fixtures import APP_KEY, build_app, copy_as_new_version, server_config

pytestmark = pytest.mark.slow
#: How long a fault may take to heal before the test fails: far above what a busy 2-core machine
#: needs (seconds, measured in docs/faults.md); it bounds "recovers at all", not how fast.
DEADLINE_S = 60.0
#: Consecutive full (not degraded) read answers that count as recovered (both workers answer some).
FULL_RUN = 30


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> Path:
    return build_app(tmp_path_factory.mktemp("faults-shop"))


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> Path:
    """Where the fault-table rows go: $MINIREC_FAULT_ROWS (bench/faults_table.py) or a temporary folder."""
    chosen = os.environ.get("MINIREC_FAULT_ROWS")
    if chosen:
        Path(chosen).mkdir(parents=True, exist_ok=True)
        return Path(chosen)
    return tmp_path_factory.mktemp("fault-rows")


@pytest.fixture(scope="module")
def mix(shop: Path) -> dict[str, list[str]]:
    inter = pd.read_parquet(shop / "data" / "interactions.parquet")
    items = pd.read_parquet(shop / "data" / "items.parquet")
    queries = pd.read_parquet(shop / "data" / "queries.parquet")["query"].value_counts().index[:50].tolist()
    return {"users": inter["user_id"].unique()[:300].tolist() + ["new-visitor-1", "new-visitor-2"],
            "items": items["item_id"].head(300).tolist(), "queries": queries}


def _start(shop: Path, workdir: Path, redis_url: str | None = None, workers: int = 2) -> ServerProcess:
    workdir.mkdir(exist_ok=True)
    server_config(shop, workdir, None)
    return ServerProcess(workdir / "minirec.toml", redis_url, workers=workers).start()


def _logged_ids(workdir: Path) -> list[str]:
    lines = [line for f in (workdir / "state" / "events" / "shop").glob("*.jsonl")
             for line in f.read_text().splitlines() if line.strip()]
    return [json.loads(line)["event_id"] for line in lines]  # every line parses: nothing half-written


def _record(rows: Path, name: str, fault: str, result: MixResult, command: str, **extra) -> None:
    row = {"fault": fault, **result.summary(), **extra, "command": command}
    (rows / f"{name}.json").write_text(json.dumps(row, indent=2))
    print(f"\nfault row {name}: {json.dumps(row)}")


def _recovery_s(result: MixResult, since: float) -> float:
    """Seconds from `since` to the last degraded read answer (0 if none after it): measured, recorded."""
    late = [a.at for a in result.answers if a.at >= since and a.degraded and a.route != "events"]
    return round(max(late) - since, 2) if late else 0.0


def _full_again(after_degraded: bool) -> Callable[[list[Answer]], bool]:
    """A condition on the answers since a moment: the last FULL_RUN read answers are full (200, not
    degraded), and, with `after_degraded`, some degraded one came before them."""
    def check(answers: list[Answer]) -> bool:
        reads = [a for a in answers if a.route != "events" and a.status == 200]
        tail = reads[-FULL_RUN:]
        if len(tail) < FULL_RUN or any(a.degraded for a in tail):
            return False
        return not after_degraded or any(a.degraded for a in reads)
    return check


def test_external_redis_killed_and_restarted(shop, mix, redis_process, tmp_path, rows) -> None:
    server = _start(shop, tmp_path, redis_process.url)
    load = TrafficMix(server.port, APP_KEY, **mix).start()
    try:
        time.sleep(4)
        redis_process.kill()
        down_at = load.elapsed()
        time.sleep(5)
        restart_at = load.elapsed()
        redis_process.start()  # same port, empty: a crash without persistence
        up_at = load.elapsed()
        recovered = load.wait_for(_full_again(after_degraded=False), up_at, DEADLINE_S)
        time.sleep(2)
    finally:
        result = load.stop()
        server.stop()
    # sent well after the kill and answered before the restart: none in flight when Redis died
    down = [a for a in result.answers if down_at + 1.5 <= a.sent and a.at < restart_at and a.route != "events"]
    assert down and [a for a in down if not a.degraded] == []  # degraded while Redis is down
    assert result.failed() == []
    assert recovered is not None, f"still degraded {DEADLINE_S:.0f} s after Redis came back"
    recovery = _recovery_s(result, up_at)
    logged = set(_logged_ids(tmp_path))
    assert set(result.acknowledged) <= logged  # every acknowledged event is in the durable log
    acked_while_down = len([a for a in result.answers if a.route == "events" and a.status == 200
                            and down_at <= a.at < up_at]) * 3
    _record(rows, "redis_external", "external Redis killed (SIGKILL) for 5 s, restarted empty", result,
            "pytest tests/test_faults_under_load.py -k external", recovery_s=recovery,
            events_acknowledged_while_down=acked_while_down,
            events_lost=len(set(result.acknowledged) - logged))


def test_embedded_redis_killed_is_restarted_by_the_server(shop, mix, tmp_path, rows) -> None:
    server = _start(shop, tmp_path)
    load = TrafficMix(server.port, APP_KEY, **mix).start()
    try:
        time.sleep(4)
        settings = json.loads((tmp_path / "state" / "redis" / "features.rdb.settings").read_text())
        pid = int(Path(settings["pidfile"]).read_text().strip())
        os.kill(pid, signal.SIGKILL)
        killed_at = load.elapsed()
        recovered = load.wait_for(_full_again(after_degraded=True), killed_at, DEADLINE_S)
        time.sleep(2)
    finally:
        result = load.stop()
        server.stop()
    assert result.failed() == []
    assert any(a.degraded for a in result.answers if a.at >= killed_at)
    assert recovered is not None, f"not back to full answers {DEADLINE_S:.0f} s after the kill"
    recovery = _recovery_s(result, killed_at)
    logged = set(_logged_ids(tmp_path))
    assert set(result.acknowledged) <= logged
    _record(rows, "redis_embedded", "embedded redis-server killed (SIGKILL); the server starts it again", result,
            "pytest tests/test_faults_under_load.py -k embedded", recovery_s=recovery, restarted_by_server=True,
            events_lost=len(set(result.acknowledged) - logged))


def _wait_for_log(server: ServerProcess, text: str, count: int, timeout_s: float) -> bool:
    """Poll the server's log until `text` appears `count` times (False after `timeout_s`)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.log_path.read_text(errors="replace").count(text) >= count:
            return True
        time.sleep(0.25)
    return False


def test_bundles_published_during_load_swap_without_a_failed_request(shop, mix, tmp_path, rows) -> None:
    artifacts = tmp_path / "artifacts"
    shutil.copytree(shop / "artifacts", artifacts)
    (tmp_path / "data").symlink_to(shop / "data")
    server = _start(tmp_path, tmp_path / "run")
    old = bundle.current_version(artifacts, "shop")
    load = TrafficMix(server.port, APP_KEY, **mix).start()
    try:
        time.sleep(3)
        new = copy_as_new_version(artifacts, "shop", old)
        bundle.publish(artifacts, "shop", new)
        published_at = load.elapsed()

        def all_new(answers: list[Answer]) -> bool:
            versions = [a.version for a in answers if a.version][-FULL_RUN:]
            return len(versions) == FULL_RUN and set(versions) == {new}

        swapped_at = load.wait_for(all_new, published_at, DEADLINE_S)
        corrupt = copy_as_new_version(artifacts, "shop", old)
        victim = next(p for p in (artifacts / "shop" / corrupt).iterdir() if p.suffix == ".npy")
        victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])  # a half-copied file
        (artifacts / "shop" / "current").write_text(corrupt + "\n")  # published by hand, unverified
        corrupt_at = load.elapsed()
        # both workers looked at it (and refused it) before the load stops
        refused = _wait_for_log(server, f"refused version {corrupt}", 2, DEADLINE_S)
        time.sleep(2)
    finally:
        result = load.stop()
        server.stop()
    assert result.failed() == []
    assert swapped_at is not None, f"the new version was not served everywhere {DEADLINE_S:.0f} s after publishing"
    assert refused, server.log_tail()
    served = [a for a in result.answers if a.version]
    assert {a.version for a in served if a.at < published_at} == {old}
    assert {a.version for a in served if a.sent > swapped_at} == {new}  # the corrupt one never served
    swap_s = min((a.at for a in served if a.version == new), default=float("inf")) - published_at
    _record(rows, "bundle_swap", "new bundle published mid-load, then a half-copied one", result,
            "pytest tests/test_faults_under_load.py -k bundles", swap_s=round(swap_s, 2),
            corrupt_served=sum(a.version == corrupt for a in served), corrupt_published_at_s=round(corrupt_at, 1))


def test_a_killed_worker_is_replaced_and_serves_the_current_bundle(shop, mix, tmp_path, rows) -> None:
    server = _start(shop, tmp_path, workers=2)
    supervisor = psutil.Process(server.proc.pid)

    def workers() -> list[psutil.Process]:
        """uvicorn's worker processes (spawned by multiprocessing; not its resource tracker, not Redis)."""
        found = []
        for child in supervisor.children():
            try:
                cmdline = " ".join(child.cmdline())
            except psutil.NoSuchProcess:
                continue
            if "spawn_main" in cmdline and child.is_running() and child.status() != psutil.STATUS_ZOMBIE:
                found.append(child)
        return found

    load = TrafficMix(server.port, APP_KEY, **mix).start()
    try:
        time.sleep(4)
        assert len(workers()) == 2
        victim = workers()[0]
        victim.kill()
        killed_at = load.elapsed()
        deadline = time.monotonic() + DEADLINE_S
        while len([w for w in workers() if w.pid != victim.pid]) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        replaced = len([w for w in workers() if w.pid != victim.pid]) == 2
        replaced_s = round(load.elapsed() - killed_at, 2)
        time.sleep(5)
    finally:
        result = load.stop()
        server.stop()
    failed = result.failed()
    # only requests the killed worker held can fail (one per client at most): all sent before the kill
    assert len(failed) <= 8 and all(a.sent <= killed_at for a in failed), failed
    assert replaced, f"no new worker {DEADLINE_S:.0f} s after the kill"
    versions = {a.version for a in result.answers if a.version and a.at > killed_at + replaced_s}
    assert versions == {bundle.current_version(shop / "artifacts", "shop")}
    _record(rows, "worker_killed", "one of 2 uvicorn workers killed (SIGKILL)", result,
            "pytest tests/test_faults_under_load.py -k worker", replaced_s=replaced_s,
            failed_in_flight=len(failed))


def test_an_unwritable_event_log_refuses_events_and_keeps_serving(shop, mix, tmp_path, rows) -> None:
    server = _start(shop, tmp_path)
    log_dir = tmp_path / "state" / "events" / "shop"
    load = TrafficMix(server.port, APP_KEY, **mix).start()
    try:
        time.sleep(3)
        before_break = load.elapsed()
        saved = log_dir.with_name("shop.saved")
        log_dir.rename(saved)
        log_dir.write_text("not a folder")  # the disk refuses: mkdir and open fail
        time.sleep(4)
        log_dir.unlink()
        saved.rename(log_dir)
        fixed_at = load.elapsed()
        time.sleep(3)
    finally:
        result = load.stop()
        server.stop()
    assert result.failed() == []  # feeds and search answer; events are refused with 503, not failed
    refused = [a for a in result.answers if a.route == "events" and a.status == 503]
    # refused only while broken: answered after the break, sent before the fix (however slow the answer)
    assert refused and all(a.at >= before_break and a.sent <= fixed_at for a in refused)
    logged = _logged_ids(tmp_path)
    assert sorted(logged) == sorted(result.acknowledged)  # each acknowledged event once; no refused one
    assert not set(result.refused) & set(logged)
    _record(rows, "eventlog_unwritable", "event log folder unwritable for 4 s", result,
            "pytest tests/test_faults_under_load.py -k unwritable", events_lost=0)
