"""Experiments from minirec.toml: validation, deterministic bucketing, variants served and named in
the response, events credited to scene and variant, and the analytics over the real event log."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from analytics.report import build_report
from features.eventlog import EventLog
from serving.app import create_app
from serving.config_table import Table
from serving.server_config import ServerConfigError, parse_experiments
from tests.serving_fixtures import ADMIN_KEY, APP_KEY, OTHER_KEY, build_app, server_config
from vocab.experiments import bucket

H = {"X-API-Key": APP_KEY}
EXPERIMENTS = """
[apps.shop.experiments.home-feed]
scene = "home"
control = "popularity"
variants.popularity = { share = 0.5, strategy = "popularity" }
variants.personalized = { share = 0.5, strategy = "personalized", max_per_category = 2 }

[apps.shop.experiments.shading-word]
scene = "shading"
holdout = 0.2
variants.hot = { share = 0.4, strategy = "popularity" }
variants.personal = { share = 0.4 }
"""


def _two_variants(**extra) -> dict:
    return {"scene": "home", "variants": {"a": {"share": 0.5}, "b": {"share": 0.5}}, **extra}


@pytest.mark.parametrize("raw, message", [
    ({"x": {"scene": "cart", "variants": {}}}, "[apps.shop.experiments.x] scene: expected one of home"),
    ({"x": _two_variants(holdout=0.1)}, "add up to 1.1, not 1"),
    ({"x": _two_variants(), "y": _two_variants()}, "scene 'home' already has experiment 'x'"),
    ({"x": {"scene": "home", "variants": {"a": {"share": 1.0}}}}, "at least two variants"),
    ({"x": {"scene": "shading", "variants": {"a": {"share": 0.5, "max_per_category": 2}, "b": {"share": 0.5}}}},
     "[apps.shop.experiments.x.variants.a] max_per_category: has no effect on scene 'shading'"),
    ({"x": {"scene": "home", "variants": {"a": {"share": 0.5, "strategy": "random"}, "b": {"share": 0.5}}}},
     "[apps.shop.experiments.x.variants.a] strategy: expected one of personalized, popularity, got 'random'"),
    ({"bad name": _two_variants()}, "experiment name must be"),
    ({"x": _two_variants(control="c")}, "[apps.shop.experiments.x] control: expected one of a, b, got 'c'"),
    ({"x": {**_two_variants(), "start": 1}}, "[apps.shop.experiments.x] unknown key 'start'; known: control,"),
])
def test_invalid_experiments_are_refused_with_where(raw: dict, message: str) -> None:
    with pytest.raises(ServerConfigError) as info:
        parse_experiments(Table(raw, "minirec.toml", "apps.shop.experiments", None))
    assert str(info.value).startswith("minirec.toml: [apps.shop.experiments") and message in str(info.value)


def test_bucketing_is_deterministic_follows_the_shares_and_is_independent_between_experiments() -> None:
    experiment = parse_experiments(Table({"e": {"scene": "home", "holdout": 0.1, "variants": {
        "a": {"share": 0.6}, "b": {"share": 0.3}}}}, "t", "e", None))["home"]
    users = [f"u{i}" for i in range(20_000)]
    names = [experiment.assign(u).name for u in users]
    assert names == [experiment.assign(u).name for u in users]  # a user stays in their variant
    shares = {v: names.count(v) / len(users) for v in ("holdout", "a", "b")}
    assert shares == pytest.approx({"holdout": 0.1, "a": 0.6, "b": 0.3}, abs=0.015)
    assert experiment.assign(None) is None and experiment.assign("") is None  # anonymous: not bucketed
    first = np.array([bucket("one", u) for u in users])
    second = np.array([bucket("two", u) for u in users])
    assert abs(np.corrcoef(first, second)[0, 1]) < 0.03


def test_a_bad_experiment_stops_the_server_config_naming_the_file(tmp_path: Path) -> None:
    shop = tmp_path  # no bundle needed: the config is refused before anything loads
    with pytest.raises(ServerConfigError, match=r"minirec.toml: \[apps.shop.experiments.x\] scene: expected"):
        server_config(shop, tmp_path, None, '\n[apps.shop.experiments.x]\nscene = "nope"\n')


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> Path:
    return build_app(tmp_path_factory.mktemp("shop"))


@pytest.fixture()
def client(shop, tmp_path) -> TestClient:
    with TestClient(create_app(server_config(shop, tmp_path, None, EXPERIMENTS))) as c:
        yield c


def _users_by_variant(experiment: str, shares: list[tuple[str, float]]) -> dict[str, str]:
    """A user id per variant, found with the serving hash."""
    found: dict[str, str] = {}
    for i in range(1000):
        point, edge = bucket(experiment, f"u{i:06d}"), 0.0
        for name, share in shares:
            edge += share
            if point < edge:
                found.setdefault(name, f"u{i:06d}")
                break
    return found


def test_variants_are_served_and_named_and_events_are_credited_to_them(client: TestClient, tmp_path: Path) -> None:
    users = _users_by_variant("home-feed", [("popularity", 0.5), ("personalized", 0.5)])
    pages = {}
    for variant, user in users.items():
        body = client.get("/v1/apps/shop/recommend/home", params={"user_id": user, "n": 10}, headers=H).json()
        assert (body["experiment"], body["variant"]) == ("home-feed", variant)
        rid = body["request_id"].split(".")
        assert rid[1:] == ["home", "home-feed", variant] and len(rid[0]) == 24
        pages[variant] = body
    assert pages["popularity"]["strategy"] == "popularity"
    assert pages["personalized"]["strategy"] != "popularity"
    anonymous = client.get("/v1/apps/shop/recommend/home", params={"n": 5}, headers=H).json()
    assert anonymous["experiment"] is None and anonymous["request_id"].endswith(".home")
    related = client.get(f"/v1/apps/shop/recommend/related/{pages['popularity']['items'][0]['item_id']}",
                         params={"user_id": users["popularity"]}, headers=H).json()
    assert related["experiment"] is None and related["request_id"].split(".")[1] == "related"

    search = client.get("/v1/apps/shop/search", params={"q": "睡不着", "user_id": users["popularity"]},
                        headers=H).json()
    assert search["request_id"].split(".")[1] in ("search+fallback", "search+empty")

    # Events: impressions and a click with the request_id; a purchase without one (last touch); a search.
    now = time.time()
    events = []
    for variant, user in users.items():
        body = pages[variant]
        events += [{"event_id": uuid.uuid4().hex, "user_id": user, "type": "impression", "item_id": i["item_id"],
                    "request_id": body["request_id"]} for i in body["items"]]
        item = body["items"][0]
        events += [{"event_id": uuid.uuid4().hex, "user_id": user, "type": "click", "item_id": item["item_id"],
                    "request_id": body["request_id"]},
                   {"event_id": uuid.uuid4().hex, "user_id": user, "type": "purchase", "item_id": item["item_id"],
                    "ts": now + 1}]
    events.append({"event_id": uuid.uuid4().hex, "user_id": users["popularity"], "type": "search", "query": "睡不着",
                   "source": "typed", "request_id": search["request_id"]})
    shading = client.get("/v1/apps/shop/search/shading", params={"user_id": users["personalized"]}, headers=H).json()
    if shading["query"]:
        events.append({"event_id": uuid.uuid4().hex, "user_id": users["personalized"], "type": "impression",
                       "query": shading["query"], "request_id": shading["request_id"]})
    posted = client.post("/v1/apps/shop/events", json={"events": events}, headers=H).json()
    assert posted["accepted"] == len(events) and not posted["rejected"]

    doc = client.get("/v1/apps/shop/analytics", params={"from": now - 60}, headers=H).json()
    (home,) = doc["experiments"][:1]
    assert home["name"] == "home-feed" and home["control"] == "popularity"
    for variant in users:
        cell = home["variants"][variant]
        assert (cell["users"], cell["impressions"], cell["clicks"], cell["purchases"]) == (1, 10, 1, 1)
        price = float(pages[variant]["items"][0]["price"])
        assert cell["gmv"] == pytest.approx(price, abs=0.01)  # amount defaults to the catalog price
    assert "lift" in home["variants"]["personalized"] and "lift" not in home["variants"]["popularity"]
    assert doc["search"]["by_source"]["typed"]["searches"] == 1
    listed = doc["search"]["fallback_queries"] + doc["search"]["zero_result_queries"]
    assert [q["query"] for q in listed] == ["睡不着"]
    assert doc["events"]["by_type"]["purchase"] == 2

    # The admin key may read any app; another app's key may not; a bad date is a clear 422.
    assert client.get("/v1/apps/shop/analytics", headers={"X-API-Key": ADMIN_KEY}).status_code == 200
    assert client.get("/v1/apps/shop/analytics", headers={"X-API-Key": OTHER_KEY}).status_code == 403
    bad = client.get("/v1/apps/shop/analytics", params={"from": "yesterday"}, headers=H)
    assert bad.status_code == 422 and "from: 'yesterday'" in bad.json()["error"]["message"]


def test_the_shading_experiment_hot_variant_gets_the_hot_list(client: TestClient) -> None:
    users = _users_by_variant("shading-word", [("holdout", 0.2), ("hot", 0.4), ("personal", 0.4)])
    hot = client.get("/v1/apps/shop/search/shading", params={"user_id": users["hot"]}, headers=H).json()
    assert (hot["experiment"], hot["variant"], hot["source"]) == ("shading-word", "hot", "hot")
    held = client.get("/v1/apps/shop/search/shading", params={"user_id": users["holdout"]}, headers=H).json()
    assert held["variant"] == "holdout"


def test_last_touch_credit_respects_the_window(tmp_path: Path) -> None:
    log, now = EventLog(tmp_path), time.time()

    def ev(kind: str, ts: float, **fields) -> dict:
        return {"event_id": uuid.uuid4().hex, "user_id": "u1", "type": kind, "ts": ts, "item_id": "i1", **fields}

    log.append("shop", [
        ev("impression", now - 7200, request_id="a" * 24 + ".related"),
        ev("impression", now - 3600, request_id="b" * 24 + ".home.e.v1"),  # the last touch
        ev("cart", now - 1800),  # credited to home/e/v1 (30 minutes after)
        ev("purchase", now - 10, amount=50.0),  # 1 hour after: inside a 2-hour window only
        {**ev("click", now - 5), "item_id": "i2"},  # nothing ever showed i2: uncredited
    ])
    wide = build_report(tmp_path, "shop", now - 86400, now + 1, window_hours=2)
    (home,) = [c for c in wide["scenes"] if c["scene"] == "home"]
    assert (home["experiment"], home["variant"], home["purchases"], home["gmv"]) == ("e", "v1", 1, 50.0)
    narrow = build_report(tmp_path, "shop", now - 86400, now + 1, window_hours=0.75)
    (home,) = [c for c in narrow["scenes"] if c["scene"] == "home"]
    assert home["purchases"] == 0  # the purchase came 1 h after the touch: outside 45 minutes
    assert narrow["events"]["total"] == 5


def test_torn_lines_and_repeated_event_ids_are_read_as_the_export_reads_them(tmp_path: Path) -> None:
    log, now = EventLog(tmp_path), time.time()
    event = {"event_id": "same", "user_id": "u1", "type": "click", "ts": now, "item_id": "i1",
             "request_id": "c" * 24 + ".home"}
    log.append("shop", [event, {**event, "ts": now + 1}])
    path = log.path_for("shop", now)
    with open(path, "ab") as out:
        out.write(b'{"event_id": "torn", "user_')  # a crash mid-write
    doc = build_report(tmp_path, "shop", now - 10, now + 10)
    assert doc["events"]["total"] == 1


def test_minirec_report_prints_tables_and_writes_the_document(tmp_path: Path, capsys) -> None:
    from minirec.cli import main

    config = tmp_path / "minirec.toml"
    server_config(tmp_path, tmp_path, None, EXPERIMENTS)  # writes minirec.toml with state in tmp_path/state
    log, now = EventLog(tmp_path / "state" / "events"), time.time()
    log.append("shop", [{"event_id": f"e{i}", "user_id": f"u{i}", "type": "impression", "item_id": "i1", "ts": now,
                         "request_id": "d" * 24 + f".home.home-feed.{'popularity' if i % 2 else 'personalized'}"}
                        for i in range(6)])
    assert main(["report", "--app", "shop", "--config", str(config), "--from", str(now - 60),
                 "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "experiment home-feed (scene home, control popularity)" in out and "personalized" in out
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["experiments"][0]["variants"]["personalized"]["impressions"] == 3
    assert main(["report", "--app", "nope", "--config", str(config)]) == 2  # a clear error, not a traceback
    assert "app 'nope' is not in" in capsys.readouterr().err
