"""Run one evaluation protocol: split, tune and fit on the training side, rank, score against popularity.

Every user is ranked through the serving pipeline (`recsys.pipeline.rank`) with the state the server
would hold for them: their merchant and platform profiles, and for users the model never saw their
newest events (as many as the server keeps). The rules are `EVALUATION_RULES`: the home feed's
exclusions (unavailable items, what the user bought or already interacted with) without the
page-level diversity caps and pins. So what a protocol measures is what the API serves.

What "model" and "popularity" mean per protocol (both rank the same users on the same split):
- stratified, last-out: the known-user model vs global popularity; training items excluded.
- cold-users: first visits (hybrid + profile-neighbour popularity from the profile alone) vs global
  popularity.
- fold-in: users left out of training, scored from their newest events (ALS: folded-in vector;
  item-item models: history × W) vs global popularity; those events' items excluded.
- cold-items: a diagnostic of the content vectors, not a serving path: content similarity to the
  user's history vs category popularity, both ranking only the held-out items.

Unless tuning is off, the protocol's training side is first split again for validation and the
model family and settings are searched there (`offline_training/tuning.py`); the test pairs are
never seen by the search.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from tqdm.auto import tqdm

from vocab.queries import RECENT_MAX
from offline_training.datafolder import AppData
from offline_training.evaluate_temporal import temporal_groups
from offline_training.fit import fit_models, known_family, positive_mask
from offline_training.metrics import ranking_metrics
from offline_training.splits import NoTimeToSplit, make_split, temporal_cut
from offline_training.tuning import (TuningOutcome, apply_known, config_params, fit_trial, tune_known,
                                     tuning_budget)
from offline_training.tuning_cold import apply_cold, tune_cold
from offline_training.tuning_repeat import apply_repeat, tune_repeat
from offline_training.validation import TuningSkipped, Validation, carve_validation
from recsys.config import TrainConfig, parse_cut
from recsys.models import TrainedModels
from recsys.pipeline import rank
from recsys.rules import EVALUATION_RULES, SceneRules
from recsys.served import ServedModels
from recsys.topk import blocked_top_k
from recsys.user_state import UserState

WARM_PROTOCOLS = ("stratified", "last-out", "fold-in")
#: Share of the known users' tuning budget kept, on time, for the repeat-purchase grid and the check of
#: the winner on earlier cuts (both run after the model search).
REPEAT_SHARE = 0.15
BASELINE_NAMES = {
    "stratified": "global popularity",
    "last-out": "global popularity",
    "cold-users": "global popularity",
    "cold-items": "category popularity",
    "fold-in": "global popularity",
    "temporal": "best sellers (all time)",
}


def model_name(protocol: str, cfg: TrainConfig) -> str:
    family = known_family(cfg)
    if protocol in ("stratified", "last-out"):
        return family
    if protocol == "temporal":
        mix = cfg.repeat.mix_weight
        return f"home feed: {family}" + (f" + past purchases (mix {mix:g})" if mix > 0 else ", purchases excluded")
    if protocol == "fold-in":
        return f"{family} folded in from the user's newest events"
    if protocol == "cold-users":
        return f"first visit: {cfg.coldstart.hybrid_weight:.2f} LightFM hybrid + profile-neighbour popularity"
    return "content similarity to history (hybrid item features)"


def _truth(test: pd.DataFrame, user_ids: list[str], items_index: dict[str, int], n_items: int) -> sp.csr_matrix:
    rows = pd.Series(test["user_id"]).map({u: i for i, u in enumerate(user_ids)}).to_numpy()
    cols = test["item_id"].map(items_index).to_numpy()
    return sp.csr_matrix((np.ones(len(test), dtype=np.float32), (rows, cols)), shape=(len(user_ids), n_items))


def baseline_popularity(models: TrainedModels) -> np.ndarray:
    """Users who interacted with each item in training: plain, undecayed popularity."""
    return np.diff(models.user_items.tocsc().indptr).astype(np.float64)


def _profiles(data: AppData, user_ids: list[str]) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, str]]]:
    """Merchant and platform profile of each user, as the server's Redis holds them (strings)."""
    def table(frame: pd.DataFrame) -> dict[str, dict[str, str]]:
        rows = frame[frame["user_id"].isin(set(user_ids))].set_index("user_id")
        return {u: {c: str(v) for c, v in r.items() if str(v) not in ("", "nan", "None")}
                for u, r in rows.to_dict(orient="index").items()}
    return table(data.merchant_profiles), table(data.platform_profiles)


