"""GET insight against the synthetic mall's truth: real data files, real Redis (the server's embedded
one), every count k-anonymous or suppressed, consent respected, narrowing refused."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from analytics.disclosure import Suppressor
from analytics.insight import (FREQUENT_ORDERS, NEW_DAYS, RECENT_DAYS, Filters, InsightCache,
                               build_user_table, insight_document)
from offline_training.datafolder import DEFAULT_SCOPES
from offline_training.synth import generate_mall
from serving.app import create_app
from serving.server_config import ServerConfigError, load_server_config
from tests.serving_fixtures import ADMIN_KEY, APP_KEY, OTHER_KEY, server_config

K, ROUND = 50, 10
URL = "/v1/apps/shop/insight"
H = {"X-API-Key": APP_KEY}


@pytest.fixture(scope="module")
def mall(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3,000-user mall (no model trained: the catalog comes from the seed data folder)."""
    root = tmp_path_factory.mktemp("insight")
    generate_mall(root / "data", users=3000, items=300, events=60_000, seed=7, progress=False)
    return root


@pytest.fixture(scope="module")
def client(mall: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with TestClient(create_app(server_config(mall, tmp_path_factory.mktemp("state"), None))) as c:
        yield c


@pytest.fixture(scope="module")
def doc(client: TestClient) -> dict[str, Any]:
    response = client.get(URL, headers=H)
    assert response.status_code == 200, response.text
    return response.json()


def _truth(mall: Path) -> dict[str, pd.DataFrame]:
    return {name: pd.read_parquet(mall / "data" / f"{name}.parquet")
            for name in ("interactions", "merchant_profiles", "platform_profiles", "ground_truth", "items")}


def _app_users(t: dict[str, pd.DataFrame]) -> set[str]:
    return set(t["interactions"]["user_id"]) | set(t["merchant_profiles"]["user_id"])


def _close(shown: int | None, true: int) -> bool:
    """A shown count matches the truth up to rounding."""
    return shown is not None and abs(shown - true) <= ROUND / 2


def _check_cells(cells: list[dict[str, Any]], truth: dict[str, int], named: bool) -> None:
    """Shown cells match the truth; suppressed ones are small or complementary (>= 2 of them,
    holding >= K users together), never shown with a number."""
    hidden = []
    for cell in cells:
        if cell["suppressed"]:
            assert cell["users"] is None
            hidden.append(cell["value"])
        else:
            assert _close(cell["users"], truth[cell["value"]]), (cell, truth.get(cell["value"]))
    small = {v for v, n in truth.items() if 0 < n < K}
    if named:
        assert small <= set(hidden)
    if small:
        assert len(hidden) >= 2 or (not named and hidden)


def _walk_counts(node: Any) -> Iterator[int]:
    """Every user count in a document."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "users" and isinstance(value, int):
                yield value
            else:
                yield from _walk_counts(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk_counts(value)


def _segments(t: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The documented RFM rules, recomputed here from the generator's files."""
    inter = t["interactions"]
    as_of = inter["ts"].max()
    users = pd.DataFrame(index=sorted(_app_users(t)))
    buys = inter[inter["event"] == "purchase"].groupby("user_id")["ts"].agg(["size", "max"])
    orders = buys["size"].reindex(users.index).fillna(0)
    recent = ((as_of - buys["max"].reindex(users.index)) / 86400 <= RECENT_DAYS).to_numpy()
    active = users.index.isin(inter["user_id"])
    users["segment"] = np.select(
        [(orders >= FREQUENT_ORDERS) & recent, orders >= FREQUENT_ORDERS, (orders > 0) & recent, orders > 0, active],
        ["champions", "at_risk", "promising", "lapsed", "browsers"], "profile_only")
    first = inter.groupby("user_id")["ts"].min().reindex(users.index)
    last = inter.groupby("user_id")["ts"].max().reindex(users.index)
    window = as_of - NEW_DAYS * 86400
    users["lifecycle"] = np.select([first >= window, last >= window], ["new", "returning"], "inactive")
    return users


def test_every_count_shown_is_at_least_k_or_zero(doc):
    assert doc["k_min"] == K and doc["round_to"] == ROUND and not doc["suppressed"]
    counts = list(_walk_counts(doc))
    assert len(counts) > 30
    assert all(n == 0 or n >= K for n in counts), sorted(counts)[:5]
    assert all(n % ROUND == 0 for n in counts)


def test_merchant_fields_match_the_generated_profiles(doc, mall):
    t = _truth(mall)
    merchant = t["merchant_profiles"]
    for name in ("member_level", "store", "signup_channel"):
        field = doc["merchant_profile"][name]
        assert _close(field["users"], len(merchant))
        _check_cells(field["values"], merchant[name].value_counts().to_dict(), named=True)


def test_platform_fields_count_only_consented_app_users(doc, mall):
    t = _truth(mall)
    platform = t["platform_profiles"]
    mine = platform[platform["user_id"].isin(_app_users(t))]
    assert len(mine) < len(platform) - 100  # the mall has platform users who never visited this app
    for scope, columns in DEFAULT_SCOPES.items():
        granted = mine[mine["consent"].str.split("|").map(lambda g, s=scope: s in g)]
        for column in columns:
            field = doc["platform_profile"][column]
            if column == "interests":
                values = granted[column].str.split("|").explode()
                truth = values[values.fillna("") != ""].value_counts().to_dict()
                assert _close(field["users"], int((granted[column].fillna("") != "").sum()))
            else:
                truth = granted[column].astype(str).value_counts().to_dict()
                assert _close(field["users"], len(granted))
            _check_cells(field["values"], truth, named=False)
            if scope != "basic":  # the test means something: counting without consent would differ
                assert abs(field["users"] - len(mine)) > 10 * ROUND, column
    assert doc["platform_profile"]["age_band"]["users"] < len(platform) - 100  # non-users never counted


def test_segments_and_lifecycle_match_the_generated_events(doc, mall):
    t = _truth(mall)
    users = _segments(t)
    assert _close(doc["users"], len(users))
    sizes = users["segment"].value_counts().to_dict()
    shown = {s["segment"]: s for s in doc["segments"]}
    _check_cells([{"value": k, **v} for k, v in shown.items()], {k: sizes.get(k, 0) for k in shown}, named=True)
    assert shown["browsers"]["users"] and shown["promising"]["users"]  # the big ones are shown
    life = users["lifecycle"].value_counts().to_dict()
    _check_cells(doc["lifecycle"], {c["value"]: life.get(c["value"], 0) for c in doc["lifecycle"]}, named=True)
    # buyers' RFM means: promising bought more recently than lapsed, by definition and in the data
    assert shown["promising"]["avg_recency_days"] <= RECENT_DAYS < shown["lapsed"]["avg_recency_days"]


def test_top_categories_follow_the_users_true_interests(doc, mall):
    """The generator gives each user interest weights over top categories (ground_truth.parquet):
    each segment's most engaged category is among the segment's three strongest true interests."""
    t = _truth(mall)
    users = _segments(t)
    weights = t["ground_truth"].set_index("user_id")
    checked = 0
    for seg in doc["segments"]:
        if not seg.get("top_categories"):
            continue
        members = users.index[users["segment"] == seg["segment"]]
        strength = weights.loc[members, [c for c in weights.columns if c.startswith("w_")]].sum()
        strongest = {c.removeprefix("w_") for c in strength.sort_values(ascending=False).index[:3]}
        assert seg["top_categories"][0]["category"] in strongest, (seg["segment"], seg["top_categories"], strongest)
        counts = [c["users"] for c in seg["top_categories"]]
        assert counts == sorted(counts, reverse=True) and min(counts) >= K
        checked += 1
    assert checked >= 2


def test_narrowing_filters_cannot_single_out_anyone(client, mall):
    """Every segment × member level: either a k-anonymous answer, or nothing at all. Small groups —
    and groups whose complement in a broader answer is small — answer suppressed with no counts."""
    t = _truth(mall)
    users = _segments(t).join(t["merchant_profiles"].set_index("user_id")["member_level"])
    refused = 0
    for segment, level in itertools.product(["champions", "at_risk", "promising", "lapsed", "browsers"],
                                            ["none", "silver", "gold", "platinum"]):
        r = client.get(URL, headers=H, params={"segment": segment, "field": f"member_level={level}"})
        assert r.status_code == 200, r.text
        body = r.json()
        n = int(((users["segment"] == segment) & (users["member_level"] == level)).sum())
        if body["suppressed"]:
            refused += 1
            assert body["users"] is None and not body["segments"] and not body["platform_profile"]
            assert list(_walk_counts(body)) == []
        else:
            assert n >= K and all(c == 0 or c >= K for c in _walk_counts(body))
        if n < K:
            assert body["suppressed"], (segment, level, n)
    assert refused >= 3
    # one user's own combination, narrowed as far as the API goes: nothing comes back
    one = users[users["segment"] == "at_risk"].dropna(subset=["member_level"])
    combo = one.groupby("member_level").size().idxmin()
    r = client.get(URL, headers=H, params={"segment": "at_risk", "field": f"member_level={combo}"}).json()
    assert r["suppressed"] and list(_walk_counts(r)) == []
    assert client.get(URL, headers=H, params={"field": "member_level=nobody"}).json()["suppressed"]


def test_filters_that_make_no_sense_are_422(client):
    for params in ({"segment": "whales"}, {"field": "member_level"}, {"field": "=gold"}):
        r = client.get(URL, headers=H, params=params)
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request", params


def test_keys_and_cache(client, doc):
    assert client.get(URL).status_code == 401
    assert client.get(URL, headers={"X-API-Key": OTHER_KEY}).status_code == 403
    admin = client.get(URL, headers={"X-API-Key": ADMIN_KEY})
    assert admin.status_code == 200
    assert admin.json()["computed_at"] == doc["computed_at"]  # one computation per data version
    assert client.get("/v1/apps/nope/insight", headers={"X-API-Key": ADMIN_KEY}).status_code == 404


# --- the module below the route -------------------------------------------------------------------

def _small_world(n: int = 120) -> dict[str, Any]:
    users = [f"u{i:03d}" for i in range(n)]
    items = pd.DataFrame({"item_id": ["a", "b"], "category": ["数码/手机", "食品/零食"], "price": [100.0, 10.0]})
    training = pd.DataFrame({"user_id": users, "item_id": ["a"] * n, "event": ["click"] * n,
                             "ts": np.arange(n) * 1000 + 1_700_000_000, "value": 1.0})
    platform = pd.DataFrame({"user_id": users, "consent": ["basic"] * (n - 1) + ["basic|location"],
                             "age_band": ["25-34"] * n, "region": ["华东"] * n})
    return {"users": users, "items": items, "training": training, "platform": platform,
            "merchant": pd.DataFrame({"user_id": users[:60], "member_level": ["gold"] * 60})}


def test_a_field_outside_a_users_consent_is_never_counted():
    w = _small_world()
    table = build_user_table(w["training"], [], w["items"], w["merchant"], w["platform"], DEFAULT_SCOPES)
    regions = table.keys[table.keys["key"].str.startswith("p.region=")]
    assert list(regions["user_id"]) == ["u119"]  # the one user who granted `location`
    doc = insight_document(table, Suppressor(K, 1))
    assert doc["platform_profile"]["region"] == {"users": None, "suppressed": True, "multi_valued": False,
                                                 "values": []}
    assert doc["platform_profile"]["age_band"]["users"] == 120


def test_logged_purchases_are_valued_by_amount_or_catalog_price():
    w = _small_world()
    logged = [{"event_id": f"e{i}", "user_id": u, "type": "purchase", "item_id": "a", "ts": 1_800_000_000.0,
               "value": 2.0, "amount": 150.0 if i % 2 else None} for i, u in enumerate(w["users"])]
    logged.append(dict(logged[0]))  # the same event_id again: counted once
    table = build_user_table(w["training"], logged, w["items"], w["merchant"], w["platform"], DEFAULT_SCOPES)
    spend = table.users.set_index("user_id")["spend"]
    assert spend["u000"] == 200.0 and spend["u001"] == 150.0  # 2 × catalog 100; the amount paid
    assert (table.users["segment"] == "promising").all() and table.as_of == 1_800_000_000.0


def test_complementary_suppression_hides_a_second_cell():
    rule = Suppressor(50, 1)
    assert rule.cells({"a": 500, "b": 60, "c": 3}, partition=True) == {"a": 500, "b": None, "c": None}
    assert rule.cells({"a": 500, "b": 60, "c": 3}, partition=False) == {"a": 500, "b": 60, "c": None}
    assert rule.cells({"a": 500, "b": 0, "c": 20, "d": 40}, partition=True) == {"a": 500, "b": 0, "c": None, "d": None}
    assert Suppressor(50, 10).shown(125) == 130


def test_the_cache_recomputes_for_a_new_data_version_only():
    w = _small_world()
    runs = []

    def compute():
        runs.append(1)
        return build_user_table(w["training"], [], w["items"], w["merchant"], w["platform"], DEFAULT_SCOPES)

    cache, rule = InsightCache(refresh_s=3600), Suppressor()
    for version, log in (("v1", 1), ("v1", 1), ("v1", 2), ("v2", 2)):
        cache.document("shop", (version,), log, compute, rule, Filters())
    assert len(runs) == 2  # new events within refresh_s: the cached table; a new model: recomputed
    cache.refresh_s = 0  # new events, and the cached table is old enough: recomputed
    cache.document("shop", ("v2",), 3, compute, rule, Filters())
    assert len(runs) == 3


@pytest.mark.parametrize("table, message", [
    ("k_min = 1", "k_min: expected a whole number >= 2"),
    ("k_min = 20\nround_to = 30", "round_to: expected a whole number from 1 to k_min (20)"),
    ("kmin = 5", "unknown key 'kmin'"),
])
def test_privacy_table_is_checked(tmp_path, table, message):
    config = server_config(tmp_path, tmp_path, None)
    path = tmp_path / "minirec.toml"
    path.write_text(path.read_text() + f"\n[privacy]\n{table}\n")
    with pytest.raises(ServerConfigError, match=r"\[privacy\] " + message.replace("(", r"\(").replace(")", r"\)")):
        load_server_config(path)
    assert config.privacy.k_min == 50
    path.write_text(path.read_text().replace(table, "k_min = 80\nround_to = 5"))
    assert load_server_config(path).privacy.k_min == 80
