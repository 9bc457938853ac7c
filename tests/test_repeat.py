"""Repeat purchases and the merchant's future: the repeat model, the split in time, its tuning, and
the buy-again shelf and home-feed mix through the real API."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from offline_training.datafolder import load_data_folder
from offline_training.evaluate import tune
from offline_training.splits import NoTimeToSplit, temporal, temporal_cut
from offline_training.train import train
from recsys.config import RepeatConfig, load_config
from recsys.matrix import SECONDS_PER_DAY, IdMap
from recsys.repeat import RepeatModel, repeat_scores
from serving.app import create_app
from tests.serving_fixtures import APP_KEY, FAST, build_app, server_config

H = {"X-API-Key": APP_KEY}
DAY = SECONDS_PER_DAY
T0 = 1_700_000_000.0


def _frame(rows: list[tuple[str, str, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "item_id", "event", "ts"]).assign(value=1.0)


def test_repeat_model_counts_purchases_and_learns_each_items_cycle() -> None:
    rows = [("u1", "milk", "purchase", T0 + d * DAY) for d in (0, 7, 14, 21)]
    rows += [("u2", "milk", "purchase", T0 + d * DAY) for d in (1, 8)]
    rows += [("u1", "phone", "purchase", T0), ("u1", "phone", "view", T0 + 3 * DAY)]
    rows += [("u2", "milk", "purchase", T0 + 8 * DAY + 60)]  # same day: one order, not a repeat
    users, items = IdMap.of(["u1", "u2"]), IdMap.of(["milk", "phone", "tv"])
    model = RepeatModel.fit(_frame(rows), users, items)
    assert model.counts[0, 0] == 4 and model.counts[0, 1] == 1 and model.counts[1, 0] == 3
    assert model.last_ts[0, 0] == T0 + 21 * DAY
    assert model.cycle_days[0] == pytest.approx(7.0)  # milk: every gap is a week
    assert model.stats["purchase_pairs"] == 3 and model.stats["repeat_pairs"] == 2
    assert model.stats["repeat_rate"] == pytest.approx(2 / 3, abs=1e-3)


def test_repeat_score_orders_by_frequency_recency_and_cycle() -> None:
    count = np.array([5.0, 1.0])
    last = np.array([T0, T0])
    cycle = np.array([0.0, 0.0])
    plain = repeat_scores(count, last, cycle, T0 + DAY, RepeatConfig())
    assert plain[0] > plain[1]  # bought five times beats once
    recent = repeat_scores(np.array([2.0, 2.0]), np.array([T0 - 60 * DAY, T0]), cycle, T0 + DAY,
                           RepeatConfig(half_life_days=7.0))
    assert recent[1] > recent[0]  # with a half-life, the recent purchase wins
    due = repeat_scores(np.array([2.0, 2.0]), np.array([T0, T0]), np.array([7.0, 60.0]), T0 + 7 * DAY,
                        RepeatConfig(cycle_weight=1.0))
    assert due[0] > due[1]  # a week after buying, the weekly item is due, the bimonthly one is not


def test_temporal_split_keeps_repeats_and_refuses_data_without_time() -> None:
    frame = _frame([("u1", "a", "purchase", T0), ("u1", "a", "purchase", T0 + 20 * DAY),
                    ("u2", "b", "view", T0 + 2 * DAY), ("u3", "c", "purchase", T0 + 25 * DAY)])
    split = temporal(frame, np.ones(len(frame), dtype=bool), 0, cut=T0 + 10 * DAY)
    assert len(split.train) == 2
    assert set(map(tuple, split.test.to_numpy())) == {("u1", "a"), ("u3", "c")}  # the repeat of a is a test pair
    flat = frame.assign(ts=T0)
    with pytest.raises(NoTimeToSplit, match="span 0.0 days"):
        temporal_cut(flat, 30.0, 7.0)
    assert temporal_cut(frame, 30.0, 7.0) == pytest.approx(T0 + 25 * DAY - 25 / 4 * DAY)


def _repeat_shop(tmp: Path, repeats: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A grocery where half the items are staples each user rebuys weekly (or, `repeats` false, nobody
    buys anything twice), over 12 weeks."""
    rng = np.random.default_rng(0)
    items = pd.DataFrame({"item_id": [f"i{i:03d}" for i in range(80)], "title": [f"商品 {i}" for i in range(80)],
                          "category": ["食品/粮油" if i < 40 else "数码/配件" for i in range(80)]})
    rows = []
    for u in range(400):
        staples = rng.choice(40, size=3, replace=False)
        start = rng.integers(0, 7)
        for week in range(12):
            for s in staples if repeats else []:
                rows.append((f"u{u:03d}", f"i{s:03d}", "purchase", T0 + (start + 7 * week + rng.integers(0, 2)) * DAY))
            other = rng.integers(40, 80) if repeats else rng.integers(0, 80)
            rows.append((f"u{u:03d}", f"i{other:03d}", "purchase", T0 + (start + 7 * week + 3) * DAY))
    inter = _frame(rows)
    if not repeats:
        inter = inter.drop_duplicates(["user_id", "item_id"])
    return items, inter


