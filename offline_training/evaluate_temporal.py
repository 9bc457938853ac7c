"""The temporal protocol: train on everything before a cut, then ask for the home feed of every user
who engaged after it — what a merchant judges minirec by.

Three groups are scored, each through the serving pipeline (requests made at the cut) beside the plain
baselines computed in the same run on the same users:
- known users, everything they engaged with after the cut (repeats included): the home feed as served
  (repurchases mixed in as the bundle learned) vs all-time and last-`test_days` best sellers, "buy
  again" (their own items by purchase count, the most recent first on ties) and the known-user model
  alone (history excluded);
- known users, the items new to them: the feed with their history excluded (the discovery part) vs
  best sellers without what they had;
- first visits (no positive event before the cut), from their profiles alone: vs all-time and recent
  best sellers and the best sellers of their merchant-profile segment (all its fields alike).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from offline_training.datafolder import AppData
from offline_training.metrics import ranking_metrics
from recsys.config import TrainConfig
from recsys.matrix import SECONDS_PER_DAY
from recsys.models import TrainedModels
from recsys.repeat import frequency_key
from recsys.rules import EVALUATION_RULES, SceneRules
from recsys.served import ServedModels
from recsys.topk import shared_top_k
from recsys.user_state import UserState

#: The home feed's rules for the all-items group: purchases kept or excluded as the bundle decides.
HOME_RULES = dataclasses.replace(EVALUATION_RULES, exclude_purchased=None)
#: The discovery part: everything the user had is excluded (what "items new to them" asks for).
NEW_ITEM_RULES = dataclasses.replace(EVALUATION_RULES, exclude_purchased=True)


def _truth(pairs: pd.DataFrame, user_ids: list[str], models: TrainedModels) -> sp.csr_matrix:
    rows = pairs["user_id"].map({u: i for i, u in enumerate(user_ids)}).to_numpy()
    return sp.csr_matrix((np.ones(len(pairs), dtype=np.float32), (rows, models.items.lookup(pairs["item_id"]))),
                         shape=(len(user_ids), len(models.items)))


def _top(scores: np.ndarray, n_users: int, k: int, exclude: sp.csr_matrix | None = None) -> np.ndarray:
    return shared_top_k(scores, n_users, k, exclude)


def _users_per_item(frame: pd.DataFrame, models: TrainedModels, positive: np.ndarray) -> np.ndarray:
    pairs = frame.loc[positive, ["user_id", "item_id"]].drop_duplicates()
    cols = models.items.lookup(pairs["item_id"])
    return np.bincount(cols[cols >= 0], minlength=len(models.items)).astype(np.float64)


def _buy_again(models: TrainedModels, user_ids: list[str], k: int) -> np.ndarray:
    """Each user's own items by number of purchases (positive engagements where nobody purchases),
    the most recent first on ties; empty slots stay -1."""
    repeat = models.repeat
    recs = np.full((len(user_ids), k), -1, dtype=np.int64)
    use_purchases = repeat is not None and repeat.counts.nnz > 0
    for row, user in enumerate(models.users.lookup(user_ids)):
        if user < 0:
            continue
        if use_purchases:
            lo, hi = repeat.counts.indptr[user], repeat.counts.indptr[user + 1]
            idx, key = repeat.counts.indices[lo:hi], frequency_key(repeat.counts.data[lo:hi], repeat.last_ts.data[lo:hi])
        else:
            idx, key = models.history(user)
        top = idx[np.argsort(-key, kind="stable")[:k]]
        recs[row, : len(top)] = top
    return recs


def _segment_best_sellers(data: AppData, frame: pd.DataFrame, positive: np.ndarray, models: TrainedModels,
                          user_ids: list[str], k: int) -> np.ndarray:
    """Best sellers among the users who share all merchant-profile values with each user (global ones
    where nobody does)."""
    profiles = data.merchant_profiles.set_index("user_id")
    fields = [c for c in profiles.columns if c not in ("consent",)]
    glob = _top(_users_per_item(frame, models, positive), 1, k)[0]
    if not fields:
        return np.tile(glob, (len(user_ids), 1))
    signature = profiles[fields].astype(str).agg("\x1f".join, axis=1)
    pairs = frame.loc[positive, ["user_id", "item_id"]].drop_duplicates()
    pairs = pairs.assign(sig=pairs["user_id"].map(signature), col=models.items.lookup(pairs["item_id"]))
    pairs = pairs[pairs["sig"].notna() & (pairs["col"] >= 0)]
    tops = {sig: g["col"].value_counts(sort=True).index.to_numpy()[:k] for sig, g in pairs.groupby("sig")}
    recs = np.full((len(user_ids), k), -1, dtype=np.int64)
    for row, user in enumerate(user_ids):
        top = tops.get(signature.get(user), glob)
        fill = [i for i in glob if i not in set(top)][: k - len(top)]
        recs[row] = np.concatenate([top, fill])[:k]
    return recs


#: Ranks users through the serving pipeline: (served, user ids, their states, k, rules) → [users, k].
Ranker = Callable[[ServedModels, list[str], list[UserState], int, SceneRules], np.ndarray]


def temporal_groups(data: AppData, models: TrainedModels, served: ServedModels, train: pd.DataFrame,
                    test: pd.DataFrame, cut: float, cfg: TrainConfig, k: int, max_users: int, seed: int,
                    ranks: Ranker, states_of: Callable[[list[str]], list[UserState]]) -> dict[str, Any]:
    """The three groups of the module docstring: per group its users and, per ranking, its metrics.

    `ranks(served, user_ids, states, k, rules)` ranks through the serving pipeline; `states_of(user_ids)`
    gives what the server would know of each user (profiles) at the cut."""
    positive = (train["event"].map(cfg.events.weights).fillna(0.0) > 0).to_numpy()
    n_items = len(models.items)
    all_time = _users_per_item(train, models, positive)
    recent_rows = positive & (train["ts"].to_numpy(np.float64) >= cut - cfg.evaluate.test_days * SECONDS_PER_DAY)
    recent = _users_per_item(train, models, recent_rows)
    rng = np.random.default_rng(seed)

    def sample(users: np.ndarray) -> list[str]:
        users = np.sort(users)
        return sorted(rng.choice(users, max_users, replace=False)) if len(users) > max_users else list(users)

    def metrics(recs: np.ndarray, truth: sp.csr_matrix) -> dict[str, float]:
        return ranking_metrics(recs, truth, k, n_items)

    known = sample(test.loc[test["user_id"].isin(models.users.index), "user_id"].unique())
    groups: dict[str, Any] = {}
    if known:
        pairs = test[test["user_id"].isin(set(known))]
        history = models.user_items[models.users.lookup(known)]
        states = states_of(known)
        truth_all = _truth(pairs, known, models)
        home = ranks(served, known, states, k, HOME_RULES)
        discovery = ranks(served, known, states, k, NEW_ITEM_RULES)
        groups["known, all items"] = {"n_users": len(known), "model": metrics(home, truth_all), "baselines": {
            "best sellers (all time)": metrics(_top(all_time, len(known), k), truth_all),
            f"best sellers (last {cfg.evaluate.test_days:g} days)": metrics(_top(recent, len(known), k), truth_all),
            "buy again (own most bought)": metrics(_buy_again(models, known, k), truth_all),
            "model alone (history excluded)": metrics(discovery, truth_all)}}
        had = history.copy()
        had.data[:] = 1.0
        new_truth = truth_all - truth_all.multiply(had)
        new_truth.eliminate_zeros()
        groups["known, new items"] = {"n_users": int((np.diff(new_truth.indptr) > 0).sum()),
                                      "model": metrics(discovery, new_truth), "baselines": {
            "best sellers (all time, excluding bought)": metrics(_top(all_time, len(known), k, history), new_truth),
            f"best sellers (last {cfg.evaluate.test_days:g} days, excluding bought)":
                metrics(_top(recent, len(known), k, history), new_truth),
            "home feed as served": metrics(home, new_truth)}}
    trained_users = set(train.loc[positive, "user_id"])
    first = sample(test.loc[~test["user_id"].isin(trained_users), "user_id"].unique())
    if first:
        truth = _truth(test[test["user_id"].isin(set(first))], first, models)
        states = states_of(first)
        groups["first visits"] = {"n_users": len(first), "model": metrics(ranks(served, first, states, k, HOME_RULES),
                                                                          truth), "baselines": {
            "best sellers (all time)": metrics(_top(all_time, len(first), k), truth),
            f"best sellers (last {cfg.evaluate.test_days:g} days)": metrics(_top(recent, len(first), k), truth),
            "best sellers of their merchant-profile segment":
                metrics(_segment_best_sellers(data, train, positive, models, first, k), truth)}}
    return groups
