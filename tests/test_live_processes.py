"""Correctness under live updates and a slow Redis, and exactly-once events across a restart, against
real processes: `minirec serve` under uvicorn and real redis-servers."""

from __future__ import annotations

import random
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import pandas as pd
import pytest
import redis

from bench.harness.server import ServerProcess
from offline_training.export import export_events
from tests.serving_fixtures import APP_KEY, build_app, server_config

H = {"X-API-Key": APP_KEY}
#: How long the slow-Redis test stalls the redis-server each time (far above the 50 ms read budget).
STALL_S = 1.0


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> Path:
    return build_app(tmp_path_factory.mktemp("live-shop"))


def start(shop: Path, workdir: Path, redis_url: str | None = None, extra: str = "") -> ServerProcess:
    server_config(shop, workdir, None, extra)  # writes workdir/minirec.toml
    return ServerProcess(workdir / "minirec.toml", redis_url).start()


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


@pytest.mark.slow
def test_item_changes_during_load_never_fail_a_request_nor_show_a_hidden_item(shop, tmp_path):
    """PUTs of new, changed and hidden items in a loop while home, related and search are requested
    concurrently: every response is 2xx and no item hidden before a request started is in it."""
    server = start(shop, tmp_path)
    items = pd.read_parquet(shop / "data" / "items.parquet")
    inter = pd.read_parquet(shop / "data" / "interactions.parquet")
    users = list(inter["user_id"].value_counts().index[:50]) + ["first-time-visitor", ""]
    trained = items.loc[items["visible"] & (items["stock"] > 0), "item_id"].tolist()
    words = [t.split()[0] for t in items["title"].head(40)]
    hidden: set[str] = set()
    lock = threading.Lock()
    stop = threading.Event()
    failures: list[str] = []
    counts = {"requests": 0, "puts": 0}

    def writer() -> None:
        rng = random.Random(1)
        i = 0
        while not stop.is_set():
            i += 1
            kind = i % 4
            if kind == 0:  # hide a trained item, for good
                item = trained[rng.randrange(len(trained))]
                status, _ = server.request("PUT", f"/v1/apps/shop/items/{item}", {"visible": False}, H)
                if status == 200:
                    with lock:
                        hidden.add(item)
            elif kind == 1:  # change only the price of a hidden item: it must stay hidden
                with lock:
                    item = next(iter(hidden), None)
                if item is None:
                    continue
                status, _ = server.request("PUT", f"/v1/apps/shop/items/{item}", {"price": rng.uniform(1, 99)}, H)
            else:  # a new item, sometimes published hidden
                item = f"live-{i}"
                body = {"title": f"{words[i % len(words)]} 新款 {i}", "category": items["category"].iloc[i % 50],
                        "price": 10.0 + i, "visible": kind == 2}
                status, _ = server.request("PUT", f"/v1/apps/shop/items/{item}", body, H)
                if status == 200 and kind == 3:
                    with lock:
                        hidden.add(item)
            counts["puts"] += 1
            if status != 200:
                failures.append(f"PUT {item}: {status}")

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            with lock:
                before = set(hidden)
            user = rng.choice(users)
            route = rng.random()
            if route < 0.5:
                path = f"/v1/apps/shop/recommend/home?n=20&user_id={user}"
            elif route < 0.75:
                path = f"/v1/apps/shop/recommend/related/{rng.choice(trained)}?n=10&user_id={user}"
            else:
                path = f"/v1/apps/shop/search?q={quote(rng.choice(words))}&n=20&user_id={user}"
            status, body = server.request("GET", path, headers=H)
            counts["requests"] += 1
            if status >= 500 or status != 200:
                failures.append(f"GET {path}: {status} {str(body)[:200]}")
                continue
            shown = {i["item_id"] for i in body["items"]} & before
            if shown:
                failures.append(f"GET {path}: hidden items returned: {sorted(shown)}")

    try:
        threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader, args=(s,)) for s in range(6)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 240
        while counts["requests"] < 20_000 and time.monotonic() < deadline and len(failures) < 20:
            time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join(timeout=30)
    finally:
        server.stop()
    print(f"\n{counts['requests']} requests, {counts['puts']} item PUTs, {len(hidden)} items hidden, "
          f"{len(failures)} failures")
    assert not failures, failures[:5]
    # enough reads overlapping enough writes to mean something (20,000 reads are the goal; a busy
    # machine gets fewer before the deadline, which is a speed, not a behaviour)
    assert counts["requests"] >= 2_000 and counts["puts"] > 100


