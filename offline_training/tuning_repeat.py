"""Tune repeat purchases on the merchant's future: how to rank a user's past purchases (buy again) and
how much of the home feed they get (`recsys/repeat.py`).

On a split in time (`Validation` with `truth_all`), the served scores of the chosen known-user path
and the repeat model fitted before the cut rank each validated user's next purchases, repeats
included:
1. recency half-life h and cycle weight γ are chosen for the buy-again order (past purchases first,
   by repeat score; the model fills the rest of the page);
2. the mix weight w is chosen for the home feed: z(model) + w · s on past purchases, w = 0 being the
   feed that excludes purchases. A catalogue where nobody buys twice ends at w = 0.
Both are picked on the search half of the validated users; the finals half reports the home feed
against "buy again" (own items by purchase count) and best sellers — the publish gate's comparison.
Every candidate is one vectorized pass over a small per-user candidate table, so the grid is cheap.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from offline_training.metrics import ndcg_per_user
from offline_training.validation import Comparison, Validation
from recsys.config import RepeatConfig, TrainConfig
from recsys.models import zscore
from recsys.repeat import MIN_REPEAT_GAP_S, RepeatModel, frequency_key, repeat_scores

#: Recency half-lives tried, as fractions of the training span (0 = none).
HALF_LIFE_FRACTIONS = (0.0, 0.03, 0.1, 0.3, 1.0)
CYCLE_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0)
#: Mix weights tried (z units per unit of repeat score); the last puts past purchases first.
MIX_WEIGHTS = (0.0, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 20.0, 1000.0)
#: Past purchases kept per user (the most bought) in the candidate table.
MAX_PAST = 100


@dataclass
class Candidates:
    """Per validated user: the model's best new items and their past purchases, padded (-1 = none)."""

    items: np.ndarray  # [users, k + R] catalog indices
    base: np.ndarray  # z score of each candidate (-inf for padding)
    past: np.ndarray  # bool: a past purchase
    count: np.ndarray
    last_ts: np.ndarray
    cycle: np.ndarray


def candidate_table(val: Validation, repeat: RepeatModel, scores: Callable[[np.ndarray], np.ndarray],
                    rows: np.ndarray) -> Candidates:
    """Top-k new items by z(model) (training history excluded) and past purchases of `rows` (positions
    into `val.rows`)."""
    k = val.k
    history = val.confidences()
    users = val.rows[rows]
    counts = repeat.counts[users]
    last = repeat.last_ts[users]
    r = min(MAX_PAST, max(1, int(np.diff(counts.indptr).max(initial=0))))
    n = len(rows)
    items = np.full((n, k + r), -1, dtype=np.int64)
    base = np.full((n, k + r), -np.inf)
    past = np.zeros((n, k + r), dtype=bool)
    count = np.zeros((n, k + r))
    last_ts = np.zeros((n, k + r))
    for lo in range(0, n, 256):
        block = np.arange(lo, min(n, lo + 256))
        z = zscore(scores(users[block]))
        seen = history[users[block]]
        new_z = z.copy()
        new_z[seen.nonzero()] = -np.inf
        top = np.argpartition(-new_z, k - 1, axis=1)[:, :k] if new_z.shape[1] > k else np.argsort(-new_z, axis=1)[:, :k]
        items[block, : top.shape[1]] = top
        base[block, : top.shape[1]] = np.take_along_axis(new_z, top, axis=1)
        for j, row in enumerate(block):
            lo_p, hi_p = counts.indptr[row], counts.indptr[row + 1]
            idx, cnt, ts = counts.indices[lo_p:hi_p], counts.data[lo_p:hi_p], last.data[lo_p:hi_p]
            if len(idx) > r:
                keep = np.argsort(-cnt, kind="stable")[:r]
                idx, cnt, ts = idx[keep], cnt[keep], ts[keep]
            m = len(idx)
            items[row, k:k + m], base[row, k:k + m], past[row, k:k + m] = idx, z[j, idx], True
            count[row, k:k + m], last_ts[row, k:k + m] = cnt, ts
    cycle = np.where(items >= 0, repeat.cycle_days[np.maximum(items, 0)], 0.0)
    base[~np.isfinite(base) & past] = -50.0  # a past purchase the model never scores still ranks by its repeat score
    return Candidates(items, base, past, count, last_ts, cycle)


def rank_mixed(c: Candidates, settings: RepeatConfig, now: float, k: int) -> np.ndarray:
    """[users, k] catalog indices of the home feed with repurchases mixed in by `settings`."""
    s = np.where(c.past, repeat_scores(c.count, c.last_ts, c.cycle, now, settings), 0.0)
    mixed = c.past & (now - c.last_ts >= MIN_REPEAT_GAP_S)  # as serving: bought today is not rebought yet
    total = c.base + settings.mix_weight * s if settings.mix_weight > 0 else c.base
    total = np.where(c.past & ~(mixed & (settings.mix_weight > 0)), -np.inf, total)
    total = np.where(c.items >= 0, total, -np.inf)
    order = np.argsort(-total, axis=1, kind="stable")[:, :k]
    picked = np.take_along_axis(c.items, order, axis=1)
    return np.where(np.take_along_axis(total, order, axis=1) > -np.inf, picked, -1)


