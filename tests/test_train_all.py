"""`minirec train-all` on a real local Ray (2 CPUs), real models and small generated apps:
one broken app and one out of time never stop the others nor leave anything half-written;
`--from-events` merges logged events once and trains only the apps whose data changed."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pytest

from features.eventlog import EventLog
from minirec.cli import main
from offline_training.datafolder import load_data_folder
from offline_training.event_merge import folder_fingerprint, ledger_path
from offline_training.synth import generate_mall
from offline_training.train_all import AppJob, run_train_all
from recsys import bundle

ray = pytest.importorskip("ray")

# Tiny apps, few epochs, a short search and no evaluation: each trains in a few seconds.
FAST_CONFIG = """
[als]
factors = 8
iterations = 4
[hybrid]
no_components = 8
epochs = 3
[tuning]
budget_seconds = 2.0
budget_seconds_per_million = 0.0
[evaluate]
protocols = []
"""


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray of 2 CPUs for the module (starting Ray costs seconds); train-all reuses it."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def make_app(root: Path, app: str, seed: int) -> Path:
    data = root / app / "data"
    generate_mall(data, users=200, items=60, events=3000, seed=seed, progress=False)
    (root / app / "train.toml").write_text(FAST_CONFIG)
    return data


def fake_published(artifacts: Path, app: str, fingerprint: str) -> str:
    """A published version recording `fingerprint` (what `current` must still name afterwards)."""
    with bundle.BundleWriter(artifacts, app) as writer:
        writer.save_json("placeholder", {})
        writer.commit(data_fingerprint=fingerprint, config={}, metrics={})
    bundle.publish(artifacts, app, writer.version)
    return writer.version


def staging_left(artifacts: Path) -> list[Path]:
    return sorted(artifacts.glob("*/.staging-*"))


@pytest.mark.slow
def test_twenty_apps_one_broken_one_out_of_time(local_ray, tmp_path, capsys):
    root, artifacts = tmp_path / "apps", tmp_path / "artifacts"
    for i in range(20):
        make_app(root, f"shop{i:02d}", seed=i)
    # broken: an interaction for an item the catalog does not have
    broken = root / "shop07" / "data" / "interactions.parquet"
    frame = pd.read_parquet(broken)
    frame.loc[3, "item_id"] = "no-such-item"
    frame.to_parquet(broken, index=False)
    # a time budget no training meets
    (root / "shop13" / "limits.toml").write_text("timeout_seconds = 0.5\n")
    before = {app: fake_published(artifacts, app, "an older data folder") for app in ("shop07", "shop13")}

    started = time.perf_counter()
    status = main(["train-all", "--apps-root", str(root), "--artifacts", str(artifacts),
                   "--json", str(tmp_path / "summary.json"), "--quiet"])
    wall = time.perf_counter() - started
    table = capsys.readouterr().out

    assert status == 1  # an app failed: non-zero, and the table is printed all the same
    rows = {r["app"]: r for r in json.loads((tmp_path / "summary.json").read_text())["apps"]}
    assert len(rows) == 20
    published = [app for app, r in rows.items() if r["status"] == "published"]
    assert len(published) == 18, rows
    assert rows["shop07"]["status"] == "failed" and "unknown item" in rows["shop07"]["detail"]
    assert rows["shop13"]["status"] == "out of time" and "0.5 s" in rows["shop13"]["detail"]
    assert "shop07" in table and "unknown item" in table and "18 published" in table
    for app in published:
        r = rows[app]
        assert bundle.current_version(artifacts, app) == r["version"]
        assert r["family"] and r["seconds"] > 0 and r["peak_rss_mb"] > 50
        bundle.verify(bundle.app_dir(artifacts, app) / r["version"])
    # nothing half-written: no staging folder anywhere, the two failures' `current` unchanged
    assert staging_left(artifacts) == []
    for app, version in before.items():
        assert bundle.current_version(artifacts, app) == version
        assert bundle.versions(artifacts, app) == [version]
    print(f"\n20 apps on local Ray (2 CPUs): {wall:.1f} s")


@pytest.mark.slow
def test_from_events_merges_new_events_once_and_trains_only_changed_apps(local_ray, tmp_path):
    root, artifacts, log_dir = tmp_path / "apps", tmp_path / "artifacts", tmp_path / "state" / "events"
    data = {app: make_app(root, app, seed) for app, seed in (("quiet", 1), ("busy", 2))}
    # the fingerprint train-all compares is the one training records
    assert folder_fingerprint(data["busy"]) == load_data_folder(data["busy"]).fingerprint
    for app, folder in data.items():  # both published on their current data
        fake_published(artifacts, app, folder_fingerprint(folder))
    jobs = [AppJob(app, folder, root / app / "train.toml", timeout_s=300, memory_mb=2048)
            for app, folder in data.items()]

    rows = {r.app: r for r in run_train_all(jobs, artifacts, events_source=str(log_dir), progress=False)}
    assert rows["quiet"].status == rows["busy"].status == "unchanged"  # no events yet: nothing trains

    items = pd.read_parquet(data["busy"] / "items.parquet")["item_id"].tolist()
    before = len(load_data_folder(data["busy"]).interactions)
    now = time.time()
    log = EventLog(log_dir)

    def event(n: int, kind: str = "click") -> dict:
        return {"event_id": f"ev-{n}", "user_id": f"new-user-{n % 3}", "type": kind, "ts": now - 60 + n,
                "item_id": items[n % len(items)], "query": None, "request_id": None, "category": None,
                "value": None, "source": None, "amount": None, "received": now}

    log.append("busy", [event(n) for n in range(5)] + [event(0)])  # a retried event_id: kept once
    rows = {r.app: r for r in run_train_all(jobs, artifacts, events_source=str(log_dir), progress=False)}
    assert rows["quiet"].status == "unchanged"
    assert rows["busy"].status == "published", rows["busy"]
    assert rows["busy"].events.startswith("+5 interactions")
    merged = load_data_folder(data["busy"])
    assert len(merged.interactions) == before + 5
    assert {f"new-user-{n}" for n in range(3)} <= set(merged.interactions["user_id"])
    manifest = bundle.open_current(artifacts, "busy").manifest
    assert manifest["data_fingerprint"] == merged.fingerprint and manifest["version"] == rows["busy"].version
    assert ledger_path(data["busy"]).is_file()

    # again: the same log merges nothing, so nothing trains; one more event merges just that one
    rows = {r.app: r for r in run_train_all(jobs, artifacts, events_source=str(log_dir), progress=False)}
    assert rows["busy"].status == "unchanged" and rows["busy"].events == "no new events"
    log.append("busy", [event(1), event(7, "purchase")])
    merged_before = len(load_data_folder(data["busy"]).interactions)
    from offline_training.event_merge import merge_new_events
    result = merge_new_events(log_dir, "busy", data["busy"])
    assert (result.new_events, result.interactions) == (1, 1)
    assert len(load_data_folder(data["busy"]).interactions) == merged_before + 1
    assert staging_left(artifacts) == []


def test_events_from_jetstream_are_merged_once(tmp_path):
    """--from-events with `event_stream` set: the same merge reads the JetStream stream."""
    import os
    import socket
    import uuid

    from features.eventstream import JetStreamLog, delete_stream
    from offline_training.event_merge import merge_new_events

    url = os.environ.get("MINIREC_TEST_NATS_URL", "nats://127.0.0.1:4222")
    host, port = url.removeprefix("nats://").split(":")
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        if os.environ.get("CI"):
            pytest.fail(f"NATS JetStream is not reachable at {url}")
        pytest.skip(f"NATS JetStream not reachable at {url} (set MINIREC_TEST_NATS_URL)")
    stream = f"MINIREC_TEST_{uuid.uuid4().hex[:10].upper()}"
    data = make_app(tmp_path / "apps", "shop", seed=5)
    items = pd.read_parquet(data / "items.parquet")["item_id"].tolist()
    before = len(load_data_folder(data).interactions)
    now = time.time()
    events = [{"event_id": f"js-{n}", "user_id": "u-js", "type": "cart", "ts": now, "item_id": items[n],
               "received": now} for n in range(4)]
    sink = JetStreamLog(url, stream)
    try:
        sink.append("shop", events[:3])
        assert merge_new_events(url, "shop", data, stream=stream).interactions == 3
        sink.append("shop", events[2:])  # js-2 again, js-3 new
        assert merge_new_events(url, "shop", data, stream=stream).interactions == 1
        assert merge_new_events(url, "shop", data, stream=stream).new_events == 0
    finally:
        sink.close()
        delete_stream(url, stream)
    assert len(load_data_folder(data).interactions) == before + 4
