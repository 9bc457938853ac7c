"""Faults during a traffic mix, against real processes: Redis killed and restarted (external and
embedded), a bundle published (and a corrupt one) mid-load, a worker killed, the event log unwritable.
Each test writes its row of the fault table (docs/faults.md) to `artifacts/faults/<name>.json`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from recsys import bundle
from tests.load_driver import Load, LoadResult
from tests.server_process import ServerProcess
from tests.serving_fixtures import APP_KEY, build_app, copy_as_new_version, server_config

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> Path:
    return build_app(tmp_path_factory.mktemp("faults-shop"))


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


def _record(name: str, fault: str, result: LoadResult, command: str, **extra) -> None:
    folder = ROOT / "artifacts" / "faults"
    folder.mkdir(parents=True, exist_ok=True)
    row = {"fault": fault, **result.summary(), **extra, "command": command}
    (folder / f"{name}.json").write_text(json.dumps(row, indent=2))


def _recovery_s(result: LoadResult, since: float) -> float:
    """Seconds from `since` to the last degraded read answer (0 if none after it)."""
    late = [a.at for a in result.answers if a.at >= since and a.degraded and a.route != "events"]
    return round(max(late) - since, 2) if late else 0.0


def test_external_redis_killed_and_restarted(shop, mix, redis_process, tmp_path) -> None:
    server = _start(shop, tmp_path, redis_process.url)
    load = Load(server.port, APP_KEY, **mix).start()
    try:
        time.sleep(4)
        redis_process.kill()
        down_at = load.elapsed()
        time.sleep(5)
        restart_at = load.elapsed()
        redis_process.start()  # same port, empty: a crash without persistence
        up_at = load.elapsed()
        time.sleep(8)
    finally:
        result = load.stop()
        server.stop()
    down = [a for a in result.answers if down_at + 1.5 <= a.sent and a.at < restart_at and a.route != "events"]
    assert down and [a for a in down if not a.degraded] == []  # degraded while Redis is down
    assert result.failed() == []
    recovery = _recovery_s(result, up_at)
    assert recovery <= 5.0
    logged = set(_logged_ids(tmp_path))
    assert set(result.acknowledged) <= logged  # every acknowledged event is in the durable log
    acked_while_down = len([a for a in result.answers if a.route == "events" and a.status == 200
                            and down_at <= a.at < up_at]) * 3
    _record("redis_external", "external Redis killed (SIGKILL) for 5 s, restarted empty", result,
            "pytest tests/test_faults_under_load.py -k external", recovery_s=recovery,
            events_acknowledged_while_down=acked_while_down,
            events_lost=len(set(result.acknowledged) - logged))


def test_embedded_redis_killed_is_restarted_by_the_server(shop, mix, tmp_path) -> None:
    server = _start(shop, tmp_path)
    load = Load(server.port, APP_KEY, **mix).start()
    try:
        time.sleep(4)
        settings = json.loads((tmp_path / "state" / "redis" / "features.rdb.settings").read_text())
        pid = int(Path(settings["pidfile"]).read_text().strip())
        os.kill(pid, signal.SIGKILL)
        killed_at = load.elapsed()
        time.sleep(10)
    finally:
        result = load.stop()
        server.stop()
    assert result.failed() == []
    assert any(a.degraded for a in result.answers if a.at >= killed_at)
    recovery = _recovery_s(result, killed_at)
    assert recovery <= 5.0, recovery
    logged = set(_logged_ids(tmp_path))
    assert set(result.acknowledged) <= logged
    _record("redis_embedded", "embedded redis-server killed (SIGKILL); the server starts it again", result,
            "pytest tests/test_faults_under_load.py -k embedded", recovery_s=recovery, restarted_by_server=True,
            events_lost=len(set(result.acknowledged) - logged))


def test_bundles_published_during_load_swap_without_a_failed_request(shop, mix, tmp_path) -> None:
    artifacts = tmp_path / "artifacts"
    shutil.copytree(shop / "artifacts", artifacts)
    (tmp_path / "data").symlink_to(shop / "data")
    server = _start(tmp_path, tmp_path / "run")
    old = bundle.current_version(artifacts, "shop")
    load = Load(server.port, APP_KEY, **mix).start()
    try:
        time.sleep(3)
        new = copy_as_new_version(artifacts, "shop", old)
        bundle.publish(artifacts, "shop", new)
        published_at = load.elapsed()
        time.sleep(5)
        corrupt = copy_as_new_version(artifacts, "shop", old)
        victim = next(p for p in (artifacts / "shop" / corrupt).iterdir() if p.suffix == ".npy")
        victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])  # a half-copied file
        (artifacts / "shop" / "current").write_text(corrupt + "\n")  # published by hand, unverified
        corrupt_at = load.elapsed()
        time.sleep(5)
    finally:
        result = load.stop()
        server.stop()
    assert result.failed() == []
    served = [a for a in result.answers if a.version]
    assert {a.version for a in served if a.at < published_at} == {old}
    assert {a.version for a in served if a.at > published_at + 4} == {new}  # the corrupt one never served
    swap_s = min((a.at for a in served if a.version == new), default=float("inf")) - published_at
    _record("bundle_swap", "new bundle published mid-load, then a half-copied one", result,
            "pytest tests/test_faults_under_load.py -k bundles", swap_s=round(swap_s, 2),
            corrupt_served=sum(a.version == corrupt for a in served), corrupt_published_at_s=round(corrupt_at, 1))


def test_a_killed_worker_is_replaced_and_serves_the_current_bundle(shop, mix, tmp_path) -> None:
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

    load = Load(server.port, APP_KEY, **mix).start()
    try:
        time.sleep(4)
        assert len(workers()) == 2
        victim = workers()[0]
        victim.kill()
        killed_at = load.elapsed()
        deadline = time.monotonic() + 60
        while len([w for w in workers() if w.pid != victim.pid]) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        replaced_s = round(load.elapsed() - killed_at, 2)
        time.sleep(5)
    finally:
        result = load.stop()
        server.stop()
    failed = result.failed()
    # only requests the killed worker held can fail (one per client at most); later ones never do
    assert len(failed) <= 8 and all(a.at < killed_at + 1 for a in failed)
    assert replaced_s < 60
    versions = {a.version for a in result.answers if a.version and a.at > killed_at + replaced_s}
    assert versions == {bundle.current_version(shop / "artifacts", "shop")}
    _record("worker_killed", "one of 2 uvicorn workers killed (SIGKILL)", result,
            "pytest tests/test_faults_under_load.py -k worker", replaced_s=replaced_s,
            failed_in_flight=len(failed))


def test_an_unwritable_event_log_refuses_events_and_keeps_serving(shop, mix, tmp_path) -> None:
    server = _start(shop, tmp_path)
    log_dir = tmp_path / "state" / "events" / "shop"
    load = Load(server.port, APP_KEY, **mix).start()
    try:
        time.sleep(3)
        saved = log_dir.with_name("shop.saved")
        log_dir.rename(saved)
        log_dir.write_text("not a folder")  # the disk refuses: mkdir and open fail
        broken_at = load.elapsed()
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
    assert refused and all(broken_at <= a.at <= fixed_at + 1 for a in refused)
    logged = _logged_ids(tmp_path)
    assert sorted(logged) == sorted(result.acknowledged)  # each acknowledged event once; no refused one
    assert not set(result.refused) & set(logged)
    _record("eventlog_unwritable", "event log folder unwritable for 4 s", result,
            "pytest tests/test_faults_under_load.py -k unwritable", events_lost=0)