def user_states(data: AppData, user_ids: list[str], history: pd.DataFrame | None = None) -> list[UserState]:
    """What the server would know of each user: profiles, and their newest `RECENT_MAX` events of
    `history` (events the model was not trained on) with the items they bought among them."""
    merchant, platform = _profiles(data, user_ids)
    recent: dict[str, list[tuple[str, str, float]]] = {}
    if history is not None and len(history):
        history = history[history["event"] != "impression"]  # the server counts impressions, not as history
        newest = history.sort_values("ts", ascending=False, kind="stable").groupby("user_id").head(RECENT_MAX)
        for user, group in newest.groupby("user_id", sort=False):
            recent[str(user)] = list(zip(group["item_id"], group["event"], group["ts"].astype(float)))
    return [UserState(recent=recent.get(u, []), purchased={i for i, e, _ in recent.get(u, []) if e == "purchase"},
                      shown={}, clicked=set(), merchant_profile=merchant.get(u, {}),
                      platform_profile=platform.get(u, {}))
            for u in user_ids]


def pipeline_recs(served: ServedModels, user_ids: list[str], states: list[UserState], k: int,
                  progress: bool = False, rules: SceneRules = EVALUATION_RULES) -> np.ndarray:
    """[n_users, k] catalog indices ranked by the serving pipeline (-1 where a page is short)."""
    recs = np.full((len(user_ids), k), -1, dtype=np.int64)
    index = served.models.items.index
    for row, (user_id, state) in enumerate(tqdm(list(zip(user_ids, states)), desc="ranking", unit="user",
                                                disable=not progress, leave=False)):
        items, _, _ = rank(served, user_id, state, rules, n=k, offset=0)
        ids = [index[i.item_id] for i in items if i.item_id in index]
        recs[row, : len(ids)] = ids
    return recs


def _recent_matrix(states: list[UserState], index: dict[str, int], n_items: int) -> sp.csr_matrix:
    """Users × items: 1 for the items of each user's recent events (what the pipeline excludes)."""
    rows, cols = [], []
    for row, state in enumerate(states):
        items = {index[i] for i, _, _ in state.recent if i in index}
        rows += [row] * len(items)
        cols += sorted(items)
    return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(states), n_items))


def _popularity_recs(models: TrainedModels, n_users: int, k: int, exclude: sp.csr_matrix | None) -> np.ndarray:
    pop = baseline_popularity(models)
    return blocked_top_k(n_users, k, lambda rows: np.broadcast_to(pop, (len(rows), len(pop))), exclude)[0]


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


@dataclass
class Evaluation:
    """A protocol's report and the (possibly tuned) config its model was trained with."""

    report: dict[str, Any]
    cfg: TrainConfig
    tuning: TuningOutcome


def choose_validation(frame: pd.DataFrame, cfg: TrainConfig, fallback: str = "stratified") -> tuple[str, str | None]:
    """"temporal" when tuning may validate on time and `frame` spans enough of it; otherwise
    `fallback` and the reason why time could not be used (for the report)."""
    if not cfg.tuning.validate_on_time:
        return fallback, None
    try:
        temporal_cut(frame, cfg.evaluate.test_days, cfg.tuning.min_span_days)
    except NoTimeToSplit as exc:
        return fallback, f"validated on random held-out pairs, not on time: {exc}"
    return "temporal", None


def served_scores(val: Validation, cfg: TrainConfig) -> Callable[[np.ndarray], np.ndarray]:
    """Scores of the known-user path `cfg` serves, fitted on `val`'s training side (user rows → scores)."""
    family = known_family(cfg)
    if family == "popularity":
        pop = val.popularity_scores(cfg.popularity.half_life_days)
        return lambda rows: np.broadcast_to(pop, (len(rows), len(pop)))
    model, conf = fit_trial(val, cfg, family, config_params(cfg, family))
    return lambda rows: model.user_scores(rows, conf)


