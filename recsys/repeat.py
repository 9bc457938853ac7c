"""Repeat purchases: how much this app's shoppers buy the same item again, and which of a user's own
past purchases they are likely to buy next.

A user's past item i (bought `n` times, last `d` days ago; the item's usual cycle `c` days) scores

    s(i) = (1 + n) · 2^(−d / h) · exp(−γ · |log((d + 1) / (c + 1))|)

frequency, recency with half-life h (0 = none), and the distance from the item's usual cycle (γ = 0:
none). The cycle is the median gap between repeat purchases of the item, shrunk toward the app's
median gap when few repeats were seen. h and γ are tuned on the merchant's own future
(`offline_training/tuning_repeat.py`); with h = γ = 0 this is "buy again" by frequency. The home feed
adds `mix_weight` × s to the scores (z units) of the user's past purchases and keeps them in the feed
(a large weight puts them all first); a mix weight of 0 (a catalogue where nobody buys twice) leaves
the feed as it was, purchases excluded.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.bundle import Bundle, BundleWriter
from recsys.config import RepeatConfig
from recsys.matrix import SECONDS_PER_DAY, IdMap

#: Pseudo-count of repeat gaps pulling an item's cycle toward the app's median gap.
CYCLE_SHRINKAGE = 3.0
#: Events counted as purchases.
PURCHASE = "purchase"
#: A repeat is a purchase on a later day (as the statistics count them), so an item bought less than
#: this long ago is not a repurchase candidate of the home feed yet: it leaves the feed like any purchase.
MIN_REPEAT_GAP_S = SECONDS_PER_DAY


@dataclass
class RepeatModel:
    """Per (user, item) purchase counts and last purchase times of the training data, per-item cycles."""

    #: users × items purchase counts (distinct purchase events); same sparsity pattern as `last_ts`.
    counts: sp.csr_matrix
    #: users × items Unix seconds of the last purchase.
    last_ts: sp.csr_matrix
    #: Usual days between two purchases of each item (0 = never bought twice by anyone, no prior).
    cycle_days: np.ndarray
    #: Newest training event (Unix seconds): purchases in a user's live events after it are new.
    end_ts: float
    settings: RepeatConfig = field(default_factory=RepeatConfig)
    #: How much repeat buying the data has (for the report and the manifest).
    stats: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def fit(cls, frame: pd.DataFrame, users: IdMap, items: IdMap,
            settings: RepeatConfig | None = None) -> "RepeatModel":
        """Counts, last purchase times and item cycles from the purchase events of `frame`."""
        end_ts = float(frame["ts"].max()) if len(frame) else 0.0
        buys = frame.loc[frame["event"] == PURCHASE, ["user_id", "item_id", "ts"]]
        u, i = users.lookup(buys["user_id"]), items.lookup(buys["item_id"])
        keep = (u >= 0) & (i >= 0)
        buys = pd.DataFrame({"u": u[keep], "i": i[keep], "ts": buys["ts"].to_numpy(np.float64)[keep]})
        pairs = buys.groupby(["u", "i"], sort=True)["ts"].agg(["size", "max"]).reset_index()
        shape = (len(users), len(items))
        counts = sp.csr_matrix((pairs["size"].to_numpy(np.float32), (pairs["u"], pairs["i"])), shape=shape)
        last = sp.csr_matrix((pairs["max"].to_numpy(np.float64), (pairs["u"], pairs["i"])), shape=shape)
        cycle, stats = _cycles(buys, len(items))
        return cls(counts, last, cycle, end_ts, settings or RepeatConfig(), stats)

    # --- scoring ------------------------------------------------------------------------------
    def history(self, user: int | None, recent: list[tuple[str, str, float]], items: IdMap
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(item indices, purchase counts, last purchase ts) of a user: the training data's, plus
        purchases among their live `recent` events newer than training."""
        count: dict[int, float] = {}
        last: dict[int, float] = {}
        if user is not None and 0 <= user < self.counts.shape[0]:
            lo, hi = self.counts.indptr[user], self.counts.indptr[user + 1]
            for i, n, ts in zip(self.counts.indices[lo:hi].tolist(), self.counts.data[lo:hi].tolist(),
                                self.last_ts.data[lo:hi].tolist()):
                count[i], last[i] = n, ts
        for item_id, event, ts in recent:
            if event != PURCHASE or ts <= self.end_ts:
                continue
            i = items.get(item_id)
            if i is not None:
                count[i] = count.get(i, 0.0) + 1
                last[i] = max(last.get(i, ts), ts)
        idx = np.fromiter(count, dtype=np.int64, count=len(count))
        return (idx, np.array([count[i] for i in idx.tolist()], dtype=np.float64),
                np.array([last[i] for i in idx.tolist()], dtype=np.float64))

    def scores(self, idx: np.ndarray, count: np.ndarray, last: np.ndarray, now: float,
               settings: RepeatConfig | None = None) -> np.ndarray:
        """s(i) of the module docstring for past items `idx` at time `now`."""
        return repeat_scores(count, last, self.cycle_days[idx], now, settings or self.settings)

    # --- persistence --------------------------------------------------------------------------
    def save(self, writer: BundleWriter) -> None:
        writer.save_array("repeat_indptr", self.counts.indptr.astype(np.int64))
        writer.save_array("repeat_indices", self.counts.indices.astype(np.int32))
        writer.save_array("repeat_counts", self.counts.data.astype(np.float32))
        writer.save_array("repeat_last_ts", self.last_ts.data.astype(np.float64))
        writer.save_array("repeat_cycle_days", self.cycle_days.astype(np.float32))
        writer.save_json("repeat", {"end_ts": self.end_ts, "settings": asdict(self.settings), "stats": self.stats})

    @classmethod
    def load(cls, bundle: Bundle, n_users: int, n_items: int) -> "RepeatModel":
        """The bundle's repeat model; a bundle written before it existed gets an empty one (mix 0)."""
        if not bundle.has("repeat.json"):
            empty = sp.csr_matrix((n_users, n_items), dtype=np.float32)
            return cls(empty, empty.astype(np.float64), np.zeros(n_items, dtype=np.float32), 0.0)
        meta = bundle.json("repeat")
        indptr, indices = bundle.array("repeat_indptr"), bundle.array("repeat_indices")
        shape = (n_users, n_items)
        counts = sp.csr_matrix((bundle.array("repeat_counts"), indices, indptr), shape=shape)
        last = sp.csr_matrix((bundle.array("repeat_last_ts"), indices, indptr), shape=shape)
        return cls(counts, last, bundle.array("repeat_cycle_days"), float(meta["end_ts"]),
                   RepeatConfig(**meta["settings"]), dict(meta["stats"]))


