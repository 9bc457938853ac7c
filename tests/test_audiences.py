"""Lookalike audiences and platform placements: quality on the synthetic platform, privacy of the
seed and membership, the marketing scope, the platform key, and campaign credit in analytics.
Real Redis (the server's embedded one), the real event log, real models; no mocks."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from analytics.lookalike import MARKETING, build_platform_users
from bench.audience_bench import run
from features.audiences import AudienceStore
from features.eventlog import EventLog
from offline_training.synth import START_TS
from offline_training.synth_platform import generate_platform
from recsys.config import TrainConfig
from serving.app import create_app
from serving.server_config import load_server_config, write_server_config

APP_KEY = "beauty-key-0123456789"
OTHER_KEY = "other-key-0123456789"
ADMIN_KEY = "admin-key-0123456789"
PLATFORM_KEY = "platform-key-0123456789"
USER_ID = re.compile(r"p\d{7}")  # the synthetic platform's user ids


def test_lookalike_precision_beats_random_and_most_active_on_the_synthetic_platform():
    doc = run(users=8000, size=400, seed_size=150, seed=3)
    for row in doc["results"]:
        assert row["precision_lookalike"] > 1.5 * row["precision_random"], row
        assert row["precision_lookalike"] > 1.5 * row["precision_most_active"], row
        assert row["expected_conversion_lift"] > 1.0, row


@pytest.fixture(scope="module")
def platform():
    return generate_platform(4000, seed=1)


@pytest.fixture(scope="module")
def client(platform, tmp_path_factory) -> TestClient:
    """A server (no bundles needed) whose event log holds every mall's events of the last 60 days
    and whose Redis holds the platform profiles."""
    root = tmp_path_factory.mktemp("audiences")
    path = root / "minirec.toml"
    write_server_config(path, {"beauty": APP_KEY, "other": OTHER_KEY}, ADMIN_KEY, PLATFORM_KEY,
                        artifacts=str(root / "artifacts"))
    path.write_text(path.read_text().replace('state_dir = ".minirec-state"', f'state_dir = "{root / "state"}"'))
    config = load_server_config(path, redis_url=None)
    log = EventLog(config.state_dir / "events")
    shift = time.time() - 61 * 86400 - START_TS
    for app, events in platform.events.groupby("app_id"):
        log.append(str(app), [{"event_id": f"{app}-{i}", "user_id": u, "type": t, "ts": float(ts + shift),
                               "category": c, "item_id": "x", "received": time.time()}
                              for i, (u, t, c, ts) in enumerate(zip(events["user_id"], events["type"],
                                                                    events["category"], events["ts"]))])
    with TestClient(create_app(config)) as c:
        profiles = platform.profiles
        first = profiles.iloc[0]
        answer = c.put(f"/v1/platform/users/{first['user_id']}/profile", headers={"X-API-Key": PLATFORM_KEY},
                       json={"fields": {k: str(first[k]) for k in profiles.columns if k not in ("user_id", "consent")},
                             "consent": first["consent"]})
        assert answer.status_code == 200, answer.text
        c.app.state.ctx.stores["beauty"].load_profiles(None, profiles.iloc[1:])
        yield c


def _seed(platform, app: str = "beauty", n: int = 120) -> list[str]:
    ev = platform.events
    return list(ev[(ev["app_id"] == app) & (ev["type"] == "purchase")]["user_id"].value_counts().index[:n])


def _assert_no_user_ids(response) -> None:
    found = USER_ID.findall(response.text)
    assert not found, f"{response.request.method} {response.request.url} returned user ids: {found[:5]}"


@pytest.fixture(scope="module")
def audience(client, platform) -> dict:
    answer = client.post("/v1/apps/beauty/audiences", headers={"X-API-Key": APP_KEY},
                         json={"user_ids": _seed(platform), "size": 300})
    assert answer.status_code == 200, answer.text
    _assert_no_user_ids(answer)
    return answer.json()


def test_the_merchant_gets_a_summary_never_the_seed_or_the_members(client, platform, audience):
    assert re.fullmatch(r"aud_[0-9a-f]{16}", audience["audience_id"])
    assert audience["size"] == 300 and audience["lift"]["expected_conversion_lift"] > 1
    for cells in [*audience["insight"]["platform_fields"].values(), audience["insight"]["engaged_categories"]]:
        assert all(v is None or v >= 50 for v in cells.values()), cells  # k-anonymous
        assert sum(v is None for v in cells.values()) != 1  # one hidden cell would follow from the total
    again = client.get(f"/v1/apps/beauty/audiences/{audience['audience_id']}", headers={"X-API-Key": APP_KEY})
    assert again.status_code == 200 and again.json() == audience
    _assert_no_user_ids(again)
    # every other answer of the audience routes: errors, another app's key, another app's audience
    answers = [
        client.post("/v1/apps/beauty/audiences", headers={"X-API-Key": APP_KEY},
                    json={"user_ids": _seed(platform)[:5] + ["p9999999"], "size": 300}),
        client.post("/v1/apps/beauty/audiences", headers={"X-API-Key": APP_KEY},
                    json={"user_ids": _seed(platform), "size": 10}),
        client.get(f"/v1/apps/other/audiences/{audience['audience_id']}", headers={"X-API-Key": OTHER_KEY}),
        client.get(f"/v1/apps/beauty/audiences/{audience['audience_id']}", headers={"X-API-Key": OTHER_KEY}),
        client.get("/v1/apps/beauty/audiences/aud_0000000000000000", headers={"X-API-Key": APP_KEY}),
    ]
    assert [a.status_code for a in answers] == [422, 422, 404, 403, 404]
    for answer in answers:
        _assert_no_user_ids(answer)


def test_only_users_with_the_marketing_scope_are_in_an_audience(client, platform, audience):
    store = AudienceStore(client.app.state.ctx.redis.client)
    members = store.client.smembers(f"mr:platform:aud:{{{audience['audience_id']}}}:members")
    assert len(members) == 300
    consent = dict(zip(platform.profiles["user_id"], platform.profiles["consent"]))
    assert all(MARKETING in consent[m].split("|") for m in members)
    assert not members & set(_seed(platform))  # the seed is never its own audience
    beauty_users = set(platform.events.loc[platform.events["app_id"] == "beauty", "user_id"])
    assert not members & beauty_users  # prospects only, by default
    # the library gives the same rule on any data: nobody without the scope, whatever their score
    view = build_platform_users(platform.profiles.assign(consent="basic|interests"), platform.events,
                                TrainConfig().scope_map())
    assert not view.marketing.any()


def test_placements_need_the_platform_key_and_name_the_users_campaigns(client, audience):
    store = AudienceStore(client.app.state.ctx.redis.client)
    member = sorted(store.client.smembers(f"mr:platform:aud:{{{audience['audience_id']}}}:members"))[0]
    url = f"/v1/platform/placements?user_id={member}"
    assert client.get(url).status_code == 401
    for key in (APP_KEY, OTHER_KEY, ADMIN_KEY, "not-a-key-0123456789"):
        assert client.get(url, headers={"X-API-Key": key}).status_code in (401, 403)
    answer = client.get(url, headers={"X-API-Key": PLATFORM_KEY})
    assert answer.status_code == 200
    placements = answer.json()["placements"]
    assert [(p["campaign"], p["app_id"]) for p in placements] == [(audience["audience_id"], "beauty")]
    outsider = client.get("/v1/platform/placements?user_id=nobody", headers={"X-API-Key": PLATFORM_KEY})
    assert outsider.json()["placements"] == []


def test_a_placement_conversion_is_credited_to_the_campaign_in_analytics(client, audience):
    store = AudienceStore(client.app.state.ctx.redis.client)
    member = sorted(store.client.smembers(f"mr:platform:aud:{{{audience['audience_id']}}}:members"))[1]
    placed = client.get(f"/v1/platform/placements?user_id={member}", headers={"X-API-Key": PLATFORM_KEY})
    rid = placed.json()["placements"][0]["request_id"]
    now = time.time()
    events = [{"event_id": "pl-1", "user_id": member, "type": "impression", "item_id": "i1", "request_id": rid,
               "ts": now - 60},
              {"event_id": "pl-2", "user_id": member, "type": "click", "item_id": "i1", "request_id": rid,
               "ts": now - 50},
              {"event_id": "pl-3", "user_id": member, "type": "purchase", "item_id": "i2", "amount": 88.0,
               "ts": now - 10}]  # bought in the mini-program without a request id: last touch by user
    posted = client.post("/v1/apps/beauty/events", headers={"X-API-Key": APP_KEY}, json={"events": events})
    assert posted.status_code == 200 and posted.json()["accepted"] == 3, posted.text
    report = client.get("/v1/apps/beauty/analytics", headers={"X-API-Key": APP_KEY})
    assert report.status_code == 200
    campaigns = {c["campaign"]: c for c in report.json()["campaigns"]}
    mine = campaigns[audience["audience_id"]]
    assert (mine["impressions"], mine["clicks"], mine["buyers"], mine["purchases"], mine["gmv"]) == (1, 1, 1, 1, 88.0)
    other = client.get("/v1/apps/other/analytics", headers={"X-API-Key": OTHER_KEY}).json()
    assert other["campaigns"] == []
