"""Many apps in one server (issue 21, part 1): apps load on their first request, once however many
requests race for it, are evicted under `[server] max_resident_mb` and load again with the same
answers; each app's tokenizer words stay its own; bundle arrays are mapped read-only and live item
changes still apply; a newly published version of a resident app is swapped in.

Real bundles (the serving fixtures' small trained app), real Redis (the embedded server), no mocks.
"""

from __future__ import annotations

import dataclasses
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from recsys import bundle
from serving.app import create_app
from serving.registry import LoadedApp, ModelRegistry
from tests.serving_fixtures import APP_KEY, OTHER_KEY, build_app, copy_as_new_version, server_config
from vocab.tokenizer import Tokenizer

H = {"X-API-Key": APP_KEY}
H_OTHER = {"X-API-Key": OTHER_KEY}


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_app(tmp_path_factory.mktemp("many-apps"))


def _user(root: Path) -> str:
    return bundle.open_current(root / "artifacts", "shop").json("users")[0]


@pytest.fixture()
def client(shop: Path, tmp_path: Path) -> Iterator[TestClient]:
    config = dataclasses.replace(server_config(shop, tmp_path, None), preload_apps=0)  # every app lazy
    with TestClient(create_app(config)) as c:
        yield c


def test_apps_load_on_their_first_request(client: TestClient, shop: Path) -> None:
    registry: ModelRegistry = client.app.state.ctx.registry
    assert client.get("/readyz").status_code == 200  # ready before any app is loaded
    assert registry.resident("shop") is None and registry.resident("other") is None
    r = client.get("/v1/apps/shop/recommend/home", params={"user_id": _user(shop), "n": 5}, headers=H)
    assert r.status_code == 200 and len(r.json()["items"]) == 5
    assert registry.resident("shop") is not None and registry.resident("other") is None


def test_concurrent_first_requests_load_once(shop: Path) -> None:
    registry = ModelRegistry(shop / "artifacts", ["shop"])
    calls = []
    registry.prepare = calls.append
    start = threading.Barrier(8)
    got: list[LoadedApp | None] = []

    def first_request() -> None:
        start.wait()
        got.append(registry.get("shop"))

    threads = [threading.Thread(target=first_request) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(got) == 8 and got[0] is not None and all(g is got[0] for g in got)
    assert len(calls) == 1 and registry.status()[0]["loads"] == 1


def test_an_app_unknown_at_start_loads_by_id(shop: Path) -> None:
    registry = ModelRegistry(shop / "artifacts", [])
    assert registry.get("other") is not None  # a published bundle is all it needs
    assert registry.get("nobody") is None
    assert "no published model" in next(s for s in registry.status() if s["app_id"] == "nobody")["last_error"]


def test_eviction_under_a_tiny_budget_and_the_same_answers_after(shop: Path, tmp_path: Path) -> None:
    config = server_config(shop, tmp_path, None)
    config = dataclasses.replace(config, max_resident_mb=0.001, preload_apps=0)  # room for one app only
    user = _user(shop)
    with TestClient(create_app(config)) as c:
        registry: ModelRegistry = c.app.state.ctx.registry
        params = {"user_id": user, "n": 10}
        before = c.get("/v1/apps/shop/recommend/home", params=params, headers=H).json()
        search_before = c.get("/v1/apps/shop/search", params={"q": "手机", "n": 5}, headers=H).json()
        assert c.get("/v1/apps/other/recommend/home", params=params, headers=H_OTHER).status_code == 200
        assert registry.resident("shop") is None and registry.resident("other") is not None  # shop evicted
        after = c.get("/v1/apps/shop/recommend/home", params=params, headers=H).json()
        search_after = c.get("/v1/apps/shop/search", params={"q": "手机", "n": 5}, headers=H).json()
        assert registry.resident("shop") is not None and registry.resident("other") is None
        assert [i["item_id"] for i in after["items"]] == [i["item_id"] for i in before["items"]]
        assert [i["score"] for i in after["items"]] == pytest.approx([i["score"] for i in before["items"]])
        assert [i["item_id"] for i in search_after["items"]] == [i["item_id"] for i in search_before["items"]]
        shop_status = next(s for s in registry.status() if s["app_id"] == "shop")
        assert shop_status["loads"] == 2 and shop_status["evictions"] == 1


def test_tokenizer_words_do_not_leak_between_apps() -> None:
    a, b = Tokenizer(["蓝莓派"]), Tokenizer(["芒果派"])
    assert "蓝莓派" in a.tokens("蓝莓派好吃") and "蓝莓派" not in b.tokens("蓝莓派好吃")
    assert "芒果派" in b.tokens("芒果派好吃") and "芒果派" not in a.tokens("芒果派好吃")
    assert a.is_dictionary_word("蓝莓派") and not b.is_dictionary_word("蓝莓派")
    a.add_words(["榴莲酥"])  # a new item's brand, learnt later, stays in its app too
    assert "榴莲酥" in a.tokens("榴莲酥") and "榴莲酥" not in Tokenizer().tokens("榴莲酥")
    assert a.overlay_size < 100  # the overlay holds the app's words, the dictionary is shared
    assert Tokenizer().tokens("华为手机") == ["华为", "手机"]


def test_mapped_arrays_are_read_only_and_live_item_changes_still_apply(client: TestClient, shop: Path) -> None:
    user = _user(shop)
    home = client.get("/v1/apps/shop/recommend/home", params={"user_id": user, "n": 5}, headers=H).json()
    loaded = client.app.state.ctx.registry.resident("shop")
    factors = loaded.models.user_items.data
    assert not factors.flags.writeable and not loaded.models.content_vectors.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        factors[0] = 1.0
    first = home["items"][0]["item_id"]
    put = client.put(f"/v1/apps/shop/items/{first}", json={"visible": False}, headers=H)
    assert put.status_code == 200
    again = client.get("/v1/apps/shop/recommend/home", params={"user_id": user, "n": 5}, headers=H).json()
    assert first not in [i["item_id"] for i in again["items"]]
    # and an app loaded later (a reload after eviction) gets the change replayed from Redis
    fresh = ModelRegistry(shop / "artifacts", ["shop"], prepare=client.app.state.ctx.replay_items).get("shop")
    assert not fresh.catalog.state.visible[fresh.catalog.state.items.index[first]]
    assert np.array_equal(fresh.models.content_vectors, loaded.models.content_vectors)


def test_a_new_version_of_a_resident_app_is_swapped_in(shop: Path, tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"

    shutil.copytree(shop / "artifacts" / "shop", artifacts / "shop")
    registry = ModelRegistry(artifacts, ["shop"])
    old = registry.get("shop")
    assert registry.refresh() == []
    version = copy_as_new_version(artifacts, "shop", old.version)
    bundle.publish(artifacts, "shop", version)
    assert registry.refresh() == ["shop"]
    assert registry.get("shop").version == version and old.version != version


def test_the_first_apps_of_the_config_are_loaded_before_ready(shop: Path, tmp_path: Path) -> None:
    """`[server] preload_apps`: a server of a few merchants answers its first requests warm."""
    config = dataclasses.replace(server_config(shop, tmp_path, None), preload_apps=1)
    with TestClient(create_app(config)) as c:
        registry: ModelRegistry = c.app.state.ctx.registry
        assert registry.resident(next(iter(config.apps))) is not None
        assert all(registry.resident(a) is None for a in list(config.apps)[1:])
