"""Tune the first-visit blend on held-out users: the hybrid's share and the profile kernel's fields.

A first-time visitor is ranked by z(LightFM hybrid) · w + z(profile-neighbour popularity) · (1 − w)
(`TrainedModels.profile_user_scores`). Which side deserves the weight depends on what the profiles
carry: interests (the synthetic mall) favour the hybrid, demographics alone (MovieLens) the kernel.
So seeded, disjoint shares of the training users are held out entirely (up to `tuning.cold_folds`
folds, as time allows: a few hundred users per fold make a noisy judge), the hybrid is fitted once
per fold on the rest, and Optuna searches w, whether the kernel uses profile segments at all (without,
it is the trend-weighted best sellers: segments are worse where they are sparse), its fields (each
single-valued profile field in or out), its sharpness and bandwidth, scoring the mean NDCG@k over the
folds of the held-out users' items from their profiles alone. On time, the held-out users are those
who first came after the cut. Values set in the config file are pinned.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from offline_training.datafolder import AppData
from offline_training.fit import fit_models, kernel_fields, kernel_interactions, positive_mask
from offline_training.metrics import ranking_metrics
from offline_training.splits import Split, cold_user_folds, temporal_first_visits
from offline_training.validation import TuningSkipped
from recsys.config import TrainConfig
from recsys.hybrid import DeadlineExceeded
from recsys.models import TrainedModels, zscore
from recsys.profile_kernel import ProfileKernel
from recsys.profiles import profile_key_table
from recsys.topk import blocked_top_k


@dataclass
class ColdFold:
    """One set of held-out users, the models fitted without them, and their answers."""

    models: TrainedModels
    user_ids: list[str]
    keys_per_user: list[list[str]]
    truth: sp.csr_matrix
    hybrid_z: np.ndarray
    train_keys: pd.DataFrame
    popularity: np.ndarray
    #: What the kernel counts (`fit.kernel_interactions`, with the tuned popularity half-life).
    kernel_items: sp.csr_matrix

    def ndcg(self, score_rows, k: int) -> float:
        recs = blocked_top_k(len(self.user_ids), k, score_rows)[0]
        return ranking_metrics(recs, self.truth, k, len(self.models.items))[f"ndcg@{k}"]


def _fold(data: AppData, split: Split, cfg: TrainConfig, all_keys: pd.DataFrame, deadline: float) -> ColdFold | None:
    tcfg = cfg.tuning
    user_ids = sorted(split.test["user_id"].unique())
    if len(user_ids) > tcfg.max_validation_users:
        user_ids = sorted(np.random.default_rng(tcfg.seed).choice(user_ids, tcfg.max_validation_users, replace=False))
    keys = all_keys[all_keys["user_id"].isin(set(user_ids))].groupby("user_id")["key"].agg(list)
    keys_per_user = [list(keys.get(u, [])) for u in user_ids]
    if sum(1 for k in keys_per_user if k) < tcfg.min_validation_users:
        return None
    models = fit_models(data, cfg, split.train, progress=False, parts=frozenset({"hybrid"}), deadline=deadline)
    test = split.test[split.test["user_id"].isin(set(user_ids))]
    rows = test["user_id"].map({u: i for i, u in enumerate(user_ids)}).to_numpy()
    truth = sp.csr_matrix((np.ones(len(test), dtype=np.float32), (rows, models.items.lookup(test["item_id"]))),
                          shape=(len(user_ids), len(models.items)))
    hybrid = models.hybrid
    assert hybrid is not None
    hybrid_z = zscore(hybrid.scores(hybrid.user_matrix(keys_per_user))).astype(np.float32)
    train_keys = all_keys[all_keys["user_id"].isin(models.users.index)]
    popularity = np.diff(models.user_items.tocsc().indptr).astype(np.float64)
    kernel_items = kernel_interactions(split.train, cfg, models.users, models.items)
    return ColdFold(models, user_ids, keys_per_user, truth, hybrid_z, train_keys, popularity, kernel_items)


def tune_cold(data: AppData, frame: pd.DataFrame, cfg: TrainConfig, budget_seconds: float,
              progress: bool = True, cut: float | None = None) -> dict[str, Any]:
    """Search the first-visit settings on users held out of `frame`; returns the report's `cold` part
    (`settings` holds the chosen config paths). Raises TuningSkipped without profiles or users.

    With a `cut` (validation on time) the held-out users are those whose first engagement comes after
    it, with models fitted before it; without (or if too few such users have a profile), seeded random
    shares of the users."""
    import optuna
    from tqdm.auto import tqdm

    started = time.perf_counter()
    tcfg = cfg.tuning
    all_keys = profile_key_table(data.merchant_profiles, data.platform_profiles, cfg.scope_map())
    folds: list[ColdFold] = []
    positive = positive_mask(frame, cfg)
    splits = cold_user_folds(frame, positive, tcfg.seed, tcfg.cold_folds)
    if cut is not None:
        on_time = temporal_first_visits(frame, positive, cut)
        has_profile = set(all_keys["user_id"])
        if on_time.test["user_id"].isin(has_profile).groupby(on_time.test["user_id"]).any().sum() \
                >= tcfg.min_validation_users:
            splits = [on_time]
    validated_on = "time" if cut is not None and len(splits) == 1 and splits[0].protocol == "temporal" else "random"
    for split in splits:
        # the first fold's hybrid may take three quarters of the budget (trials are cheap next to it);
        # more folds only while half the budget is left for the search
        share = 0.75 if not folds else 0.5
        try:
            fold = _fold(data, split, cfg, all_keys, started + budget_seconds * share)
        except DeadlineExceeded as exc:
            if folds:
                break
            raise TuningSkipped("first-visit settings not tuned: the hybrid would not fit in three quarters of "
                                f"the budget ({exc})")
        if fold is None:
            break
        folds.append(fold)
        if time.perf_counter() - started > budget_seconds / 2:
            break
    if not folds:
        raise TuningSkipped(f"first-visit settings not tuned: fewer than {tcfg.min_validation_users} held-out "
                            "users have a profile")
    if time.perf_counter() - started > budget_seconds:
        raise TuningSkipped("first-visit settings not tuned: fitting the hybrid took the whole budget")
    candidates = kernel_fields(folds[0].train_keys, [])
    k = cfg.evaluate.k
    popularity = float(np.mean([f.ndcg(lambda rows, f=f: np.broadcast_to(f.popularity, (len(rows), len(f.popularity))),
                                       k) for f in folds]))
    cold = cfg.coldstart
    kernels: dict[tuple, ProfileKernel] = {}

    def settings(trial: optuna.Trial) -> dict[str, Any]:
        def pick(path: str, suggest) -> Any:
            return cfg.get(path) if path in cfg.pinned else suggest(path)
        chosen = {
            "coldstart.hybrid_weight": pick("coldstart.hybrid_weight", lambda n: trial.suggest_float(n, 0.0, 1.0)),
            "coldstart.power": pick("coldstart.power", lambda n: trial.suggest_float(n, 0.5, 4.0, log=True)),
            "coldstart.bandwidth_scale": pick("coldstart.bandwidth_scale",
                                              lambda n: trial.suggest_float(n, 0.25, 2.0, log=True)),
        }
        chosen["coldstart.segments"] = pick("coldstart.segments",
                                            lambda n: trial.suggest_categorical(n, [True, False]))
        if "coldstart.fields" in cfg.pinned:
            chosen["coldstart.fields"] = list(cold.fields)
        else:
            chosen["coldstart.fields"] = [f for f in candidates
                                          if trial.suggest_categorical(f"field {f}", [True, False])]
        return chosen

    def score(chosen: dict[str, Any]) -> float:
        """Mean NDCG@k over the folds of the blend `TrainedModels.profile_user_scores` computes."""
        w = chosen["coldstart.hybrid_weight"]
        fields = (chosen["coldstart.fields"] or candidates) if chosen["coldstart.segments"] else []
        values = []
        for i, fold in enumerate(folds):
            key = (i, tuple(fields), chosen["coldstart.bandwidth_scale"])
            if key not in kernels:
                kernels[key] = ProfileKernel.fit(fold.train_keys, fold.models.users, fold.kernel_items, fields,
                                                 cold.field_weights, chosen["coldstart.power"],
                                                 chosen["coldstart.bandwidth_scale"], binary=False)
            kernel = kernels[key]
            kernel.power = chosen["coldstart.power"]

            def block(rows: np.ndarray, fold: ColdFold = fold, kernel: ProfileKernel = kernel) -> np.ndarray:
                blend = w * fold.hybrid_z[rows].astype(np.float64)
                if w < 1:
                    blend += (1 - w) * zscore(np.stack([kernel.scores(fold.keys_per_user[r]) for r in rows]))
                return blend
            values.append(fold.ndcg(block, k))
        return float(np.mean(values))

    trials: list[dict[str, Any]] = []

    def objective(trial: optuna.Trial) -> float:
        t0 = time.perf_counter()
        chosen = settings(trial)
        value = score(chosen)
        trials.append({"number": trial.number, "settings": chosen, "value": value,
                       "seconds": round(time.perf_counter() - t0, 2)})
        bar.update(1)
        return value

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=tcfg.seed))
    start = {"coldstart.hybrid_weight": cold.hybrid_weight, "coldstart.power": cold.power,
             "coldstart.bandwidth_scale": cold.bandwidth_scale, "coldstart.segments": cold.segments}
    start.update({f"field {f}": (not cold.fields or f in cold.fields) for f in candidates})
    study.enqueue_trial(start)
    for w in (0.0, 0.5):  # the two ends of the blend's usual range, so neither side is missed
        study.enqueue_trial({**start, "coldstart.hybrid_weight": w})
    study.enqueue_trial({**start, "coldstart.hybrid_weight": 0.0, "coldstart.segments": False})  # best sellers
    remaining = budget_seconds - (time.perf_counter() - started)
    with tqdm(desc="tuning first visits", unit="trial", disable=not progress, leave=False) as bar:
        study.optimize(objective, n_trials=tcfg.max_trials, timeout=max(remaining, 1.0))
    best = max(trials, key=lambda t: (t["value"], -t["number"]))
    return {"settings": best["settings"], "value": best["value"], "popularity": popularity, "validated_on": validated_on,
            "n_users": sum(len(f.user_ids) for f in folds), "folds": len(folds), "candidate_fields": candidates,
            "trials": trials, "seconds": round(time.perf_counter() - started, 2), "k": k}


def apply_cold(cfg: TrainConfig, cold: dict[str, Any]) -> TrainConfig:
    """The config with the chosen first-visit settings (pinned ones were never searched)."""
    tuned = cfg.copy()
    for path, value in cold["settings"].items():
        tuned.set(path, value)
    return tuned
