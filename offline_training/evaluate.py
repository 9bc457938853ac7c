"""Run one evaluation protocol: split, fit on the training side, rank, score against popularity.

What "model" and "popularity" mean per protocol (both rank the same users on the same split):
- stratified, last-out: ALS scores vs global popularity; the user's training items are excluded.
- cold-users: hybrid + segment popularity from the profile alone vs global popularity.
- cold-items: content similarity to the user's history vs category popularity (the mean training
  popularity of the item's category), both ranking only the held-out items.
- fold-in: ALS vectors folded in from the history of users left out of training (serving's path for
  a user's recent events) vs global popularity; the history items are excluded.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from offline_training.config import TrainConfig
from offline_training.datafolder import AppData
from offline_training.fit import fit_models, positive_mask
from offline_training.metrics import ranking_metrics
from offline_training.splits import make_split
from recsys.matrix import event_weights, user_item_matrix
from recsys.models import TrainedModels
from recsys.profiles import profile_key_table
from recsys.topk import blocked_top_k

MODEL_NAMES = {
    "stratified": "ALS",
    "last-out": "ALS",
    "cold-users": "profile-neighbour popularity + LightFM hybrid",
    "cold-items": "content similarity to history (hybrid item features)",
    "fold-in": "ALS fold-in of the user's history",
}
BASELINE_NAMES = {
    "stratified": "global popularity",
    "last-out": "global popularity",
    "cold-users": "global popularity",
    "cold-items": "category popularity",
    "fold-in": "global popularity",
}


def _truth(test: pd.DataFrame, user_ids: list[str], items_index: dict[str, int], n_items: int) -> sp.csr_matrix:
    rows = pd.Series(test["user_id"]).map({u: i for i, u in enumerate(user_ids)}).to_numpy()
    cols = test["item_id"].map(items_index).to_numpy()
    return sp.csr_matrix((np.ones(len(test), dtype=np.float32), (rows, cols)), shape=(len(user_ids), n_items))


def baseline_popularity(models: TrainedModels) -> np.ndarray:
    """Users who interacted with each item in training: plain, undecayed popularity."""
    return np.diff(models.user_items.tocsc().indptr).astype(np.float64)


def _warm_user_recs(models: TrainedModels, test: pd.DataFrame, k: int) -> tuple[np.ndarray, np.ndarray, sp.csr_matrix]:
    test = test[test["user_id"].isin(models.users.index)]
    user_ids = sorted(test["user_id"].unique())
    users = models.users.lookup(user_ids)
    exclude = models.user_items[users]
    model = blocked_top_k(len(users), k, lambda rows: models.known_user_scores(users[rows]), exclude)[0]
    pop = baseline_popularity(models)
    base = blocked_top_k(len(users), k, lambda rows: np.broadcast_to(pop, (len(rows), len(pop))), exclude)[0]
    return model, base, _truth(test, user_ids, models.items.index, len(models.items))


def _fold_in_recs(models: TrainedModels, cfg: TrainConfig, history: pd.DataFrame, test: pd.DataFrame,
                  now_ts: int, k: int) -> tuple[np.ndarray, np.ndarray, sp.csr_matrix]:
    als = models.als
    assert als is not None
    user_ids = sorted(test["user_id"].unique())
    rows = pd.Series(history["user_id"]).map({u: i for i, u in enumerate(user_ids)}).fillna(-1).to_numpy(np.int64)
    ev = cfg.events
    weights = event_weights(history, ev.weights, ev.use_rating_value, ev.half_life_days, now_ts)
    known = user_item_matrix(rows, models.items.lookup(history["item_id"]), weights, len(user_ids), len(models.items))
    ptr = known.indptr  # plain slices of the CSR rows (scipy's row indexing is slow in a loop)
    vectors = np.stack([als.fold_in(known.indices[ptr[r]:ptr[r + 1]], known.data[ptr[r]:ptr[r + 1]])
                        if ptr[r + 1] > ptr[r] else np.zeros(als.item_factors.shape[1], dtype=np.float32)
                        for r in range(len(user_ids))])
    model = blocked_top_k(len(user_ids), k, lambda r: vectors[r] @ als.item_factors.T, known)[0]
    pop = baseline_popularity(models)
    base = blocked_top_k(len(user_ids), k, lambda r: np.broadcast_to(pop, (len(r), len(pop))), known)[0]
    return model, base, _truth(test, user_ids, models.items.index, len(models.items))


def _cold_user_recs(models: TrainedModels, data: AppData, cfg: TrainConfig, test: pd.DataFrame,
                    k: int) -> tuple[np.ndarray, np.ndarray, sp.csr_matrix]:
    user_ids = sorted(test["user_id"].unique())
    merchant = data.merchant_profiles[data.merchant_profiles["user_id"].isin(user_ids)]
    platform = data.platform_profiles[data.platform_profiles["user_id"].isin(user_ids)]
    keys = profile_key_table(merchant, platform, cfg.scope_map()).groupby("user_id")["key"].agg(list)
    keys_per_user = [keys.get(u, []) for u in user_ids]
    if not any(keys_per_user):
        raise ValueError("cold-users needs user profiles: none of the held-out users has one in this data")
    model = blocked_top_k(len(user_ids), k, lambda rows: models.profile_user_scores([keys_per_user[r] for r in rows]))[0]
    pop = baseline_popularity(models)
    base = blocked_top_k(len(user_ids), k, lambda rows: np.broadcast_to(pop, (len(rows), len(pop))))[0]
    return model, base, _truth(test, user_ids, models.items.index, len(models.items))


def _cold_item_recs(models: TrainedModels, test: pd.DataFrame, candidates: np.ndarray,
                    k: int) -> tuple[np.ndarray, np.ndarray, sp.csr_matrix]:
    user_ids = sorted(test["user_id"].unique())
    users = models.users.lookup(user_ids)
    cand = models.items.lookup(list(candidates))
    model_local = blocked_top_k(len(users), k, lambda rows: models.content_scores(users[rows], cand))[0]
    category = models.catalog["category"].to_numpy()
    pop = pd.Series(baseline_popularity(models)).groupby(category).transform("mean").to_numpy()
    cand_pop = pop[cand]
    base_local = blocked_top_k(len(users), k, lambda rows: np.broadcast_to(cand_pop, (len(rows), len(cand))))[0]

    def to_items(local: np.ndarray) -> np.ndarray:
        return np.where(local >= 0, cand[np.maximum(local, 0)], -1)

    return to_items(model_local), to_items(base_local), _truth(test, user_ids, models.items.index, len(models.items))


def evaluate(data: AppData, cfg: TrainConfig, protocol: str, k: int = 10, seed: int = 0,
             progress: bool = True) -> dict[str, Any]:
    """Evaluate `protocol` on `data`; returns the report dict of `minirec evaluate --json`."""
    started = time.perf_counter()
    split = make_split(protocol, data.interactions, positive_mask(data.interactions, cfg), seed)
    if split.test.empty:
        raise ValueError(f"protocol {protocol!r} leaves no test interactions for this data")
    cold_users = {"hybrid"} if cfg.coldstart.hybrid_weight > 0 else set()
    needs = {"stratified": {"als"}, "last-out": {"als"}, "cold-users": cold_users, "cold-items": {"hybrid"},
             "fold-in": {"als"}}
    models = fit_models(data, cfg, split.train, progress=progress, parts=frozenset(needs[protocol]))
    if protocol in ("stratified", "last-out"):
        model, base, truth = _warm_user_recs(models, split.test, k)
    elif protocol == "fold-in":
        assert split.history is not None
        now_ts = int(data.interactions["ts"].max()) if len(data.interactions) else 0
        model, base, truth = _fold_in_recs(models, cfg, split.history, split.test, now_ts, k)
    elif protocol == "cold-users":
        model, base, truth = _cold_user_recs(models, data, cfg, split.test, k)
    else:
        assert split.candidate_items is not None
        model, base, truth = _cold_item_recs(models, split.test, split.candidate_items, k)
    n_items = len(models.items)
    model_metrics = ranking_metrics(model, truth, k, n_items)
    base_metrics = ranking_metrics(base, truth, k, n_items)
    ndcg = f"ndcg@{k}"
    return {
        "protocol": protocol,
        "k": k,
        "seed": seed,
        "n_users": int((np.diff(truth.indptr) > 0).sum()),
        "n_items": n_items,
        "model_name": MODEL_NAMES[protocol],
        "baseline_name": BASELINE_NAMES[protocol],
        "model": model_metrics,
        "popularity": base_metrics,
        "lift_ndcg": model_metrics[ndcg] / base_metrics[ndcg] - 1 if base_metrics[ndcg] > 0 else None,
        "seconds": round(time.perf_counter() - started, 2),
    }
