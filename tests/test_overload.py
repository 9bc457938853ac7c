"""Overload protection: past a number of requests in flight a worker answers from cheap paths
(marked `degraded`), past another it sheds with 503 + Retry-After; probes are never shed."""

from __future__ import annotations

import time
import asyncio
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bench.harness.client import encode_get
from bench.harness.load import open_loop
from bench.harness.server import ServerProcess
from serving.app import create_app
from serving.server_config import ServerConfigError
from tests.serving_fixtures import ADMIN_KEY, APP_KEY, OTHER_KEY, build_app, server_config

H = {"X-API-Key": APP_KEY}
EXPERIMENT = """
[apps.shop.experiments.home-feed]
scene = "home"
variants.a = { share = 0.5 }
variants.b = { share = 0.5 }
"""


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> Path:
    return build_app(tmp_path_factory.mktemp("overload-shop"))


def _client(shop: Path, workdir: Path, overload: str) -> TestClient:
    workdir.mkdir(exist_ok=True)
    return TestClient(create_app(server_config(shop, workdir, None, EXPERIMENT + "\n[server.overload]\n" + overload)))


def test_an_overloaded_worker_answers_every_route_from_its_cheap_path(shop: Path, tmp_path: Path) -> None:
    """degrade_in_flight = 1 and degrade_wait_ms = 0: every request counts as overloaded (the
    deterministic way to test the path)."""
    user = "u000001"
    (tmp_path / "full").mkdir()
    with TestClient(create_app(server_config(shop, tmp_path / "full", None, EXPERIMENT))) as full:
        anonymous = full.get("/v1/apps/shop/recommend/home", params={"n": 10}, headers=H).json()
        personal = full.get("/v1/apps/shop/recommend/home", params={"n": 10, "user_id": user}, headers=H).json()
    assert personal["experiment"] == "home-feed"
    with _client(shop, tmp_path / "cheap", "degrade_in_flight = 1\ndegrade_wait_ms = 0") as c:
        # apps load on their first request, off the event loop: the cheap path answers from memory
        # only (an app not loaded yet goes through its route, which loads it, then answers degraded)
        assert c.get("/v1/apps/shop/recommend/home", params={"n": 10}, headers=H).json()["degraded"]
        home = c.get("/v1/apps/shop/recommend/home", params={"n": 10, "user_id": user}, headers=H).json()
        assert (home["strategy"], home["degraded"], home["experiment"], home["variant"]) == (
            "popularity", True, None, None)
        assert [i["item_id"] for i in home["items"]] == [i["item_id"] for i in anonymous["items"]]
        assert home["request_id"].endswith(".home")  # not credited to a variant
        # Malformed or unauthorized requests still get FastAPI's documented answers.
        assert c.get("/v1/apps/shop/recommend/home", params={"n": 500}, headers=H).status_code == 422
        assert c.get("/v1/apps/shop/recommend/home", headers={"X-API-Key": OTHER_KEY}).status_code == 403
        assert c.get("/v1/apps/shop/recommend/home").status_code == 401

        item = home["items"][0]["item_id"]
        related = c.get(f"/v1/apps/shop/recommend/related/{item}", params={"user_id": user}, headers=H).json()
        assert related["degraded"] and related["strategy"] == "related" and "overloaded" in related["note"]
        search = c.get("/v1/apps/shop/search", params={"q": home["items"][0]["title"].split()[0], "user_id": user},
                       headers=H).json()
        assert search["degraded"] and search["strategy"] == "bm25" and search["items"]
        shading = c.get("/v1/apps/shop/search/shading", params={"user_id": user}, headers=H).json()
        assert shading["degraded"] and shading["source"] == "hot"
        events = c.post("/v1/apps/shop/events", headers=H, json={"events": [
            {"event_id": "e1", "user_id": user, "type": "click", "item_id": item}]}).json()
        assert events["accepted"] == 1  # events are still recorded in full

        # A hidden item leaves the cached page once the page expires.
        assert c.put(f"/v1/apps/shop/items/{item}", headers=H, json={"visible": False}).status_code == 200
        c.post("/v1/admin/models/reload", headers={"X-API-Key": ADMIN_KEY})  # applies item changes now
        time.sleep(2.1)
        again = c.get("/v1/apps/shop/recommend/home", params={"n": 10}, headers=H).json()
        assert item not in [i["item_id"] for i in again["items"]]
        metrics = c.get("/metrics").text
        assert 'minirec_overload_total{action="degraded",route="recommend/home"}' in metrics


def test_past_the_shed_threshold_requests_get_503_with_retry_after_but_probes_do_not(shop, tmp_path) -> None:
    with _client(shop, tmp_path, "shed_in_flight = 1\nretry_after_seconds = 3") as c:
        response = c.get("/v1/apps/shop/recommend/home", headers=H)
        assert response.status_code == 503 and response.headers["retry-after"] == "3"
        assert response.json()["error"]["code"] == "overloaded"
        assert c.get("/healthz").status_code == 200
        assert c.get("/v1/admin/models", headers={"X-API-Key": ADMIN_KEY}).status_code == 200
        assert 'minirec_overload_total{action="shed",route="recommend/home"}' in c.get("/metrics").text


def test_overload_settings_are_checked(shop, tmp_path) -> None:
    with pytest.raises(ServerConfigError,
                       match=r"minirec.toml: \[server.overload\] unknown key 'degrade_at'; known: degrade_in_flight"):
        server_config(shop, tmp_path, None, "\n[server.overload]\ndegrade_at = 3\n")
    with pytest.raises(ServerConfigError,
                       match=r"\[server.overload\] shed_in_flight: expected a whole number >= 0, got -1 \(int\)"):
        server_config(shop, tmp_path, None, "\n[server.overload]\nshed_in_flight = -1\n")


@pytest.mark.slow
def test_a_burst_above_capacity_degrades_part_of_it_and_fails_nothing(shop, tmp_path) -> None:
    """Home requests sent at 2,500/s for 4 s (open loop, far above one worker's full-quality rate):
    every answer is 200, the worker took the cheap path for part of the burst and the full path for
    the rest (its /metrics say how many of each)."""
    server_config(shop, tmp_path, None, "\n[server.overload]\nshed_in_flight = 0\n")
    server = ServerProcess(tmp_path / "minirec.toml").start()
    try:
        requests = [("home", encode_get(f"/v1/apps/shop/recommend/home?n=20&user_id=u{i:06d}", server.port, APP_KEY))
                    for i in range(500)]
        # a generous grace after the 4 s schedule: every request must be answered, however busy the machine
        phase = asyncio.run(open_loop(server.port, requests, rate=2500, duration_s=4, connections=64,
                                      max_requests=10_000, grace_s=120))
        metrics = server.request("GET", "/metrics")[1]
    finally:
        server.stop()
    assert phase.errors == 0 and phase.unfinished == 0 and phase.sent == 10_000
    degraded = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                   if line.startswith('minirec_overload_total{action="degraded",route="recommend/home"}'))
    assert 0 < degraded < phase.sent, degraded