def frequency_key(count: np.ndarray, last_ts: np.ndarray) -> np.ndarray:
    """The plain "buy again" order: most purchases first, the most recent first on ties."""
    return np.asarray(count, dtype=np.float64) * 1e12 + np.asarray(last_ts, dtype=np.float64) / 1e3


def repeat_scores(count: np.ndarray, last_ts: np.ndarray, cycle_days: np.ndarray, now: float | np.ndarray,
                  settings: RepeatConfig) -> np.ndarray:
    """Vectorized s(i); arrays broadcast (offline tuning scores many users at once)."""
    since = np.maximum(np.asarray(now, dtype=np.float64) - last_ts, 0.0) / SECONDS_PER_DAY
    log_s = np.log1p(np.asarray(count, dtype=np.float64))
    if settings.half_life_days > 0:
        log_s = log_s - math.log(2) * since / settings.half_life_days
    if settings.cycle_weight > 0:
        off_cycle = np.abs(np.log((since + 1.0) / (cycle_days + 1.0)))
        log_s = log_s - settings.cycle_weight * np.where(cycle_days > 0, off_cycle, 0.0)
    return np.exp(log_s)


def _cycles(buys: pd.DataFrame, n_items: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Per-item usual repurchase gap (days) and the app's repeat statistics.

    A repeat is a purchase of an item the user had bought on an earlier day; purchases on the same
    day count once (an order line split in two is not a repeat)."""
    days = pd.DataFrame({"u": buys["u"], "i": buys["i"], "day": np.floor(buys["ts"] / SECONDS_PER_DAY)})
    days = days.drop_duplicates().sort_values(["u", "i", "day"], kind="stable")
    gap = days.groupby(["u", "i"], sort=False)["day"].diff().dropna()
    gaps = pd.DataFrame({"i": days.loc[gap.index, "i"], "gap": gap})
    n_pairs = int(days[["u", "i"]].drop_duplicates().shape[0])
    repeat_pairs = int(days.loc[gap.index, ["u", "i"]].drop_duplicates().shape[0])
    cycle = np.zeros(n_items, dtype=np.float32)
    median = float(gaps["gap"].median()) if len(gaps) else 0.0
    if len(gaps):
        per_item = gaps.groupby("i")["gap"].agg(["median", "size"])
        shrunk = (per_item["median"] * per_item["size"] + median * CYCLE_SHRINKAGE) / (per_item["size"] + CYCLE_SHRINKAGE)
        cycle[:] = median
        cycle[per_item.index.to_numpy()] = shrunk.to_numpy(np.float32)
    stats = {"purchase_pairs": n_pairs, "repeat_pairs": repeat_pairs,
             "repeat_rate": round(repeat_pairs / n_pairs, 4) if n_pairs else 0.0,
             "median_gap_days": median, "items_with_repeats": int(gaps["i"].nunique()) if len(gaps) else 0}
    return cycle, stats
