"""Related items for the detail page: collaborative neighbours blended with content similarity.

Collaborative similarity is implicit's item-item cosine over who interacted with what; content
similarity is the cosine of the hybrid model's content-only item vectors, which also exists for an
item published after training. The blend gives items with few interactions sensible neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from implicit.nearest_neighbours import ItemItemRecommender

from recsys.bundle import Bundle, BundleWriter
from recsys.topk import blocked_top_k


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


@dataclass
class RelatedItems:
    neighbours: np.ndarray  # [n_items, K] item indices, -1 = empty
    scores: np.ndarray  # [n_items, K]

    @classmethod
    def fit(cls, user_items: sp.csr_matrix, content_vectors: np.ndarray, k: int, content_weight: float) -> "RelatedItems":
        """Neighbours of every item from interactions (users × items) and content vectors (items × d)."""
        # cosine = dot product of L2-normalized item columns (done here: implicit's own
        # CosineRecommender hands itself a COO matrix and warns about it)
        norms = np.sqrt(np.asarray(user_items.multiply(user_items).sum(axis=0)).ravel())
        unit_columns = sp.csr_matrix(user_items @ sp.diags(1.0 / np.maximum(norms, 1e-12)), dtype=np.float64)
        knn = ItemItemRecommender(K=k + 1)
        knn.fit(unit_columns, show_progress=False)
        collab = sp.csr_matrix(knn.similarity)
        collab.setdiag(0)
        collab.eliminate_zeros()
        unit = unit_rows(content_vectors.astype(np.float32))
        w = float(content_weight)

        def block(rows: np.ndarray) -> np.ndarray:
            content = unit[rows] @ unit.T
            dense_collab = collab[rows].toarray()
            has_collab = dense_collab.any(axis=1, keepdims=True)
            # items without co-occurrence fall back to content alone
            score = np.where(has_collab, (1 - w) * dense_collab + w * content, content)
            score[np.arange(len(rows)), rows] = -np.inf
            return score

        ids, vals = blocked_top_k(user_items.shape[1], k, block, block=512)
        return cls(ids.astype(np.int32), vals.astype(np.float32))

    def save(self, writer: BundleWriter) -> None:
        writer.save_array("related_neighbours", self.neighbours)
        writer.save_array("related_scores", self.scores)

    @classmethod
    def load(cls, bundle: Bundle) -> "RelatedItems":
        return cls(bundle.array("related_neighbours"), bundle.array("related_scores"))
