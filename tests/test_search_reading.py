"""What shoppers type: analyses (words, bigrams, chars), pinyin, typos, homophones, did-you-mean.

Unit tests of the tokenizer and the query reader on a small catalog, then the search route of a
small trained app (real bundle, real Redis) answering pinyin, typo and homophone queries.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from recsys.config import ConfigError, load_config
from search.interpret import QueryReader, ascii_words, max_edits
from search.item_index import build_item_index, catalog_words, query_analysis, resolve_analysis
from vocab.tokenizer import Tokenizer, check_analysis
from serving.app import create_app
from tests.redis_fixtures import EXTERNAL_URL
from tests.serving_fixtures import APP_KEY, build_app, server_config

H = {"X-API-Key": APP_KEY}


# ------------------------------------------------------------------------------------ analysis
def test_analyses_add_bigrams_and_characters_of_chinese_runs_only():
    tok = Tokenizer()
    assert tok.tokens("华为手机 Pro", ("bigrams",)) == ["华为", "为手", "手机", "pro"]
    assert tok.tokens("华为手机", ("chars",)) == ["华", "为", "手", "机"]
    words = tok.tokens("华为手机")
    assert tok.tokens("华为手机", ("words", "bigrams")) == words + ["华为", "为手", "手机"]
    assert tok.tokens("鞋 Nike", ("bigrams", "chars")) == ["鞋", "nike"]  # a lone character once, not twice
    with pytest.raises(ValueError, match="subset of"):
        check_analysis(["words", "trigrams"], "search.analysis.title")
    assert check_analysis(["chars", "words"], "x") == ("words", "chars")


def test_the_search_config_is_checked(tmp_path: Path):
    path = tmp_path / "c.toml"
    path.write_text('[search]\nanalysis = {title = ["words", "ngrams"]}\n')
    with pytest.raises(ConfigError, match="search.analysis.title"):
        load_config(path)
    path.write_text('[search]\nfield_weights = {body = 1.0}\n')
    with pytest.raises(ConfigError, match="unknown fields"):
        load_config(path)
    path.write_text('[search]\nanalysis = {title = ["bigrams"]}\nk1 = 0.9\n')
    cfg = load_config(path)
    assert resolve_analysis(cfg.search.analysis)["title"] == ("bigrams",) and cfg.search.k1 == 0.9


def test_bigrams_match_where_segmentation_differs():
    """A title jieba segments one way still matches a query it segments another way."""
    items = pd.DataFrame({"item_id": ["a", "b", "c"], "title": ["珀莱雅双抗精华", "蓝月亮洗衣液", "洁客猫砂"],
                          "category": ["美妆", "日化", "宠物"]})
    tok = Tokenizer()
    assert "莱雅" not in tok.tokens("珀莱雅双抗精华")  # jieba: 珀莱雅, 双抗, 精华
    words = build_item_index(items, tok, resolve_analysis({"title": ["words"]}))
    assert len(words.search(tok.tokens("莱雅"), 2)[0]) == 0
    analysis = resolve_analysis({"title": ["words", "bigrams"]})
    both = build_item_index(items, tok, analysis)
    ids, _ = both.search(tok.tokens("莱雅", query_analysis(analysis)), 2)
    assert ids.tolist() == [0]


# ------------------------------------------------------------------------------------ reader
@pytest.fixture(scope="module")
def reader() -> tuple[QueryReader, set[str]]:
    items = pd.DataFrame({
        "item_id": [f"i{k}" for k in range(8)],
        "title": ["华为 Mate 60 手机", "华为 手机壳", "户外 帐篷", "户外 跑步鞋", "Apple iPhone 15 手机", "迪卡侬 骑行 头盔",
                  "adidas 跑鞋", "感冒 灵 颗粒"],
        "brand": ["华为", "华为", "", "", "Apple", "迪卡侬", "adidas", ""],
        "category": ["数码/手机", "数码/配件", "运动/户外", "运动/跑步", "数码/手机", "运动/骑行", "运动/跑步", "医药/感冒"]})
    tok = Tokenizer(["华为", "迪卡侬"])
    analysis = resolve_analysis({f: ["words", "bigrams", "chars"] for f in ("title", "brand", "category", "tags")})
    index = build_item_index(items, tok, analysis)
    known = set(index.spans)
    return QueryReader(catalog_words(items, tok), ascii_words(index.vocab, np.diff(index.indptr)), tok,
                       bigrams=True), known


@pytest.mark.parametrize(("query", "read"), [
    ("shouji", "手机"), ("huawei shouji", "华为 手机"), ("huaweishouji", "华为 手机"), ("pao bu xie", "跑步 鞋"),
    ("dikanong", "迪卡侬"), ("hw手机", "华为 手机"), ("hwsj", "华为 手机"), ("ganmao", "感冒"),
])
def test_pinyin_reads_as_the_catalogs_words(reader, query, read):
    qr, known = reader
    reading = qr.read(query, known.__contains__, lambda w, others: sum(o in ("手机",) for o in others) * (w == "华为"))
    assert reading is not None and reading.text == read and not reading.corrected


@pytest.mark.parametrize("query", ["iphone", "adidas 跑鞋", "华为手机", "华为 mate 60", "手机"])
def test_what_the_catalog_has_is_searched_as_typed(reader, query):
    qr, known = reader
    assert qr.read(query, known.__contains__) is None


def test_typos_are_corrected_within_meilisearchs_edit_budget(reader):
    qr, known = reader
    assert [max_edits(w) for w in ("ipad", "iphne", "iphoneee", "iphoneeee")] == [0, 1, 1, 2]
    assert qr.read("iphnoe", known.__contains__).text == "iphone"  # a swap is one edit
    assert qr.read("addidas 跑鞋", known.__contains__).text == "adidas 跑鞋"
    assert qr.read("iphnoe", known.__contains__).corrected
    assert qr.read("zzzzzz", known.__contains__) is None  # nothing close: left to the fallback


def test_homophones_only_where_the_catalog_never_saw_the_characters(reader):
    qr, known = reader
    fixed = qr.read("华为手几", known.__contains__)
    assert fixed is not None and fixed.text == "华为 手机" and fixed.corrected
    assert qr.read("华为守机", known.__contains__).text == "华为 手机"
    assert qr.read("户外帐篷", known.__contains__) is None
    # "跑鞋" is a pair the catalog has (adidas 跑鞋): never "corrected" into a homophone
    assert qr.read("跑鞋", known.__contains__) is None


# ------------------------------------------------------------------------------------ route
@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_app(tmp_path_factory.mktemp("reading-shop"))


@pytest.fixture(scope="module")
def client(shop: Path, tmp_path_factory: pytest.TempPathFactory, external_redis) -> Iterator[TestClient]:
    root = shop
    external_redis.client.flushdb()
    with TestClient(create_app(server_config(root, tmp_path_factory.mktemp("reading-state"), EXTERNAL_URL))) as c:
        yield c


def search(c: TestClient, **params) -> dict:
    response = c.get("/v1/apps/shop/search", params=params, headers=H)
    assert response.status_code == 200, response.text
    return response.json()


def test_route_reads_pinyin_and_says_so(client):
    body = search(client, q="huawei shouji", n=5)  # read as the searched phrase 华为手机 or as two words
    assert body["interpreted_as"].replace(" ", "") == "华为手机" and body["corrected_from"] is None
    assert not body["fallback"]
    assert all("华为" in i["title"] for i in body["items"]) and "手机" in body["items"][0]["title"]
    mixed = search(client, q="hw手机", n=5)
    assert mixed["interpreted_as"].replace(" ", "") == "华为手机" and "华为" in mixed["items"][0]["title"]
    plain = search(client, q="adidas", n=5)
    assert plain["interpreted_as"] is None and "adidas" in plain["items"][0]["title"].lower()


def test_route_corrects_typos_and_homophones_with_exact_matches_first(client):
    typo = search(client, q="adidsa", n=5)
    assert typo["interpreted_as"] == "adidas" and typo["corrected_from"] == "adidsa"
    assert typo["items"] and all("adidas" in i["title"].lower() for i in typo["items"])
    body = search(client, q="华为手几", n=10)
    assert body["corrected_from"] == "华为手几" and body["interpreted_as"] == "华为 手机"
    assert "手机" in body["items"][0]["title"]
    # an item whose text has the query exactly as typed ranks above every corrected match
    put = client.put("/v1/apps/shop/items/typed-1", headers=H,
                     json={"title": "华为手几 支架 特价", "category": "数码/配件", "brand": "", "price": 9.9, "stock": 5})
    assert put.status_code == 200, put.text
    body = search(client, q="华为手几", n=10)
    assert body["items"][0]["item_id"] == "typed-1" and body["corrected_from"] == "华为手几"
    assert any("手机" in i["title"] for i in body["items"][1:])


def test_no_good_match_offers_did_you_mean(client):
    body = search(client, q="huaweii", n=5)
    assert body["fallback"] is True and "华为" in body["did_you_mean"]
    assert search(client, q="华为", n=5)["did_you_mean"] == []


def test_a_known_users_shading_comes_from_their_history_before_any_live_event(client, shop):
    """Issue 11: with nothing in Redis for the user, shading still knows what the models know."""
    events = pd.read_parquet(shop / "data" / "interactions.parquet")
    items = pd.read_parquet(shop / "data" / "items.parquet").set_index("item_id")["category"]
    user = events["user_id"].value_counts().index[0]
    seen = set(items[events.loc[events["user_id"] == user, "item_id"]])
    body = client.get("/v1/apps/shop/search/shading", params={"user_id": user}, headers=H).json()
    assert body["source"] == "history" and body["reason"].startswith("you often look at ")
    assert body["reason"].removeprefix("you often look at ") in seen
    chips = client.get("/v1/apps/shop/search/discover", params={"user_id": user}, headers=H).json()["items"]
    assert any(c["reason"].startswith("popular in ") for c in chips)
    anonymous = client.get("/v1/apps/shop/search/shading", headers=H).json()
    assert anonymous["source"] == "hot"


def test_reading_can_be_switched_off_per_app(client, tmp_path):
    settings = Path(client.app.state.ctx.config.artifacts) / "shop" / "search.toml"
    settings.write_text("interpret = false\n")
    try:
        state = client.app.state.ctx.registry.get("shop").search_settings.file  # the app's search.toml
        state._checked = float("-inf")  # re-read now rather than within a second
        assert search(client, q="huawei shouji", n=5)["interpreted_as"] is None
    finally:
        settings.unlink()
        state._checked = float("-inf")
    assert search(client, q="huawei shouji", n=5)["interpreted_as"] is not None
