"""Everything one bundle holds, and how each kind of user is scored from it.

- known user (in training): the known-user model (ALS, EASE, RP3beta, item kNN or popularity);
- user known only by profile (first visit): profile-neighbour popularity blended with the LightFM hybrid;
- nobody: global popularity.
Scores of different models are not comparable, so blends work on per-user z-scores.
The same methods serve offline evaluation (batches) and, later, the serving routes (one user).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.bundle import Bundle, BundleWriter
from recsys.hybrid import HybridModel
from recsys.known import load_known, save_known
from recsys.matrix import IdMap
from recsys.popularity import Popularity
from recsys.profile_kernel import ProfileKernel
from recsys.recommender import Recommender
from recsys.related import RelatedItems, unit_rows
from recsys.repeat import RepeatModel

CATALOG_COLUMNS = ("item_id", "title", "category", "brand", "tags", "price", "stock", "visible", "audience")


def _require(part: object, name: str):
    """The fitted part, or a clear error if this TrainedModels was fitted without it."""
    if part is None:
        raise RuntimeError(f"these models were fitted without the {name} part")
    return part


def zscore(scores: np.ndarray) -> np.ndarray:
    """Standardize each row (mean 0, std 1) so scores of different models can be added."""
    scores = np.asarray(scores, dtype=np.float64)
    mean = scores.mean(axis=-1, keepdims=True)
    std = scores.std(axis=-1, keepdims=True)
    return (scores - mean) / np.maximum(std, 1e-9)


@dataclass
class TrainedModels:
    users: IdMap
    items: IdMap
    catalog: pd.DataFrame
    #: Training confidences, users × items (history of known users; excluded from their feeds).
    user_items: sp.csr_matrix
    #: The optional parts are None only in evaluation, which fits what its protocol needs.
    known: Recommender | None
    hybrid: HybridModel | None
    popularity: Popularity
    related: RelatedItems | None
    #: Content-only item vectors (no identity feature): for new items and content similarity.
    content_vectors: np.ndarray | None
    #: Profile-neighbour popularity for first-time visitors.
    kernel: ProfileKernel
    #: Share of the hybrid in the first-visit blend (0..1); the rest is the profile kernel.
    hybrid_weight: float
    #: Users' own past purchases: the buy-again shelf, and repurchases mixed into the home feed.
    repeat: RepeatModel | None = None

    # --- scoring -------------------------------------------------------------------------
    def history(self, user: int) -> tuple[np.ndarray, np.ndarray]:
        """(item indices, confidences) of a known user's training history; a plain CSR row slice
        (scipy's row indexing costs half a millisecond, too much on the request path)."""
        start, end = self.user_items.indptr[user], self.user_items.indptr[user + 1]
        return self.user_items.indices[start:end], self.user_items.data[start:end]

    def known_user_scores(self, users: np.ndarray) -> np.ndarray:
        """[len(users), n_items] scores of trained users by the known-user model."""
        return _require(self.known, "known-user model").user_scores(users, self.user_items)

    def profile_user_scores(self, keys_per_user: list[list[str]]) -> np.ndarray:
        """First-visit users: z(profile-neighbour popularity) blended with z(hybrid)."""
        w = self.hybrid_weight
        blend = np.zeros((len(keys_per_user), len(self.items)))
        if w < 1:
            blend += (1 - w) * zscore(np.stack([self.kernel.scores(keys) for keys in keys_per_user]))
        if w > 0:
            model: HybridModel = _require(self.hybrid, "hybrid")
            blend += w * zscore(model.scores(model.user_matrix(keys_per_user)))
        return blend

    def first_visit_scores(self, keys: list[str]) -> np.ndarray:
        """`profile_user_scores([keys])[0]` for one user, without the batch path's sparse matrices."""
        w = self.hybrid_weight
        blend = np.zeros(len(self.items))
        if w < 1:
            blend += (1 - w) * zscore(self.kernel.scores(keys))
        if w > 0:
            model: HybridModel = _require(self.hybrid, "hybrid")
            blend += w * zscore(model.item_repr @ model.key_vector(keys) + model.item_repr_bias)
        return blend

    def popularity_scores(self) -> np.ndarray:
        return self.popularity.global_scores()

    def content_scores(self, users: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Cosine of each candidate's content vector with the mean content vector of the user's history."""
        unit = unit_rows(_require(self.content_vectors, "hybrid"))
        history = self.user_items[users]
        weights = sp.diags(1.0 / np.maximum(np.asarray(history.sum(axis=1)).ravel(), 1e-9)) @ history
        profile = unit_rows(np.asarray(weights @ unit))
        return profile @ unit[candidates].T

    # --- persistence ---------------------------------------------------------------------
    def save(self, writer: BundleWriter) -> None:
        if self.known is None or self.hybrid is None or self.related is None or self.content_vectors is None:
            raise ValueError("a bundle needs every model; fit with all parts")
        writer.save_json("users", list(self.users.ids))
        writer.save_json("catalog", {c: self.catalog[c].tolist() for c in CATALOG_COLUMNS})
        ui = self.user_items.tocsr()
        writer.save_array("user_items_indptr", ui.indptr.astype(np.int64))
        writer.save_array("user_items_indices", ui.indices.astype(np.int32))
        writer.save_array("user_items_data", ui.data.astype(np.float32))
        writer.save_array("content_vectors", self.content_vectors)
        writer.save_json("blend", {"hybrid_weight": self.hybrid_weight})
        self.kernel.save(writer)
        save_known(self.known, writer)
        self.hybrid.save(writer)
        self.popularity.save(writer)
        self.related.save(writer)
        if self.repeat is not None:
            self.repeat.save(writer)

    @classmethod
    def load(cls, bundle: Bundle) -> "TrainedModels":
        catalog = pd.DataFrame(bundle.json("catalog"))
        users = IdMap(tuple(bundle.json("users")))
        items = IdMap(tuple(catalog["item_id"]))
        user_items = sp.csr_matrix(
            (bundle.array("user_items_data"), bundle.array("user_items_indices"), bundle.array("user_items_indptr")),
            shape=(len(users), len(items)),
        )
        blend: dict[str, Any] = bundle.json("blend")
        return cls(users, items, catalog, user_items, load_known(bundle), HybridModel.load(bundle),
                   Popularity.load(bundle), RelatedItems.load(bundle), bundle.array("content_vectors"),
                   ProfileKernel.load(bundle, len(items)), float(blend["hybrid_weight"]),
                   RepeatModel.load(bundle, len(users), len(items)))