@pytest.mark.slow
@pytest.mark.parametrize("repeats", [True, False])
def test_tuning_on_time_mixes_repurchases_only_where_people_buy_again(tmp_path: Path, repeats: bool) -> None:
    items, inter = _repeat_shop(tmp_path, repeats)
    folder = tmp_path / "data"
    folder.mkdir()
    items.to_csv(folder / "items.csv", index=False)
    inter.to_csv(folder / "interactions.csv", index=False)
    data = load_data_folder(folder)
    cfg = load_config(None)
    cfg.tuning.budget_seconds, cfg.tuning.budget_seconds_per_million = 6.0, 0.0
    cfg.tuning.min_validation_users = 20
    tuned, outcome = tune(data, data.interactions, cfg, cold=False, progress=False)
    assert outcome.protocol == "temporal"
    assert outcome.repeat is not None
    if repeats:
        assert tuned.repeat.mix_weight > 0
        assert outcome.repeat.home > 1.1 * outcome.repeat.model_alone
        # (not ≥ buy again here: the feed leaves out what was bought the day before the cut, rebought next week)
        assert outcome.repeat.home > 2 * outcome.repeat.best_sellers
    else:
        assert tuned.repeat.mix_weight == 0
        assert outcome.repeat.stats["repeat_pairs"] == 0


@pytest.mark.slow
def test_data_without_time_says_so_and_validates_at_random(tmp_path: Path) -> None:
    items, inter = _repeat_shop(tmp_path, True)
    folder = tmp_path / "data"
    folder.mkdir()
    items.to_csv(folder / "items.csv", index=False)
    inter.assign(ts=T0).to_csv(folder / "interactions.csv", index=False)
    (tmp_path / "c.toml").write_text("[tuning]\nbudget_seconds = 4.0\nbudget_seconds_per_million = 0.0\n"
                                     "min_validation_users = 20\n[hybrid]\nepochs = 2\n")
    result = train(folder, tmp_path / "artifacts", "flat", config=tmp_path / "c.toml", progress=False)
    assert result.tuning.protocol == "stratified"
    assert any("not on time" in s and "span 0.0 days" in s for s in result.tuning.skipped)
    assert [r["protocol"] for r in result.reports] == ["stratified", "cold-users"]


# --- through the API -------------------------------------------------------------------------------
MIXED = FAST + "[repeat]\nmix_weight = 5.0\n"


@pytest.fixture(scope="module")
def mixed_shop(tmp_path_factory) -> Path:
    """The serving tests' small mall, trained with past purchases mixed into the home feed."""
    root = build_app(tmp_path_factory.mktemp("mixed"))
    (root / "mixed.toml").write_text(MIXED)
    shutil.rmtree(root / "artifacts" / "shop")
    train(root / "data", root / "artifacts", "shop", config=load_config(root / "mixed.toml"), progress=False)
    return root


