"""The validation split that tuning and the publish gate score on, carved from training data only.

Within whatever a model may learn from (all data for `minirec train --no-eval`, the training side of
an evaluation split otherwise), answers are held out as the evaluation protocols do:
- `temporal` (the default wherever the data spans enough time): everything before a cut trains, and
  the users known before it are judged on what they did after it — the merchant's next month. The
  known-user model is judged on the items new to each user (`truth`), the home feed's repurchase mix
  on everything they bought (`truth_all`). The validated users are split in two seeded halves: the
  search scores on one, the finals and the publish gate on the other.
- `stratified`: a random share of each user's positive pairs; `last-out`: each user's newest pair.
Trial models learn from the rest and rank for the validated users, their training items excluded, as
the home feed excludes what a user already has, and what the live catalog (`recsys/catalog.py`) would
never show them excluded too: hidden or sold-out items, and items outside the user's audience. Nothing here ever sees an evaluation's
test pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.stats import norm

from offline_training.fit import confidence_matrix, positive_mask
from offline_training.metrics import ndcg_per_user
from offline_training.splits import last_out, stratified, temporal, temporal_cut
from recsys.catalog import TEXT_FIELDS, CatalogState, catalog_state
from recsys.config import TrainConfig
from recsys.item_models import gram_matrix
from recsys.matrix import SECONDS_PER_DAY, IdMap, event_weights
from recsys.topk import blocked_top_k, shared_top_k


#: Splits in time (this one and earlier cuts) that the popularity half-life is judged on.
BACKTEST_ORIGINS = 3

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
    #: temporal only: the cut (Unix seconds) and every item each validated user engaged with after it,
    #: repeats included (`truth` holds the items new to them).
    cut: float | None = None
    truth_all: sp.csr_matrix | None = None
    #: The catalog as the server would start from it (None for a table of ids only) and the users'
    #: merchant profiles: what the feed shows each user (visibility, stock, audience).
    catalog: CatalogState | None = None
    profiles: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    _never_shown: tuple[np.ndarray, sp.csr_matrix] | None = field(default=None, repr=False)
    _confidences: dict[tuple[float, bool], sp.csr_matrix] = field(default_factory=dict, repr=False)
    _gram: np.ndarray | None = field(default=None, repr=False)
    _earlier: list["Validation"] | None = field(default=None, repr=False)

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
        return ndcg_per_user(self.recommend(score_rows), self.truth, self.k)

    def recommend(self, score_rows: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """Top-k items of each validated user (-1 where short) as the feed would rank them: their
        training items and the items the catalog never shows left out."""
        return blocked_top_k(len(self.rows), self.k, lambda r: self._shown(score_rows(self.rows[r])), self._exclude())[0]

    def never_shown(self) -> tuple[np.ndarray, sp.csr_matrix]:
        """(items shown to nobody: hidden or sold out, validated users × items outside their audience),
        from the catalog's own eligibility rules; empty without a catalog."""
        if self._never_shown is None:
            n = len(self.items)
            hidden, rows, cols = np.zeros(n, dtype=bool), [], []
            if self.catalog is not None:
                hidden = ~self.catalog.available()
                if self.catalog.audience_rules:
                    for r, user_id in enumerate(np.asarray(self.users.ids, dtype=object)[self.rows].tolist()):
                        outside = np.flatnonzero(~self.catalog.audience_mask(self.profiles.get(user_id, {})) & ~hidden)
                        rows += [r] * len(outside)
                        cols += outside.tolist()
            blocked = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(len(self.rows), n))
            self._never_shown = (hidden, blocked)
        return self._never_shown

    def _exclude(self) -> sp.csr_matrix:
        """Each validated user's training items and the items outside their audience."""
        history = self.confidences()[self.rows]
        blocked = self.never_shown()[1]
        return history + blocked if blocked.nnz else history

    def _shown(self, scores: np.ndarray) -> np.ndarray:
        """Scores with the items nobody is shown at -inf (a copy where there are any)."""
        hidden = self.never_shown()[0]
        if not hidden.any():
            return scores
        scores = np.array(scores, dtype=np.float64)
        scores[..., hidden] = -np.inf
        return scores

    def ndcg(self, score_rows: Callable[[np.ndarray], np.ndarray]) -> float:
        """Mean NDCG@k over the validated users."""
        return float(np.mean(self.ndcg_per_user(score_rows)))

    @property
    def protocol(self) -> str:
        return "temporal" if self.cut is not None else "random"

    def popularity_scores(self, half_life_days: float = 0.0) -> np.ndarray:
        """Users per item (plain best sellers), or event weight per item decayed with this half-life."""
        if half_life_days <= 0:
            return np.diff(self.confidences().tocsc().indptr).astype(np.float64)
        weights = event_weights(self.train, self.cfg.events.weights, False, half_life_days)
        cols = self.items.lookup(self.train["item_id"])
        keep = (weights > 0) & (cols >= 0)
        return np.bincount(cols[keep], weights=weights[keep], minlength=len(self.items))

    def popularity_per_user(self, half_life_days: float = 0.0) -> np.ndarray:
        """Per-user NDCG@k of popularity (plain or decayed), the baseline every model must beat."""
        recs = shared_top_k(self._shown(self.popularity_scores(half_life_days)), len(self.rows), self.k,
                            self._exclude())
        return ndcg_per_user(recs, self.truth, self.k)

    def popularity_ndcg(self, half_life_days: float = 0.0) -> float:
        """NDCG@k of (decayed) popularity."""
        return float(np.mean(self.popularity_per_user(half_life_days)))

    def popularity_backtest(self, half_life_days: float) -> float:
        """Mean NDCG@k of (decayed) popularity over this split and, on time, up to `BACKTEST_ORIGINS` − 1
        earlier ones (each cut a window before the last): one window can be a holiday or a campaign
        whose best half-life fails the next month, and choosing a trend costs nothing to check again."""
        return float(np.mean([v.popularity_ndcg(half_life_days) for v in (self, *self.earlier_origins())]))

    def earlier_origins(self) -> list["Validation"]:
        """On time, up to `BACKTEST_ORIGINS` − 1 earlier splits, each cut a window before the last (built
        once); [] for random splits or where time or users run out."""
        if self.cut is None:
            return []
        if self._earlier is None:
            self._earlier = []
            train = self.train
            items = pd.DataFrame({"item_id": list(self.items.ids)})
            while len(self._earlier) < BACKTEST_ORIGINS - 1:
                try:
                    earlier = carve_validation(items, train, self.cfg, "temporal")
                except ValueError:  # too little time or too few users left before this cut
                    break
                earlier.catalog, earlier.profiles = self.catalog, self.profiles
                self._earlier.append(earlier)
                train = earlier.train
        return self._earlier


