"""The validation split that tuning and the publish gate score on, carved from training data only.

Within whatever a model may learn from (all data for `minirec train --no-eval`, the training side of
an evaluation split otherwise), a share of each user's positive pairs is held out, as the evaluation
protocols do (`stratified`: random pairs; `last-out`: each user's newest pair). Trial models learn
from the rest and rank for the validated users, their training items excluded, as the home feed
excludes what a user already has. Nothing here ever sees an evaluation's test pairs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.stats import norm

from offline_training.fit import confidence_matrix, positive_mask
from offline_training.metrics import ndcg_per_user
from offline_training.splits import last_out, stratified
from recsys.config import TrainConfig
from recsys.item_models import gram_matrix
from recsys.matrix import SECONDS_PER_DAY, IdMap, event_weights
from recsys.topk import blocked_top_k


#: One-sided 95% normal quantile: a model "beats" popularity only if its mean per-user NDCG gain
#: exceeds this many standard errors.
Z_ONE_SIDED_95 = 1.645


@dataclass(frozen=True)
class Comparison:
    """A model against popularity on the same validated users (paired per-user NDCG)."""

    model: float
    popularity: float
    #: Mean and standard error of the per-user difference.
    gain: float
    stderr: float

    @property
    def beats(self) -> bool:
        return self.beats_among(1)

    def beats_among(self, candidates: int) -> bool:
        """Significant at one-sided 95% after a Bonferroni correction for having picked this model
        among `candidates` on the same users: the best of several is flattered by the pick (on data
        with nothing but popularity in it, the best of nine finalists passed a plain 95% test)."""
        z = Z_ONE_SIDED_95 if candidates <= 1 else float(norm.ppf(1 - 0.05 / candidates))
        return self.gain - z * self.stderr > 0

    @classmethod
    def of(cls, model: np.ndarray, popularity: np.ndarray) -> "Comparison":
        """Compare per-user NDCG arrays of the same users."""
        diff = np.asarray(model, dtype=np.float64) - np.asarray(popularity, dtype=np.float64)
        stderr = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else float("inf")
        return cls(float(np.mean(model)), float(np.mean(popularity)), float(diff.mean()), stderr)


class TuningSkipped(ValueError):
    """The data cannot support a validation split; the message says why (training goes on untuned)."""


@dataclass
class Validation:
    """A validation split and what scoring on it needs, built once per tuning run."""

    #: Interaction rows the trial models learn from.
    train: pd.DataFrame
    users: IdMap
    items: IdMap
    #: Row indices (into `users`) of the validated users, and their held-out items (same order).
    rows: np.ndarray
    truth: sp.csr_matrix
    cfg: TrainConfig
    k: int
    #: Days between the first and last training event (the scale of decay half-lives).
    span_days: float
    #: Whether `rating` events carry different values (then "rating as confidence" is worth trying).
    ratings_vary: bool
    _confidences: dict[tuple[float, bool], sp.csr_matrix] = field(default_factory=dict, repr=False)
    _gram: np.ndarray | None = field(default=None, repr=False)

    def confidences(self, half_life_days: float | None = None, use_rating_value: bool | None = None) -> sp.csr_matrix:
        """Users × items confidences of the training side, cached per event setting."""
        ev = self.cfg.events
        key = (ev.half_life_days if half_life_days is None else half_life_days,
               ev.use_rating_value if use_rating_value is None else use_rating_value)
        if key not in self._confidences:
            cfg = self.cfg.copy()
            cfg.events.half_life_days, cfg.events.use_rating_value = key
            self._confidences[key] = confidence_matrix(self.train, cfg, self.users, self.items)
        return self._confidences[key]

    def gram(self) -> np.ndarray:
        """XᵀX of the binary training side (EASE trials share it; event settings do not change it)."""
        if self._gram is None:
            self._gram = gram_matrix(self.confidences())
        return self._gram

    def ndcg_per_user(self, score_rows: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """NDCG@k of each validated user under `score_rows(user rows) -> [len(rows), n_items]`."""
        exclude = self.confidences()[self.rows]
        recs = blocked_top_k(len(self.rows), self.k, lambda r: score_rows(self.rows[r]), exclude)[0]
        return ndcg_per_user(recs, self.truth, self.k)

    def ndcg(self, score_rows: Callable[[np.ndarray], np.ndarray]) -> float:
        """Mean NDCG@k over the validated users."""
        return float(np.mean(self.ndcg_per_user(score_rows)))

    def popularity_per_user(self) -> np.ndarray:
        """Per-user NDCG@k of plain popularity (users per item), the baseline every model must beat."""
        pop = np.diff(self.confidences().tocsc().indptr).astype(np.float64)
        return self.ndcg_per_user(lambda rows: np.broadcast_to(pop, (len(rows), len(pop))))

    def popularity_ndcg(self, half_life_days: float = 0.0) -> float:
        """NDCG@k of (decayed) popularity."""
        if half_life_days > 0:
            weights = event_weights(self.train, self.cfg.events.weights, False, half_life_days)
            cols = self.items.lookup(self.train["item_id"])
            keep = (weights > 0) & (cols >= 0)
            pop = np.bincount(cols[keep], weights=weights[keep], minlength=len(self.items))
        else:  # users per item, the evaluation protocols' baseline
            return float(np.mean(self.popularity_per_user()))
        return self.ndcg(lambda rows: np.broadcast_to(pop, (len(rows), len(pop))))


def carve_validation(items: pd.DataFrame, frame: pd.DataFrame, cfg: TrainConfig,
                     protocol: str = "stratified", second: bool = False) -> Validation:
    """Hold out validation pairs of `frame` by `protocol` (stratified or last-out); raises
    TuningSkipped when fewer than `tuning.min_validation_users` users get a validation pair.

    `second` carves the finals split: other random pairs (stratified), or each user's second
    newest pair (last-out), so that it judges what the first one chose on fresh answers."""
    tcfg = cfg.tuning
    positive = positive_mask(frame, cfg)
    if protocol == "last-out":
        if second:  # the newest pair never enters the finals' training side nor its answers
            newest = last_out(frame, positive, tcfg.seed)
            frame = newest.train
            positive = positive_mask(frame, cfg)
        split = last_out(frame, positive, tcfg.seed)
    else:
        split = stratified(frame, positive, tcfg.seed + (1 if second else 0), ratio=1.0 - tcfg.validation_share,
                           min_test=1)
    n_users = split.test["user_id"].nunique()
    if n_users < tcfg.min_validation_users:
        raise TuningSkipped(f"only {n_users} users have enough positive interactions to hold some out for "
                            f"validation (tuning needs {tcfg.min_validation_users}; tuning.min_validation_users)")
    train = split.train
    item_map = IdMap.of(items["item_id"])
    users = IdMap.of(train.loc[positive_mask(train, cfg), "user_id"])
    test = split.test[split.test["user_id"].isin(users.index)]
    validated = np.sort(test["user_id"].unique())
    if len(validated) > tcfg.max_validation_users:
        rng = np.random.default_rng(tcfg.seed)
        validated = np.sort(rng.choice(validated, size=tcfg.max_validation_users, replace=False))
        test = test[test["user_id"].isin(set(validated))]
    order = {u: i for i, u in enumerate(validated)}
    truth = sp.csr_matrix((np.ones(len(test), dtype=np.float32),
                           (test["user_id"].map(order).to_numpy(), item_map.lookup(test["item_id"]))),
                          shape=(len(validated), len(item_map)))
    ts = train["ts"].to_numpy(np.float64)
    span = float(ts.max() - ts.min()) / SECONDS_PER_DAY if len(ts) else 0.0
    ratings = train.loc[train["event"] == "rating", "value"]
    return Validation(train, users, item_map, users.lookup(list(validated)), truth, cfg, cfg.evaluate.k, span,
                      bool(ratings.nunique() > 1))
