"""The contract of every model that ranks items for users seen in training (the "known-user" model).

One small base states it once, in the spirit of implicit's `RecommenderBase`; ALS, the item-item
models (item kNN, EASE, RP3beta) and popularity implement it, and the bundle, the tuner, offline
evaluation and the serving pipeline use only this interface:

- `user_scores(users, user_items)`: scores of trained users, batch-first;
- `history_scores(items, weights)`: scores for any history (fold-in): a trained user's history plus
  their events since training, or the events of a user the model never saw;
- `item_affinity(a, b)`: how close items are in the model's eyes, for "because you viewed X";
- `save(writer)` / `load(bundle)`: plain arrays and JSON.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.bundle import Bundle, BundleWriter


class Recommender(ABC):
    """A fitted known-user model over a fixed catalog of `n_items` items."""

    @property
    @abstractmethod
    def family(self) -> str:
        """The model family (`als`, `ease`, …): what a response's `strategy` names."""

    @property
    @abstractmethod
    def n_items(self) -> int:
        """Size of the catalog the model scores."""

    @property
    @abstractmethod
    def params(self) -> dict[str, Any]:
        """The hyper-parameters the model was fitted with (for the report and the manifest)."""

    @abstractmethod
    def user_scores(self, users: np.ndarray, user_items: sp.csr_matrix) -> np.ndarray:
        """[len(users), n_items] scores of users seen in training; `user_items` holds their training
        confidences (rows = users), which item-item models score from."""

    @abstractmethod
    def history_scores(self, items: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """[n_items] scores for a history of (item index, confidence) pairs; items may repeat."""

    def histories_scores(self, histories: sp.csr_matrix) -> np.ndarray:
        """[n_rows, n_items] `history_scores` of each row of a users × items confidence matrix."""
        histories = histories.tocsr()
        ptr = histories.indptr
        out = np.zeros((histories.shape[0], self.n_items), dtype=np.float32)
        for row in range(histories.shape[0]):
            if ptr[row + 1] > ptr[row]:
                out[row] = self.history_scores(histories.indices[ptr[row]:ptr[row + 1]],
                                               histories.data[ptr[row]:ptr[row + 1]])
        return out

    @abstractmethod
    def item_affinity(self, items: np.ndarray, anchors: np.ndarray) -> np.ndarray:
        """[len(items), len(anchors)] similarity of each item to each anchor (history) item."""

    @abstractmethod
    def save(self, writer: BundleWriter) -> None:
        """Write the model's arrays and metadata into a bundle."""

    @classmethod
    @abstractmethod
    def load(cls, bundle: Bundle) -> "Recommender":
        """Read back what `save` wrote."""