def carve_validation(items: pd.DataFrame, frame: pd.DataFrame, cfg: TrainConfig,
                     protocol: str = "stratified", second: bool = False,
                     profiles: pd.DataFrame | None = None) -> Validation:
    """Hold out validation pairs of `frame` by `protocol` (temporal, stratified or last-out); raises
    TuningSkipped when fewer than `tuning.min_validation_users` users get a validation pair.
    `profiles` (merchant profiles) decide which items with an audience each user may be shown.

    `second` carves the finals split: other random pairs (stratified), or each user's second
    newest pair (last-out), so that it judges what the first one chose on fresh answers."""
    tcfg = cfg.tuning
    positive = positive_mask(frame, cfg)
    if protocol == "temporal":
        val = _carve_temporal(items, frame, positive, cfg, second)
    else:
        val = _carve_random(items, frame, positive, cfg, protocol, second)
    val.catalog = _catalog(items, val.items)
    val.profiles = _profiles(profiles)
    return val


def _carve_random(items: pd.DataFrame, frame: pd.DataFrame, positive: np.ndarray, cfg: TrainConfig,
                  protocol: str, second: bool) -> Validation:
    """Random pairs (stratified) or each user's newest pair (last-out) held out."""
    tcfg = cfg.tuning
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


def _carve_temporal(items: pd.DataFrame, frame: pd.DataFrame, positive: np.ndarray, cfg: TrainConfig,
                    second: bool) -> Validation:
    """Train before the cut (`evaluate.test_days` before the newest event, at most a quarter of the
    span), validate the known users on what they engaged with after it; `second` takes the other
    half of those users. Raises NoTimeToSplit (too little time) or TuningSkipped (too few users)."""
    tcfg = cfg.tuning
    cut = temporal_cut(frame, cfg.evaluate.test_days, tcfg.min_span_days)
    split = temporal(frame, positive, tcfg.seed, cut)
    train = split.train
    item_map = IdMap.of(items["item_id"])
    users = IdMap.of(train.loc[positive_mask(train, cfg), "user_id"])
    test = split.test[split.test["user_id"].isin(users.index)]
    history = _pair_keys(train.loc[positive_mask(train, cfg)], users, item_map)
    is_new = ~np.isin(_pair_keys(test, users, item_map), history)
    # every known user who came back is validated (the repurchase mix needs those who only rebought);
    # the known-user model is judged on those among them with a new item
    candidates = np.sort(test["user_id"].unique())
    order = np.random.default_rng(tcfg.seed).permutation(len(candidates))
    half = candidates[order[len(order) // 2:]] if second else candidates[order[: len(order) // 2]]
    with_new = int(np.isin(half, test.loc[is_new, "user_id"].unique()).sum())
    if with_new < tcfg.min_validation_users:
        raise TuningSkipped(f"only {with_new} users known before the validation cut engaged with something new after "
                            f"it (each half needs {tcfg.min_validation_users}; tuning.min_validation_users)")
    if len(half) > tcfg.max_validation_users:
        half = np.random.default_rng(tcfg.seed).choice(half, size=tcfg.max_validation_users, replace=False)
    validated = np.sort(half)
    index = {u: i for i, u in enumerate(validated)}
    mine = test["user_id"].isin(index).to_numpy()

    def matrix(pairs: pd.DataFrame) -> sp.csr_matrix:
        return sp.csr_matrix((np.ones(len(pairs), dtype=np.float32),
                              (pairs["user_id"].map(index).to_numpy(), item_map.lookup(pairs["item_id"]))),
                             shape=(len(validated), len(item_map)))

    ts = train["ts"].to_numpy(np.float64)
    span = float(ts.max() - ts.min()) / SECONDS_PER_DAY if len(ts) else 0.0
    ratings = train.loc[train["event"] == "rating", "value"]
    return Validation(train, users, item_map, users.lookup(list(validated)), matrix(test[mine & is_new]), cfg,
                      cfg.evaluate.k, span, bool(ratings.nunique() > 1), cut=cut, truth_all=matrix(test[mine]))


def _catalog(items: pd.DataFrame, item_map: IdMap) -> CatalogState | None:
    """The catalog state the server would start from (None for a table of ids only)."""
    if not {"visible", "stock", "price", "audience", *TEXT_FIELDS} <= set(items.columns):
        return None
    return catalog_state(items, item_map)


def _profiles(profiles: pd.DataFrame | None) -> dict[str, dict[str, str]]:
    """Merchant profiles by user (only their non-empty fields)."""
    if profiles is None or profiles.empty:
        return {}
    fields = [c for c in profiles.columns if c != "user_id"]
    return {str(row[0]): {f: str(v) for f, v in zip(fields, row[1:]) if str(v)}
            for row in profiles[["user_id", *fields]].astype(str).itertuples(index=False)}


def _pair_keys(pairs: pd.DataFrame, users: IdMap, items: IdMap) -> np.ndarray:
    """One int64 per (user, item) pair, for set operations on pairs."""
    return users.lookup(pairs["user_id"]) * np.int64(len(items) + 1) + items.lookup(pairs["item_id"])
