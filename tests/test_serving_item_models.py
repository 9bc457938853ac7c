"""The HTTP API serving an item-item model (EASE): the same routes, fold-in by history × W."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from tests.serving_fixtures import APP_KEY, build_app, server_config

H = {"X-API-Key": APP_KEY}


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> Path:
    return build_app(tmp_path_factory.mktemp("ease-shop"), family="ease")


@pytest.fixture
def client(shop, tmp_path) -> TestClient:
    with TestClient(create_app(server_config(shop, tmp_path, None))) as c:
        yield c


def home(c: TestClient, user: str, n: int = 10) -> dict:
    r = c.get("/v1/apps/shop/recommend/home", params={"user_id": user, "n": n}, headers=H)
    assert r.status_code == 200, r.text
    return r.json()


def test_known_users_are_served_and_explained_by_ease(client, shop):
    inter = pd.read_parquet(shop / "data" / "interactions.parquet")
    user = inter["user_id"].value_counts().index[0]
    body = home(client, user)
    assert body["strategy"] == "ease" and len(body["items"]) == 10
    assert any(i["reason"].startswith("because you") for i in body["items"])
    history = set(inter.loc[inter["user_id"] == user, "item_id"])
    assert not history & {i["item_id"] for i in body["items"]}
    top = body["items"][0]["item_id"]
    event = {"event_id": "e-1", "user_id": user, "type": "purchase", "item_id": top}
    assert client.post("/v1/apps/shop/events", json={"events": [event]}, headers=H).json()["accepted"] == 1
    after = home(client, user)
    assert after["strategy"] == "ease+recent" and top not in {i["item_id"] for i in after["items"]}


def test_a_new_users_views_fold_into_their_feed(client, shop):
    items = pd.read_parquet(shop / "data" / "items.parquet")
    category = items["category"].value_counts().index[3]
    viewed = items[items["category"] == category]["item_id"].head(3).tolist()
    events = [{"event_id": f"v-{i}", "user_id": "fresh", "type": "view", "item_id": item}
              for i, item in enumerate(viewed)]
    assert client.post("/v1/apps/shop/events", json={"events": events}, headers=H).json()["accepted"] == 3
    body = home(client, "fresh")
    assert body["strategy"] == "recent"
    assert not set(viewed) & {i["item_id"] for i in body["items"]}
    top_level = category.split("/")[0]
    assert sum(i["category"].startswith(top_level) for i in body["items"]) >= 5
