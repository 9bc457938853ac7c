"""Risk control (docs/risk.md): a click farm and a hot-search push injected into a running server
(real Redis, real models) move neither the hot list, the shading words, an A/A experiment's verdict
nor the training export, while real users' feeds still react; simulated shoppers are not flagged."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from bench.harness import ROOT
from bench.harness.server import ServerProcess
from features.risk import RiskSettings, client_ip, flag_key
from minirec.demo import demo_experiments
from offline_training.export import export_events
from serving.app import create_app
from tests.serving_fixtures import APP_KEY, build_app, server_config
from vocab.experiments import bucket

PUSHED = "刷榜神器"
CONFIG = """
[apps.shop.experiments.aa]
scene = "home"
variants.a = { share = 0.5 }
variants.b = { share = 0.5 }

[apps.shop.experiments.shade]
scene = "shading"
variants.hot = { share = 0.99, strategy = "popularity" }
variants.personal = { share = 0.01 }

[apps.shop.risk]
trusted_proxies = 1
ip_actions_per_minute = 3000
"""


def _h(ip: str) -> dict[str, str]:
    return {"X-API-Key": APP_KEY, "X-Forwarded-For": ip}


def _ev(user: str, kind: str, **fields) -> dict:
    return {"event_id": uuid.uuid4().hex, "user_id": user, "type": kind, **fields}


def _post(client: TestClient, events: list[dict], ip: str) -> dict:
    reply = client.post("/v1/apps/shop/events", json={"events": events}, headers=_h(ip))
    assert reply.status_code == 200, reply.text
    return reply.json()


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> Path:
    return build_app(tmp_path_factory.mktemp("risk-shop"))


def test_client_ip_trusts_only_the_configured_proxies() -> None:
    assert client_ip("10.0.0.1", "1.2.3.4, 5.6.7.8", 0) == "10.0.0.1"
    assert client_ip("10.0.0.1", "1.2.3.4, 5.6.7.8", 1) == "5.6.7.8"  # what our proxy saw
    assert client_ip("10.0.0.1", "1.2.3.4, 5.6.7.8", 2) == "1.2.3.4"
    assert client_ip("10.0.0.1", "5.6.7.8", 2) == "10.0.0.1"  # a short header is not trusted
    assert RiskSettings().ip_actions_per_minute == 0 and RiskSettings().user_actions_per_minute == 120


def test_click_farm_and_hot_search_push_move_nothing(shop: Path, tmp_path: Path) -> None:
    with TestClient(create_app(server_config(shop, tmp_path, None, CONFIG))) as client:
        ctx = client.app.state.ctx
        items = pd.read_parquet(shop / "data" / "items.parquet") if (shop / "data" / "items.parquet").exists() \
            else pd.read_csv(shop / "data" / "items.csv")
        words = sorted({str(c).split("/")[-1] for c in items["category"]})[:12]
        # real shoppers: 60 users, a feed each (impressions, 2 clicks), 5 searches each (300 searches)
        real = [f"real{i:03d}" for i in range(60)]
        for n, user in enumerate(real):
            feed = client.get("/v1/apps/shop/recommend/home", params={"user_id": user, "n": 10}, headers=_h(f"1.1.{n}.1")).json()
            rid = feed["request_id"]
            events = [_ev(user, "impression", item_id=i["item_id"], request_id=rid) for i in feed["items"]]
            events += [_ev(user, "click", item_id=i["item_id"], request_id=rid) for i in feed["items"][n % 3:n % 3 + n % 4]]
            events += [_ev(user, "search", query=words[(n + k * k) % len(words)], source="typed") for k in range(5)]
            assert not _post(client, events, f"1.1.{n}.1")["rejected"]
        hot_before = [h["query"] for h in client.get("/v1/apps/shop/search/hot", params={"n": 10}, headers=_h("1.1.0.1")).json()["items"]]
        shading = lambda u: client.get("/v1/apps/shop/search/shading", params={"user_id": u}, headers=_h("1.1.0.1")).json()["query"]  # noqa: E731
        shading_before = {u: shading(u) for u in real[:40]}
        assert len(hot_before) == 10

        # the hot-search push: 10,000 searches of one made-up phrase from 50 user ids
        pushers = [f"push{i:02d}" for i in range(50)]
        searches = [_ev(pushers[i % 50], "search", query=PUSHED, source="typed") for i in range(10_000)]
        for start in range(0, len(searches), 500):
            _post(client, searches[start:start + 500], "66.6.6.6")
        # a click farm on variant b of the A/A test: 5 ids of that variant, one IP, 10,000 clicks
        farm = [u for u in (f"farm{i:03d}" for i in range(200)) if bucket("aa", u) >= 0.5][:5]
        clicks = []
        for user in farm:
            feed = client.get("/v1/apps/shop/recommend/home", params={"user_id": user, "n": 10}, headers=_h("77.7.7.7")).json()
            assert feed["variant"] == "b"
            _post(client, [_ev(user, "impression", item_id=i["item_id"], request_id=feed["request_id"])
                           for i in feed["items"]], "77.7.7.7")
            clicks += [_ev(user, "click", item_id=feed["items"][k % 3]["item_id"], request_id=feed["request_id"])
                       for k in range(2000)]
        for start in range(0, len(clicks), 1000):
            _post(client, clicks[start:start + 1000], "77.7.7.7")

        # the hot list's top 10 and the shading words did not move
        hot_after = [h["query"] for h in client.get("/v1/apps/shop/search/hot", params={"n": 10}, headers=_h("1.1.0.1")).json()["items"]]
        assert hot_after == hot_before and PUSHED not in hot_after
        assert {u: shading(u) for u in real[:40]} == shading_before
        # the bots are flagged in Redis, with reason and time
        redis = ctx.stores["shop"]._r
        for user in pushers[:3] + farm:
            record = json.loads(redis.get(flag_key("shop", "u", user)))
            assert record["reason"] in ("rate", "identical", "same_second") and record["ts"] > 0

        # a real user's click changes their own feed within a second
        user = real[7]
        feed = client.get("/v1/apps/shop/recommend/home", params={"user_id": user, "n": 10}, headers=_h("1.1.7.1")).json()
        clicked = feed["items"][0]["item_id"]
        started = time.monotonic()
        _post(client, [_ev(user, "click", item_id=clicked, request_id=feed["request_id"])], "1.1.7.1")
        after = client.get("/v1/apps/shop/recommend/home", params={"user_id": user, "n": 10}, headers=_h("1.1.7.1")).json()
        assert time.monotonic() - started < 1.0
        assert [i["item_id"] for i in after["items"]] != [i["item_id"] for i in feed["items"]]

        # the A/A verdict: variant b's CTR lift over a still covers 0; the risk section says why
        doc = client.get("/v1/apps/shop/analytics", params={"from": time.time() - 600}, headers=_h("1.1.0.1")).json()
        (aa,) = [e for e in doc["experiments"] if e["name"] == "aa"]
        lo, hi = aa["variants"]["b"]["lift"]["ctr"]["ci95"]
        assert lo <= 0 <= hi, aa["variants"]
        assert doc["risk"]["filtered_events"] >= 20_000 - 100 and doc["risk"]["filtered_users"] == 55
        assert all(r["reason"].startswith("user:") or r["reason"].startswith("ip:") for r in doc["risk"]["by_reason"])

        # the training export holds none of the bots' events, and all of the shoppers'
        result = export_events(ctx.eventlog.log_dir, "shop", tmp_path / "export")
        inter = pd.read_parquet(tmp_path / "export" / "interactions.parquet")
        queries = pd.read_parquet(tmp_path / "export" / "queries.parquet")
        bots = set(pushers) | set(farm)
        assert not (set(inter["user_id"]) | set(queries["user_id"])) & bots
        assert set(queries["user_id"]) == set(real) and len(queries) == 300
        assert result.flagged >= 20_000


def test_simulated_shoppers_are_not_flagged(shop: Path, tmp_path: Path) -> None:
    """False positives: `minirec simulate`'s shoppers through a real server process, default thresholds."""
    work = tmp_path / "work"
    work.mkdir()
    server_config(shop, work, None, demo_experiments("shop"))
    server = ServerProcess(work / "minirec.toml").start()
    try:
        out = tmp_path / "sim.json"
        done = subprocess.run([sys.executable, "-m", "minirec.cli", "simulate", "--quiet", "--base",
                               f"http://127.0.0.1:{server.port}", "--app", "shop", "--api-key", APP_KEY,
                               "--data", str(shop / "data"), "--users", "200", "--sessions", "3",
                               "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        sim = json.loads(out.read_text())["simulation"]
        import urllib.request
        request = urllib.request.Request(
            f"http://127.0.0.1:{server.port}/v1/apps/shop/analytics?from={sim['from']}&to={sim['to']}",
            headers={"X-API-Key": APP_KEY})
        doc = json.loads(urllib.request.urlopen(request, timeout=60).read())
    finally:
        server.stop()
    fpr = doc["risk"]["filtered_users"] / sim["users"]
    print(f"\nrisk FPR: {doc['risk']['filtered_users']} of {sim['users']} simulated shoppers flagged "
          f"({fpr:.2%}) by {doc['risk']['by_reason']}; events filtered {doc['risk']['filtered_events']} of {doc['events']['total'] + doc['risk']['filtered_events']}")
    assert fpr < 0.005