@pytest.mark.slow
def test_a_slow_redis_degrades_feeds_within_the_budget_and_never_blocks_healthz(shop, tmp_path, redis_process):
    """DEBUG SLEEP from another client stalls the real redis-server for 1 s at a time: feeds answer
    degraded within the documented 50 ms read budget instead of waiting for it, and /healthz never
    waits for it. The bounds are fractions of the stall (a request that waited would take up to 1 s),
    far above the budget and a busy machine's noise; the measured latencies are printed."""
    server = start(shop, tmp_path, redis_process.url)
    inter = pd.read_parquet(shop / "data" / "interactions.parquet")
    user = inter["user_id"].iloc[0]
    assert server.request("GET", f"/v1/apps/shop/recommend/home?user_id={user}", headers=H)[1]["degraded"] is False
    calm = []
    for _ in range(300):  # /healthz before the slowdown, on this (shared, noisy) machine
        t0 = time.perf_counter()
        server.request("GET", "/healthz")
        calm.append((time.perf_counter() - t0) * 1000)
        time.sleep(0.005)
    stop = threading.Event()

    def slow_redis() -> None:
        with redis.Redis(port=redis_process.port, socket_timeout=5) as client:
            while not stop.is_set():
                client.execute_command("DEBUG", "SLEEP", str(STALL_S))

    feeds: list[tuple[float, bool]] = []
    health: list[float] = []

    def feed_loop() -> None:
        while not stop.is_set():
            t0 = time.perf_counter()
            status, body = server.request("GET", f"/v1/apps/shop/recommend/home?user_id={user}&n=10", headers=H)
            assert status == 200
            feeds.append((time.perf_counter() - t0, body["degraded"]))

    def health_loop() -> None:
        while not stop.is_set():
            t0 = time.perf_counter()
            assert server.request("GET", "/healthz")[0] == 200
            health.append(time.perf_counter() - t0)
            time.sleep(0.005)

    sleeper = threading.Thread(target=slow_redis)
    try:
        sleeper.start()
        time.sleep(0.3)
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(feed_loop), pool.submit(feed_loop), pool.submit(health_loop)]
            time.sleep(6.0)
            stop.set()
            for f in futures:
                f.result()
        sleeper.join()
    finally:
        stop.set()
        server.stop()
    feed_ms = [s * 1000 for s, _ in feeds]
    health_ms = [s * 1000 for s in health]
    print(f"\nslow Redis: {len(feeds)} feeds, p50 {statistics.median(feed_ms):.1f} ms, p99 {p99(feed_ms):.1f} ms, "
          f"{sum(d for _, d in feeds)} degraded; {len(health)} /healthz, p50 {statistics.median(health_ms):.2f} ms, "
          f"p99 {p99(health_ms):.2f} ms (before the slowdown: p99 {p99(calm):.2f} ms)")
    assert sum(d for _, d in feeds) >= 0.9 * len(feeds)
    # without the budget a feed would wait out the rest of a stall: about half of it on the median
    assert statistics.median(feed_ms) < STALL_S * 1000 / 4
    # a Redis call on the event loop would hold /healthz for up to the whole stall
    assert p99(health_ms) < STALL_S * 1000 / 2


@pytest.mark.slow
def test_events_sent_with_retries_across_a_restart_are_exported_exactly_once(shop, tmp_path):
    """N distinct events, each sent twice and some batches retried whole, the server restarted
    midway: the log holds each event once, and the exported data folder has exactly N."""
    server = start(shop, tmp_path)
    items = pd.read_parquet(shop / "data" / "items.parquet")["item_id"].tolist()
    events = [{"event_id": f"x-{i}", "user_id": f"u-{i % 37}", "type": "view", "item_id": items[i % len(items)],
               "ts": 1_800_000_000 + i} for i in range(600)]
    batches = [events[i:i + 20] for i in range(0, len(events), 20)]
    try:
        for b, batch in enumerate(batches):
            if b == len(batches) // 2:
                server.stop()  # a deploy or a crash between two batches
                server.start()
            doubled = batch + batch[:5]  # duplicates inside the batch
            for _ in range(2 if b % 3 == 0 else 1):  # and whole batches retried
                status, body = server.request("POST", "/v1/apps/shop/events", {"events": doubled}, H)
                assert status == 200, body
    finally:
        server.stop()
    log_dir = tmp_path / "state" / "events"
    logged = [line for f in (log_dir / "shop").glob("*.jsonl") for line in f.read_text().splitlines() if line]
    assert len(logged) == len(events)
    result = export_events(log_dir, "shop", tmp_path / "export")
    exported = pd.read_parquet(tmp_path / "export" / "interactions.parquet")
    assert len(exported) == len(events) and result.duplicates == 0
