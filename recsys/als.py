"""Implicit-feedback ALS (the `implicit` library) for users and items seen in training.

Confidences are re-weighted (BM25 by default, as implicit's own examples do) before ALS, which damps
heavy users and very popular items. Only the factor matrices are saved; at serving time a user's
recent items are folded into a fresh user vector with implicit's `recalculate_user`, so new events
change the feed before the next training.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # implicit runs its own threads; nested BLAS threads slow it down

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from implicit.nearest_neighbours import bm25_weight, tfidf_weight

from offline_training.config import ALSConfig
from recsys.bundle import Bundle, BundleWriter


def weight_confidences(user_items: sp.csr_matrix, cfg: ALSConfig) -> sp.csr_matrix:
    """Apply the configured weighting (item columns are the BM25 'documents' axis), times alpha."""
    if cfg.weighting == "bm25":
        weighted = bm25_weight(user_items.T.tocsr(), K1=cfg.bm25_k1, B=cfg.bm25_b).T.tocsr()
    elif cfg.weighting == "tfidf":
        weighted = tfidf_weight(user_items.T.tocsr()).T.tocsr()
    elif cfg.weighting == "none":
        weighted = user_items.tocsr().copy()
    else:
        raise ValueError(f"unknown ALS weighting {cfg.weighting!r} (bm25, tfidf or none)")
    weighted = weighted.astype(np.float32)
    weighted.data *= cfg.alpha
    return weighted


@dataclass
class ALSModel:
    user_factors: np.ndarray  # [n_users, d]
    item_factors: np.ndarray  # [n_items, d]
    regularization: float
    alpha: float

    @classmethod
    def fit(cls, user_items: sp.csr_matrix, cfg: ALSConfig, progress: bool = True) -> "ALSModel":
        """Train on a users × items confidence matrix (summed event weights)."""
        model = AlternatingLeastSquares(factors=cfg.factors, regularization=cfg.regularization, alpha=1.0,
                                        iterations=cfg.iterations, random_state=cfg.random_state)
        model.fit(weight_confidences(user_items, cfg), show_progress=progress)
        return cls(np.asarray(model.user_factors, dtype=np.float32), np.asarray(model.item_factors, dtype=np.float32),
                   cfg.regularization, cfg.alpha)

    def scores(self, users: np.ndarray) -> np.ndarray:
        """[len(users), n_items] dot-product scores of known users."""
        return self.user_factors[users] @ self.item_factors.T

    def _gram(self) -> np.ndarray:
        """YᵀY + λI of the item factors, computed once per model (it is the same for every user)."""
        cached = self.__dict__.get("_gram_reg")
        if cached is None:
            y = self.item_factors.astype(np.float64)
            cached = y.T @ y + self.regularization * np.eye(y.shape[1])
            self.__dict__["_gram_reg"] = cached
        return cached

    def fold_in(self, items: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """A user vector solved from these (item, confidence) pairs against fixed item factors.

        The same least-squares step as implicit's `recalculate_user` (tests compare the two):
        (YᵀY + λI + Σ_i (c_i − 1) y_i y_iᵀ) x = Σ_i c_i y_i, with c = alpha × summed confidences.
        The confidences are raw event weights, not re-weighted as training rows are: with the BM25
        weighting re-applied, fold-in gave back the trained vectors (top-10 overlap 0.98) but ranked
        worse (stratified known users, NDCG@10: synthetic mall 0.151 vs 0.164 raw, Amazon Scientific
        0.109 vs 0.111), though raw weights cover fewer items (mall coverage 0.63 vs 0.70).
        Done in NumPy with YᵀY cached, because implicit rebuilds YᵀY and a model on every call
        (about 20 ms on 20k items, against well under a millisecond here)."""
        unique, where = np.unique(np.asarray(items, dtype=np.int64), return_inverse=True)
        conf = np.bincount(where, weights=np.asarray(weights, dtype=np.float64)) * self.alpha
        y = self.item_factors[unique].astype(np.float64)
        a = self._gram() + (y.T * (conf - 1.0)) @ y
        b = y.T @ conf
        return np.linalg.solve(a, b).astype(np.float32)

    def save(self, writer: BundleWriter) -> None:
        writer.save_array("als_user_factors", self.user_factors)
        writer.save_array("als_item_factors", self.item_factors)
        writer.save_json("als_meta", {"regularization": self.regularization, "alpha": self.alpha})

    @classmethod
    def load(cls, bundle: Bundle) -> "ALSModel":
        meta = bundle.json("als_meta")
        return cls(bundle.array("als_user_factors"), bundle.array("als_item_factors"),
                   float(meta["regularization"]), float(meta["alpha"]))