def tune(data: AppData, frame: pd.DataFrame, cfg: TrainConfig, *, warm: bool = True, cold: bool = True,
         validation_protocol: str | None = None, budget_seconds: float | None = None,
         progress: bool = True) -> tuple[TrainConfig, TuningOutcome]:
    """Tune on `frame` (training rows only): the known-user model and repeat purchases if `warm`,
    first visits if `cold`.

    Validation is on time where the data allows (`choose_validation`) unless `validation_protocol` is given.
    The budget (default: `tuning_budget` for `frame`) is shared `tuning.cold_share` to first visits
    when both run and the data has profiles; one part alone gets all of it."""
    outcome = TuningOutcome()
    budget = tuning_budget(cfg, len(frame)) if budget_seconds is None else budget_seconds
    has_profiles = not (data.merchant_profiles.empty and data.platform_profiles.empty)
    cold_budget = budget * cfg.tuning.cold_share if (warm and cold and has_profiles) else budget
    protocol = validation_protocol
    if protocol is None:
        protocol, why = choose_validation(frame, cfg)
        if why:
            outcome.skipped.append(why)
    outcome.protocol = protocol
    if warm:
        try:
            val = carve_validation(data.items, frame, cfg, protocol, profiles=data.merchant_profiles)
            finals = carve_validation(data.items, frame, cfg, protocol, second=True, profiles=data.merchant_profiles)
            outcome.validation = finals
            warm_budget = budget - cold_budget if cold and has_profiles else budget
            if protocol == "temporal":  # the repeat grid and the earlier cuts' check come out of the same budget
                warm_budget *= 1 - REPEAT_SHARE
            outcome.known = tune_known(val, finals, cfg, warm_budget, progress)
            cfg = apply_known(cfg, outcome.known)
            if protocol == "temporal":
                outcome.repeat = tune_repeat(val, finals, cfg, served_scores(val, cfg), served_scores(finals, cfg))
                cfg = apply_repeat(cfg, outcome.repeat)
        except TuningSkipped as exc:
            outcome.skipped.append(f"known-user model: {exc}")
    if cold:
        if not has_profiles:
            outcome.skipped.append("first visits: the data has no user profiles")
        else:
            try:
                cut = temporal_cut(frame, cfg.evaluate.test_days, cfg.tuning.min_span_days) \
                    if protocol == "temporal" else None
                outcome.cold = tune_cold(data, frame, cfg, cold_budget, progress, cut=cut)
                cfg = apply_cold(cfg, outcome.cold)
            except TuningSkipped as exc:
                outcome.skipped.append(str(exc))
    return cfg, outcome


def run_evaluation(data: AppData, cfg: TrainConfig, protocol: str, k: int = 10, seed: int = 0,
                   progress: bool = True, tuning: bool | None = None) -> Evaluation:
    """Evaluate `protocol` on `data`, tuning on its training side first unless `tuning` is False
    (default: the config's `tuning.enabled`)."""
    started = time.perf_counter()
    if protocol == "temporal":
        return _run_temporal(data, cfg, k, seed, progress, tuning, started)
    split = make_split(protocol, data.interactions, positive_mask(data.interactions, cfg), seed)
    if split.test.empty:
        raise ValueError(f"protocol {protocol!r} leaves no test interactions for this data")
    outcome = TuningOutcome()
    if tuning if tuning is not None else cfg.tuning.enabled:
        if protocol in WARM_PROTOCOLS:
            validation = "last-out" if protocol == "last-out" else "stratified"
            cfg, outcome = tune(data, split.train, cfg, cold=False, validation_protocol=validation, progress=progress)
        elif protocol == "cold-users":  # held-out users at random: first visits are tuned the same way
            cfg, outcome = tune(data, split.train, cfg, warm=False, validation_protocol="stratified",
                                progress=progress)
    cold_parts = {"hybrid"} if cfg.coldstart.hybrid_weight > 0 else set()
    needs = {"stratified": {"known"}, "last-out": {"known"}, "cold-users": cold_parts, "cold-items": {"hybrid"},
             "fold-in": {"known"}}
    models = fit_models(data, cfg, split.train, progress=progress, parts=frozenset(needs[protocol]))
    n_items = len(models.items)
    if protocol == "cold-items":
        assert split.candidate_items is not None
        model, base, truth = _cold_item_recs(models, split.test, split.candidate_items, k)
    else:
        test = split.test
        if protocol in ("stratified", "last-out"):
            test = test[test["user_id"].isin(models.users.index)]
        user_ids = sorted(test["user_id"].unique())
        if len(user_ids) > cfg.evaluate.max_users:  # every one goes through the pipeline: bound the time
            user_ids = sorted(np.random.default_rng(seed).choice(user_ids, cfg.evaluate.max_users, replace=False))
            test = test[test["user_id"].isin(set(user_ids))]
        history = split.history if protocol == "fold-in" else None
        states = user_states(data, user_ids, history)
        if protocol == "cold-users" and not any(s.merchant_profile or s.platform_profile for s in states):
            raise ValueError("cold-users needs user profiles: none of the held-out users has one in this data")
        served = ServedModels.of(models, cfg)
        model = pipeline_recs(served, user_ids, states, k, progress)
        truth = _truth(test, user_ids, models.items.index, n_items)
        if protocol == "fold-in":
            exclude = _recent_matrix(states, models.items.index, n_items)
        elif protocol == "cold-users":
            exclude = None
        else:
            exclude = models.user_items[models.users.lookup(user_ids)]
        base = _popularity_recs(models, len(user_ids), k, exclude)
    model_metrics = ranking_metrics(model, truth, k, n_items)
    base_metrics = ranking_metrics(base, truth, k, n_items)
    ndcg = f"ndcg@{k}"
    report = {
        "protocol": protocol,
        "k": k,
        "seed": seed,
        "n_users": int((np.diff(truth.indptr) > 0).sum()),
        "n_items": n_items,
        "model_name": model_name(protocol, cfg),
        "baseline_name": BASELINE_NAMES[protocol],
        "model": model_metrics,
        "popularity": base_metrics,
        "lift_ndcg": model_metrics[ndcg] / base_metrics[ndcg] - 1 if base_metrics[ndcg] > 0 else None,
        "tuning": outcome.to_dict(),
        "seconds": round(time.perf_counter() - started, 2),
    }
    return Evaluation(report, cfg, outcome)