def buy_again_ranks(c: Candidates, k: int) -> np.ndarray:
    """The "buy again" baseline: past purchases by count (ties: most recent), nothing else."""
    key = np.where(c.past, frequency_key(c.count, c.last_ts), -np.inf)
    order = np.argsort(-key, axis=1, kind="stable")[:, :k]
    return np.where(np.take_along_axis(key, order, axis=1) > -np.inf, np.take_along_axis(c.items, order, axis=1), -1)


@dataclass
class RepeatTuning:
    settings: dict[str, float]
    stats: dict[str, Any]
    #: Finals half, all items: home feed with the mix, without it, "buy again", best sellers (NDCG@k).
    home: float
    model_alone: float
    buy_again: float
    best_sellers: float
    n_users: int
    grid: list[dict[str, Any]]
    note: str = ""
    #: Paired comparisons of the home feed with each baseline on the finals half (for the gate).
    versus: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def tune_repeat(val: Validation, finals: Validation, cfg: TrainConfig,
                scores: Callable[[np.ndarray], np.ndarray],
                finals_scores: Callable[[np.ndarray], np.ndarray]) -> RepeatTuning:
    """Choose h, γ and w on `val` (see the module docstring) and compare on `finals`; `scores(user rows)`
    gives the served known-user scores on each split's training side."""
    assert val.cut is not None and val.truth_all is not None and finals.truth_all is not None
    k = val.k
    repeat = RepeatModel.fit(val.train, val.users, val.items)
    pinned = {p.split(".", 1)[1]: cfg.get(p) for p in cfg.pinned if p.startswith("repeat.")}
    search = candidate_table(val, repeat, scores, np.arange(len(val.rows)))
    grid: list[dict[str, Any]] = []

    def score(c: Candidates, truth, settings: RepeatConfig) -> np.ndarray:
        return ndcg_per_user(rank_mixed(c, settings, val.cut, k), truth, k)

    def candidates(name: str, values: tuple[float, ...]) -> tuple[float, ...]:
        return (pinned[name],) if name in pinned else values

    best_order = None
    for fraction in candidates("half_life_days", HALF_LIFE_FRACTIONS):
        half_life = fraction if "half_life_days" in pinned else round(fraction * val.span_days, 3)
        for gamma in candidates("cycle_weight", CYCLE_WEIGHTS):
            settings = RepeatConfig(half_life, gamma, 1000.0)
            value = float(np.mean(score(search, val.truth_all, settings)))
            grid.append({"half_life_days": half_life, "cycle_weight": gamma, "mix_weight": "past first",
                         "ndcg": round(value, 5)})
            if best_order is None or value > best_order[0] + 1e-9:
                best_order = (value, half_life, gamma)
    assert best_order is not None
    _, half_life, gamma = best_order
    best_mix = None
    for w in candidates("mix_weight", MIX_WEIGHTS):
        value = float(np.mean(score(search, val.truth_all, RepeatConfig(half_life, gamma, w))))
        grid.append({"half_life_days": half_life, "cycle_weight": gamma, "mix_weight": w, "ndcg": round(value, 5)})
        if best_mix is None or value > best_mix[0] + 1e-9:
            best_mix = (value, w)
    assert best_mix is not None
    chosen = RepeatConfig(half_life, gamma, best_mix[1])
    final = candidate_table(finals, RepeatModel.fit(finals.train, finals.users, finals.items), finals_scores,
                            np.arange(len(finals.rows)))
    home = score(final, finals.truth_all, chosen)
    alone = score(final, finals.truth_all, dataclasses.replace(chosen, mix_weight=0.0))
    again = ndcg_per_user(buy_again_ranks(final, k), finals.truth_all, k)
    pop = finals.popularity_scores()
    sellers = ndcg_per_user(np.argsort(-pop)[:k][None, :].repeat(len(finals.rows), axis=0), finals.truth_all, k)
    versus = {name: dataclasses.asdict(Comparison.of(home, other))
              for name, other in (("buy again", again), ("best sellers", sellers), ("model alone", alone))}
    note = "" if chosen.mix_weight > 0 else "past purchases are not mixed into the home feed: it did not help here"
    return RepeatTuning(dataclasses.asdict(chosen), repeat.stats, float(np.mean(home)), float(np.mean(alone)),
                        float(np.mean(again)), float(np.mean(sellers)), len(finals.rows), grid, note, versus)


def apply_repeat(cfg: TrainConfig, tuning: RepeatTuning) -> TrainConfig:
    """The config with the chosen repeat settings (pinned ones were never searched)."""
    tuned = cfg.copy()
    for name, value in tuning.settings.items():
        tuned.set(f"repeat.{name}", float(value))
    return tuned
