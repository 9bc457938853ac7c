"""LightFM hybrid: users as sums of their profile features, items as sums of their content features.

Users are represented only through features (merged profile keys plus a constant `bias` feature), so a
first-visit user with a profile gets the same kind of vector as a known one. At serving time we score
with NumPy from the saved feature embeddings; LightFM is needed only to train.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from tqdm.auto import tqdm

from recsys.config import HybridConfig
from recsys.bundle import Bundle, BundleWriter
from recsys.item_features import normalize_rows
from recsys.matrix import IdMap

class DeadlineExceeded(TimeoutError):
    """Fitting would not end before the given deadline."""


#: Every user has this feature, so a user without a profile still gets a (popularity-like) vector.
BIAS_FEATURE = "bias"


@dataclass
class HybridModel:
    user_vocab: IdMap
    item_vocab: IdMap
    user_embeddings: np.ndarray  # [n_user_features, d]
    user_biases: np.ndarray  # [n_user_features]
    item_embeddings: np.ndarray  # [n_item_features, d]
    item_biases: np.ndarray  # [n_item_features]
    #: Precomputed representation of the trained catalog's items: features @ embeddings.
    item_repr: np.ndarray  # [n_items, d]
    item_repr_bias: np.ndarray  # [n_items]

    @classmethod
    def fit(cls, interactions: sp.csr_matrix, user_features: sp.csr_matrix, user_vocab: IdMap,
            item_features: sp.csr_matrix, item_vocab: IdMap, cfg: HybridConfig, progress: bool = True,
            num_threads: int = 2, deadline: float | None = None) -> "HybridModel":
        """Train on binary interactions (users × items); features are users × user_vocab, items × item_vocab.

        With a `deadline` (a `time.perf_counter()` value), stops with DeadlineExceeded as soon as the
        epochs so far say the rest would end after it (tuning's budget)."""
        from lightfm import LightFM  # imported here: serving never trains and never needs it

        model = LightFM(no_components=cfg.no_components, loss=cfg.loss, learning_rate=cfg.learning_rate,
                        item_alpha=cfg.item_alpha, user_alpha=cfg.user_alpha, max_sampled=cfg.max_sampled,
                        random_state=cfg.random_state)
        positives = interactions.tocoo()
        positives.data = np.ones_like(positives.data, dtype=np.float32)
        started = time.perf_counter()
        for epoch in tqdm(range(cfg.epochs), desc="hybrid (LightFM)", unit="epoch", disable=not progress, leave=False):
            model.fit_partial(positives, user_features=user_features, item_features=item_features,
                              epochs=1, num_threads=num_threads)
            per_epoch = (time.perf_counter() - started) / (epoch + 1)
            if deadline is not None and time.perf_counter() + per_epoch * (cfg.epochs - epoch - 1) > deadline:
                raise DeadlineExceeded(f"LightFM needs about {per_epoch:.1f} s an epoch, {cfg.epochs} epochs")
        item_emb = model.item_embeddings.astype(np.float32)
        item_bias = model.item_biases.astype(np.float32)
        return cls(user_vocab, item_vocab, model.user_embeddings.astype(np.float32),
                   model.user_biases.astype(np.float32), item_emb, item_bias,
                   np.asarray(item_features @ item_emb, dtype=np.float32),
                   np.asarray(item_features @ item_bias, dtype=np.float32).ravel())

    def user_matrix(self, keys_per_user: list[list[str]]) -> sp.csr_matrix:
        """Users × user features for these key lists (unknown keys ignored), with the bias feature."""
        rows, cols = [], []
        for row, keys in enumerate(keys_per_user):
            idx = {self.user_vocab.get(k) for k in [*keys, BIAS_FEATURE]} - {None}
            rows += [row] * len(idx)
            cols += list(idx)
        matrix = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)),
                               shape=(len(keys_per_user), len(self.user_vocab)))
        return normalize_rows(matrix)

    def user_vectors(self, user_features: sp.csr_matrix) -> np.ndarray:
        """[n_users, d] representations from normalized feature rows."""
        return np.asarray(user_features @ self.user_embeddings, dtype=np.float32)

    def key_vector(self, keys: list[str]) -> np.ndarray:
        """One user's representation from profile keys: `user_vectors(user_matrix([keys]))[0]` without
        building sparse matrices (about ten times cheaper on the request path)."""
        idx = sorted({self.user_vocab.get(k) for k in [*keys, BIAS_FEATURE]} - {None})
        if not idx:
            return np.zeros(self.user_embeddings.shape[1], dtype=np.float32)
        weight = np.float32(1.0 / len(idx))
        return (self.user_embeddings[idx] * weight).sum(axis=0, dtype=np.float32)

    def catalog_moments(self, user: np.ndarray) -> tuple[float, float]:
        """Mean and standard deviation over the trained catalog of `item_repr @ user + item_repr_bias`,
        from cached item moments (d×d) instead of scoring every item."""
        moments = self.__dict__.get("_moments")
        if moments is None:
            reprs = self.item_repr.astype(np.float64)
            bias = self.item_repr_bias.astype(np.float64)
            centered, bias_c = reprs - reprs.mean(axis=0), bias - bias.mean()
            moments = (reprs.mean(axis=0), float(bias.mean()), centered.T @ centered / len(reprs),
                       centered.T @ bias_c / len(reprs), float(bias_c @ bias_c) / len(reprs))
            self.__dict__["_moments"] = moments
        mean_r, mean_b, cov, cov_rb, var_b = moments
        u = user.astype(np.float64)
        variance = float(u @ cov @ u + 2 * u @ cov_rb + var_b)
        return float(mean_r @ u + mean_b), float(np.sqrt(max(variance, 0.0)))

    def scores(self, user_features: sp.csr_matrix, items: np.ndarray | None = None) -> np.ndarray:
        """[n_users, n_items] scores over the trained catalog (or the given item indices)."""
        vectors = self.user_vectors(user_features)
        reprs = self.item_repr if items is None else self.item_repr[items]
        biases = self.item_repr_bias if items is None else self.item_repr_bias[items]
        return vectors @ reprs.T + biases[None, :]

    def item_vectors(self, item_features: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        """Representation and bias of items given by content feature rows (e.g. new items)."""
        return (np.asarray(item_features @ self.item_embeddings, dtype=np.float32),
                np.asarray(item_features @ self.item_biases, dtype=np.float32).ravel())

    def save(self, writer: BundleWriter) -> None:
        writer.save_array("hybrid_user_embeddings", self.user_embeddings)
        writer.save_array("hybrid_user_biases", self.user_biases)
        writer.save_array("hybrid_item_embeddings", self.item_embeddings)
        writer.save_array("hybrid_item_biases", self.item_biases)
        writer.save_array("hybrid_item_repr", self.item_repr)
        writer.save_array("hybrid_item_repr_bias", self.item_repr_bias)
        writer.save_json("hybrid_vocab", {"user": list(self.user_vocab.ids), "item": list(self.item_vocab.ids)})

    @classmethod
    def load(cls, bundle: Bundle) -> "HybridModel":
        vocab = bundle.json("hybrid_vocab")
        return cls(IdMap(tuple(vocab["user"])), IdMap(tuple(vocab["item"])),
                   bundle.array("hybrid_user_embeddings"), bundle.array("hybrid_user_biases"),
                   bundle.array("hybrid_item_embeddings"), bundle.array("hybrid_item_biases"),
                   bundle.array("hybrid_item_repr"), bundle.array("hybrid_item_repr_bias"))