def evaluation_cut(data: AppData, cfg: TrainConfig) -> float:
    """The temporal protocol's cut: `evaluate.temporal_cut`, or `test_days` before the newest event
    (NoTimeToSplit when the data spans too little time)."""
    if cfg.evaluate.temporal_cut:
        return parse_cut(cfg.evaluate.temporal_cut)
    return temporal_cut(data.interactions, cfg.evaluate.test_days, cfg.tuning.min_span_days)


def _run_temporal(data: AppData, cfg: TrainConfig, k: int, seed: int, progress: bool, tuning: bool | None,
                  started: float) -> Evaluation:
    """The temporal protocol (`offline_training/evaluate_temporal.py`): tune on time before the cut,
    train on it, rank the three groups through the serving pipeline beside the baselines."""
    cut = evaluation_cut(data, cfg)
    split = make_split("temporal", data.interactions, positive_mask(data.interactions, cfg), seed, cut=cut)
    if split.test.empty or split.train.empty:
        raise ValueError(f"the temporal cut {cut:.0f} leaves no {'test' if split.test.empty else 'training'} "
                         "interactions (evaluate.temporal_cut)")
    outcome = TuningOutcome()
    if tuning if tuning is not None else cfg.tuning.enabled:
        cfg, outcome = tune(data, split.train, cfg, progress=progress)
    parts = {"known", "hybrid"} if cfg.coldstart.hybrid_weight > 0 else {"known"}
    models = fit_models(data, cfg, split.train, progress=progress, parts=frozenset(parts))
    served = ServedModels.of(models, cfg)

    def states_of(user_ids: list[str]) -> list[UserState]:
        states = user_states(data, user_ids)
        for state in states:
            state.now = cut
        return states

    def ranks(served: ServedModels, user_ids: list[str], states: list[UserState], k: int,
              rules: SceneRules) -> np.ndarray:
        return pipeline_recs(served, user_ids, states, k, progress, rules)

    groups = temporal_groups(data, models, served, split.train, split.test, cut, cfg, k, cfg.evaluate.max_users,
                             seed, ranks, states_of)
    if not groups:
        raise ValueError("the temporal protocol found no user to test after the cut")
    main = groups.get("known, all items") or next(iter(groups.values()))
    report = {
        "protocol": "temporal", "k": k, "seed": seed, "cut": cut, "n_users": main["n_users"],
        "n_items": len(models.items), "model_name": model_name("temporal", cfg),
        "baseline_name": "best sellers (all time)", "model": main["model"],
        "popularity": main["baselines"].get("best sellers (all time)", main["model"]),
        "groups": groups, "repeat_stats": models.repeat.stats if models.repeat is not None else {},
        "tuning": outcome.to_dict(), "seconds": round(time.perf_counter() - started, 2),
    }
    ndcg = f"ndcg@{k}"
    report["lift_ndcg"] = (report["model"][ndcg] / report["popularity"][ndcg] - 1
                           if report["popularity"][ndcg] > 0 else None)
    return Evaluation(report, cfg, outcome)


def evaluate(data: AppData, cfg: TrainConfig, protocol: str, k: int = 10, seed: int = 0,
             progress: bool = True, tuning: bool | None = None) -> dict[str, Any]:
    """Evaluate `protocol` on `data`; returns the report dict of `minirec evaluate --json`."""
    return run_evaluation(data, cfg, protocol, k, seed, progress, tuning).report
