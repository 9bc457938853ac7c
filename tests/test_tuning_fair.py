"""A fair search for expensive families: EASE searches λ on a proxy catalogue when a full solve is
a large part of its budget, and only full trials reach the finals (real data files, real models)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from offline_training.datafolder import load_data_folder
from offline_training.tuning import FINALS_SHARE, fit_trial, proxy_catalogue, run_trial, trial_scorer, tune_known
from offline_training.validation import Validation, carve_validation
from recsys.config import TrainConfig
from recsys.item_models import ItemItemModel
from tests.factories import write_csv_folder


def tastes_folder(folder: Path, users: int = 2400, items: int = 2400, tastes: int = 40, per_user: int = 12,
                  seed: int = 0) -> Path:
    """Each user buys from one of `tastes` groups of items (Zipf within it): a catalogue above
    `tuning.MIN_PROXY_CATALOGUE` items, with something to personalize."""
    rng = np.random.default_rng(seed)
    size = items // tastes
    p = 1.0 / np.arange(1, size + 1) ** 0.8
    p /= p.sum()
    rows = [{"user_id": f"u{u}", "item_id": f"i{(u % tastes) * size + i}", "event": "purchase",
             "ts": str(1_700_000_000 + u * 60 + j)}
            for u in range(users) for j, i in enumerate(rng.choice(size, size=per_user, replace=False, p=p))]
    catalog = [{"item_id": f"i{i}", "title": f"item {i}", "category": f"c{i // size}"} for i in range(items)]
    return write_csv_folder(folder, catalog, rows)


@pytest.fixture(scope="module")
def splits(tmp_path_factory: pytest.TempPathFactory) -> tuple[Validation, Validation, TrainConfig]:
    data = load_data_folder(tastes_folder(tmp_path_factory.mktemp("tastes")))
    cfg = TrainConfig()
    return (carve_validation(data.items, data.interactions, cfg),
            carve_validation(data.items, data.interactions, cfg, second=True), cfg)


def test_one_ease_solve_is_scored_at_several_neighbour_counts(splits):
    val, _, cfg = splits
    wide, conf = fit_trial(val, cfg, "ease", {"ease.l2": 500.0, "ease.neighbours": 300})
    narrow, _ = fit_trial(val, cfg, "ease", {"ease.l2": 500.0, "ease.neighbours": 100})
    assert isinstance(wide, ItemItemModel) and isinstance(narrow, ItemItemModel)
    kept = wide.keep(100)  # what fitting with 100 weights per item gives, without solving again
    assert np.array_equal(kept.neighbours, narrow.neighbours) and np.allclose(kept.weights, narrow.weights)
    assert kept.params == {"l2": 500.0, "neighbours": 100}

    value, params = run_trial(val, cfg, "ease", {"ease.l2": 500.0, "ease.neighbours": 500})
    assert params["ease.l2"] == 500.0 and params["ease.neighbours"] in (100, 200, 500, 1000)
    refit, _ = fit_trial(val, cfg, "ease", params)  # the kept count, fitted as the bundle will be
    assert val.ndcg(trial_scorer(refit, conf, len(val.items))) == pytest.approx(value)


@pytest.mark.slow
def test_ease_gets_several_lambdas_when_the_budget_allows_a_couple_of_full_solves(splits):
    val, finals, cfg = splits
    val.gram()
    full = {"ease.l2": 500.0, "ease.neighbours": 500}
    run_trial(val, cfg, "ease", full)  # warm up
    started = time.perf_counter()
    run_trial(val, cfg, "ease", full)
    full_trial = time.perf_counter() - started
    # each of the four families' share of the search is about 2.5 full EASE trials
    budget = max(1.0, 4 * 2.5 * full_trial / (1 - FINALS_SHARE))
    known = tune_known(val, finals, cfg, budget, progress=False)

    ease = [t for t in known.trials if t.family == "ease"]
    proxies = [t for t in ease if t.state == "proxy"]
    complete = [t for t in ease if t.state == "complete"]
    catalogue = proxy_catalogue(val, "ease")
    assert catalogue is not None and proxies and complete
    assert all(t.proxy_items == len(catalogue) < len(val.items) for t in proxies)
    assert all(t.proxy_items is None for t in complete)
    assert ease[0].state == "proxy" and ease[0].params["ease.l2"] == cfg.ease.l2  # the config's own λ first
    assert len({round(t.params["ease.l2"], 6) for t in ease if t.value is not None}) >= 3
    # the first full EASE trial is the best proxy so far, promoted (successive halving)
    before = [t for t in proxies if t.number < complete[0].number]
    assert complete[0].params["ease.l2"] == max(before, key=lambda t: (t.value, -t.number)).params["ease.l2"]

    finalists = {f["trial"]: f["family"] for f in known.finalists}
    assert {"ease"} < set(finalists.values())  # the finals still compare the families
    by_number = {t.number: t for t in known.trials}
    assert all(by_number[n].state == "complete" for n in finalists)  # proxies never reach the finals
    assert known.family in ("popularity", *finalists.values())
    assert [t["proxy_items"] for t in known.to_dict()["trials"]] == [t.proxy_items for t in known.trials]


def test_small_catalogues_and_other_families_get_no_proxies(splits, tmp_path):
    val, _, cfg = splits
    assert proxy_catalogue(val, "als") is None and proxy_catalogue(val, "rp3beta") is None
    small = load_data_folder(tastes_folder(tmp_path, users=600, items=600))
    assert proxy_catalogue(carve_validation(small.items, small.interactions, cfg), "ease") is None
    catalogue = proxy_catalogue(val, "ease")
    assert catalogue is not None and 0.3 * len(val.items) < len(catalogue) < 0.45 * len(val.items)
    users_per_item = np.diff(val.confidences().tocsc().indptr)
    assert users_per_item[catalogue].min() >= np.delete(users_per_item, catalogue).max()  # the most popular


@pytest.mark.slow
def test_a_pinned_lambda_is_fitted_once_not_searched(splits):
    val, finals, cfg = splits
    pinned = cfg.copy()
    pinned.model.family, pinned.ease.l2 = "ease", 80.0
    pinned.pinned |= {"model.family", "ease.l2"}
    # a budget far above one fit's time: what is tried must follow from the pins, not from the clock
    known = tune_known(val, finals, pinned, 300.0, progress=False)
    assert [t.state for t in known.trials] == ["proxy", "complete"]  # nothing to search: one full fit
    assert {t.params["ease.l2"] for t in known.trials} == {80.0}
    assert known.family in ("ease", "popularity") and [f["family"] for f in known.finalists] == ["ease"]


def test_validation_ranks_within_what_the_catalog_shows_each_user(tmp_path):
    """Tuning and the gate rank as the feed does: a hidden or sold-out item is never recommended, and
    a members-only item only to members (recsys/catalog.py decides what is shown, as in serving)."""
    data = load_data_folder(tastes_folder(tmp_path / "tastes", users=600, items=400, tastes=10))
    popular = data.interactions["item_id"].value_counts().index[:6].tolist()
    items = data.items.copy()
    items.loc[items["item_id"].isin(popular[:3]), "visible"] = False
    items.loc[items["item_id"].isin(popular[3:]), "stock"] = 0
    members_only = data.interactions["item_id"].value_counts().index[6:9].tolist()
    items.loc[items["item_id"].isin(members_only), "audience"] = "member_level:gold"
    users = sorted(data.interactions["user_id"].unique())
    gold = set(users[::2])
    profiles = pd.DataFrame({"user_id": users, "member_level": ["gold" if u in gold else "" for u in users]})
    val = carve_validation(items, data.interactions, TrainConfig(), profiles=profiles)
    hidden, blocked = val.never_shown()
    assert set(np.flatnonzero(hidden)) == set(val.items.lookup(popular))
    popularity = val.popularity_scores()
    recs = val.recommend(lambda rows: np.tile(popularity, (len(rows), 1)))
    assert (recs >= 0).all() and not np.isin(recs, np.flatnonzero(hidden)).any()
    restricted = val.items.lookup(members_only)
    validated = np.asarray(val.users.ids, dtype=object)[val.rows]
    is_gold = np.array([u in gold for u in validated])
    assert is_gold.any() and (~is_gold).any()
    assert not np.isin(recs[~is_gold], restricted).any()  # outside their audience: never
    assert np.isin(recs[is_gold], restricted).any()  # members do get them
    assert blocked.nnz == 3 * (~is_gold).sum()
    shown_everywhere = carve_validation(data.items, data.interactions, TrainConfig())
    assert not shown_everywhere.never_shown()[0].any() and not shown_everywhere.never_shown()[1].nnz
    assert shown_everywhere.popularity_ndcg() != val.popularity_ndcg()  # the hidden best sellers counted before