def _buyer(root: Path) -> tuple[str, set[str]]:
    inter = pd.read_parquet(root / "data" / "interactions.parquet")
    items = pd.read_parquet(root / "data" / "items.parquet")
    sellable = set(items.loc[items["visible"].astype(bool) & (items["stock"] > 0) & (items["audience"] == ""),
                             "item_id"])
    buys = inter[(inter["event"] == "purchase") & inter["item_id"].isin(sellable)]
    user = buys["user_id"].value_counts().index[0]
    return user, set(buys.loc[buys["user_id"] == user, "item_id"])


@pytest.mark.slow
def test_buy_again_shelf_and_the_home_feeds_repurchases(mixed_shop: Path, tmp_path: Path) -> None:
    user, bought = _buyer(mixed_shop)
    with TestClient(create_app(server_config(mixed_shop, tmp_path, None))) as c:
        shelf = c.get("/v1/apps/shop/recommend/buy-again", params={"user_id": user, "n": 50}, headers=H).json()
        assert shelf["strategy"] == "buy-again" and shelf["request_id"].split(".")[1] == "buy-again"
        assert {i["item_id"] for i in shelf["items"]} == bought
        assert all(i["reason"].startswith("you bought this") for i in shelf["items"])
        scores = [i["score"] for i in shelf["items"]]
        assert scores == sorted(scores, reverse=True)
        home = c.get("/v1/apps/shop/recommend/home", params={"user_id": user, "n": 20}, headers=H).json()
        assert home["strategy"].endswith("+repeat")
        assert bought & {i["item_id"] for i in home["items"]}  # a weight of 5 puts past purchases on the page
        fresh = next(i["item_id"] for i in home["items"] if i["item_id"] not in bought)
        event = {"event_id": "just-bought", "user_id": user, "type": "purchase", "item_id": fresh}
        assert c.post("/v1/apps/shop/events", json={"events": [event]}, headers=H).json()["accepted"] == 1
        again = c.get("/v1/apps/shop/recommend/home", params={"user_id": user, "n": 50}, headers=H).json()
        assert fresh not in {i["item_id"] for i in again["items"]}  # bought a moment ago: not rebought yet
        shelf = c.get("/v1/apps/shop/recommend/buy-again", params={"user_id": user, "n": 50}, headers=H).json()
        assert fresh in {i["item_id"] for i in shelf["items"]}  # but it is on the buy-again shelf at once
        for who in ("nobody-like-this", None):
            params = {"user_id": who} if who else {}
            empty = c.get("/v1/apps/shop/recommend/buy-again", params=params, headers=H)
            assert empty.status_code == 200 and empty.json()["items"] == [] and empty.json()["note"]


@pytest.mark.slow
def test_a_merchants_rule_still_excludes_purchases(mixed_shop: Path, tmp_path: Path) -> None:
    user, bought = _buyer(mixed_shop)
    scenes = "\n[apps.shop.scenes.home]\nexclude_purchased = true\n"
    with TestClient(create_app(server_config(mixed_shop, tmp_path, None, scenes))) as c:
        home = c.get("/v1/apps/shop/recommend/home", params={"user_id": user, "n": 50}, headers=H).json()
        assert not bought & {i["item_id"] for i in home["items"]}


def test_first_visits_without_segments_get_the_trend_weighted_best_sellers(tmp_path: Path) -> None:
    from offline_training.fit import fit_models
    from offline_training.synth import generate_mall

    generate_mall(tmp_path / "mall", users=400, items=120, events=12_000, seed=3, progress=False)
    data = load_data_folder(tmp_path / "mall")
    cfg = load_config(None)
    cfg.coldstart.hybrid_weight, cfg.popularity.half_life_days = 0.0, 5.0
    keys = [["p.age_band=18-24", "p.gender=F"], ["p.age_band=55+", "p.gender=M"]]
    segmented = fit_models(data, cfg, progress=False, parts=frozenset())
    assert not np.allclose(*[segmented.first_visit_scores(k) for k in keys])  # segments differ
    cfg.coldstart.segments = False
    plain = fit_models(data, cfg, progress=False, parts=frozenset())
    a, b = (plain.first_visit_scores(k) for k in keys)
    assert np.allclose(a, b)  # everyone gets the same list
    engaged = plain.kernel.signature_items.toarray().ravel()
    assert not np.allclose(engaged, np.round(engaged))  # engagements fade with the half-life: not plain counts
