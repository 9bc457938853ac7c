"""Popularity: global, per category, per profile segment; all time-decayed by the caller's weights.

Segment popularity is shrunk toward global popularity, p_s(i) = (c_s(i) + m·p(i)) / (N_s + m), so a
small segment does not rank items by a handful of events. A user with several segment keys is scored
naive-Bayes style: log p(i) + Σ_s [log p_s(i) − log p(i)] / |S| — the mean log-lift of their segments.
Serving uses it for the anonymous feed and to explain picks ("popular in 数码/手机 for your age band").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from recsys.bundle import Bundle, BundleWriter
from recsys.matrix import IdMap


@dataclass
class Popularity:
    #: Decayed interaction weight per item.
    item_weight: np.ndarray
    #: Decayed interaction weight per (segment key, item), dense [n_segments, n_items].
    segment_weight: np.ndarray
    segments: IdMap
    shrinkage: float

    @classmethod
    def fit(cls, user_items: sp.csr_matrix, user_keys: sp.csr_matrix, segments: IdMap, shrinkage: float) -> "Popularity":
        """`user_items` (users × items, decayed weights); `user_keys` (users × segment keys, 0/1)."""
        item_weight = np.asarray(user_items.sum(axis=0)).ravel().astype(np.float64)
        segment_weight = np.asarray((user_keys.T.tocsr() @ user_items).todense(), dtype=np.float64)
        return cls(item_weight.astype(np.float32), segment_weight.astype(np.float32), segments, shrinkage)

    def global_scores(self) -> np.ndarray:
        """Share of all interaction weight per item (a probability)."""
        total = float(self.item_weight.sum())
        return self.item_weight / total if total > 0 else np.zeros_like(self.item_weight)

    def _global_log(self) -> np.ndarray:
        """log p(i), cached: the request path asks for it often and the arrays never change."""
        cached = self.__dict__.get("_log_p")
        if cached is None:
            n = len(self.item_weight)
            # add-half smoothing keeps never-seen items finite and ordered below seen ones
            cached = np.log((self.item_weight.astype(np.float64) + 0.5) / (self.item_weight.sum() + 0.5 * n))
            self.__dict__["_log_p"] = cached
            self.__dict__["_segment_totals"] = self.segment_weight.astype(np.float64).sum(axis=1)
        return cached

    def _lift(self, rows: np.ndarray, items: np.ndarray | slice) -> np.ndarray:
        """log p_s(i) − log p(i) for segment `rows` and the given items (columns)."""
        log_p = self._global_log()[items]
        counts = self.segment_weight[rows][:, items].astype(np.float64)
        totals = self.__dict__["_segment_totals"][rows][:, None]
        p_s = (counts + self.shrinkage * np.exp(log_p)) / (totals + self.shrinkage)
        return np.log(p_s) - log_p

    def segment_log_lift(self, segment_rows: np.ndarray) -> np.ndarray:
        """[len(rows), n_items] log p_s(i) − log p(i) for the given segment rows."""
        return self._lift(np.asarray(segment_rows), slice(None))

    def user_scores(self, keys: list[str]) -> np.ndarray:
        """log-popularity of each item for a user with these segment keys (global if none known)."""
        rows = np.array([r for r in (self.segments.get(k) for k in keys) if r is not None], dtype=np.int64)
        base = self._global_log()
        if len(rows) == 0:
            return base
        return base + self.segment_log_lift(rows).mean(axis=0)

    def top_segment_keys(self, keys: list[str], items: np.ndarray) -> list[str | None]:
        """Per item, the user's segment in which it is most over-represented (for the `reason`).

        Only the given items' columns are computed: this runs for one page of a feed."""
        rows = [(k, r) for k, r in ((k, self.segments.get(k)) for k in keys) if r is not None]
        if not rows or len(items) == 0:
            return [None] * len(items)
        lifts = self._lift(np.array([r for _, r in rows]), np.asarray(items, dtype=np.int64))
        return [rows[b][0] for b in np.argmax(lifts, axis=0).tolist()]

    def save(self, writer: BundleWriter) -> None:
        writer.save_array("pop_item_weight", self.item_weight)
        writer.save_array("pop_segment_weight", self.segment_weight)
        writer.save_json("pop_segments", {"keys": list(self.segments.ids), "shrinkage": self.shrinkage})

    @classmethod
    def load(cls, bundle: Bundle) -> "Popularity":
        meta = bundle.json("pop_segments")
        return cls(bundle.array("pop_item_weight"), bundle.array("pop_segment_weight"),
                   IdMap(tuple(meta["keys"])), float(meta["shrinkage"]))
