"""Item-item models: a user's scores are their history times an item × item weight matrix W.

Three ways to learn W, the strong simple baselines of Dacrema et al. ("Are we really making much
progress?", RecSys 2019) that neural models often fail to beat:
- `itemknn`: implicit's item-item neighbours (cosine, BM25 or TF-IDF weighted co-occurrence);
- `ease`: EASE (Steck, WWW 2019), the closed-form ridge regression of every item on all others,
  B = I − P·diag(1/diag P) with P = (XᵀX + λI)⁻¹ — dense n_items², so only for catalogs whose
  Gram matrix fits the memory limit (`ease_fits`);
- `rp3beta`: RP3beta (Paudel et al. 2017), a two-step random walk user → item → user → item with
  transition probabilities raised to α and the arrival item's popularity divided out to the power β.

W is kept as its K strongest entries per row, as padded arrays [n_items, K]. Fold-in is what
scoring is: a history vector times W, so a user's events since training count at once, and a user
the model never saw is scored the same way. EASE and RP3beta learn from and score binary histories
(did the user interact with the item); item kNN uses the confidences, as implicit's does.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
from implicit.nearest_neighbours import BM25Recommender, CosineRecommender, TFIDFRecommender
from implicit.utils import ParameterWarning

from recsys.bundle import Bundle, BundleWriter
from recsys.recommender import Recommender

SIMILARITIES = ("cosine", "bm25", "tfidf")
#: Bytes per Gram-matrix entry of the EASE solve (float64); the memory limit counts this matrix.
EASE_BYTES_PER_ENTRY = 8


def ease_fits(n_items: int, max_memory_mb: float) -> bool:
    """Whether EASE's dense n_items × n_items solve fits `max_memory_mb` (it needs about twice
    the Gram matrix: the matrix and its inverse)."""
    return 2 * n_items * n_items * EASE_BYTES_PER_ENTRY <= max_memory_mb * 2**20


def _binary(user_items: sp.csr_matrix) -> sp.csr_matrix:
    binary = sp.csr_matrix(user_items, dtype=np.float32, copy=True)
    binary.data[:] = 1.0
    return binary


def _top_k_rows(matrix: np.ndarray | sp.spmatrix | Callable[[np.ndarray], np.ndarray], k: int, n: int | None = None,
                block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """The k entries of largest magnitude of each row (zeros and the diagonal dropped) as padded
    arrays, strongest first. Magnitude, not value: EASE's negative weights carry as much as its
    positive ones (ML-100k, 300 weights per item: NDCG@10 0.476 kept by magnitude, 0.462 by value).
    `matrix` may be a function giving the dense rows of a block (then `n` is the number of rows)."""
    if callable(matrix):
        rows_of, n_rows, n_cols = matrix, int(n or 0), int(n or 0)
    else:
        n_rows, n_cols = matrix.shape

        def rows_of(rows: np.ndarray) -> np.ndarray:
            dense = matrix[rows]
            return dense.toarray() if sp.issparse(dense) else np.array(dense, dtype=np.float64)
    k = max(1, min(k, n_cols - 1))
    ids = np.full((n_rows, k), -1, dtype=np.int32)
    vals = np.zeros((n_rows, k), dtype=np.float32)
    for start in range(0, n_rows, block):
        rows = np.arange(start, min(start + block, n_rows))
        dense = rows_of(rows)
        dense[np.arange(len(rows)), rows] = 0.0
        part = np.argpartition(-np.abs(dense), k - 1, axis=1)[:, :k]
        top = np.take_along_axis(dense, part, axis=1)
        order = np.argsort(-np.abs(top), axis=1, kind="stable")
        part, top = np.take_along_axis(part, order, axis=1), np.take_along_axis(top, order, axis=1)
        keep = top != 0
        ids[rows] = np.where(keep, part, -1)
        vals[rows] = np.where(keep, top, 0.0)
    return ids, vals


def gram_matrix(user_items: sp.csr_matrix) -> np.ndarray:
    """XᵀX of the binary interactions (dense, float64): EASE's input, the same for every λ."""
    x = _binary(user_items)
    return (x.T @ x).toarray().astype(np.float64)


def fit_ease(user_items: sp.csr_matrix, l2: float, neighbours: int,
             gram: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """EASE weights, top `neighbours` per item; `gram` (from `gram_matrix`) saves recomputing XᵀX."""
    from scipy.linalg import lapack
    from threadpoolctl import threadpool_limits

    a = (gram_matrix(user_items) if gram is None else gram).copy()
    a[np.diag_indices_from(a)] += l2
    # Cholesky inverse of the symmetric positive definite XᵀX + λI: a third of a general inverse's
    # work; on all cores (implicit asks for one BLAS thread elsewhere).
    with threadpool_limits(limits=len(os.sched_getaffinity(0)), user_api="blas"):
        factor, info = lapack.dpotrf(a, lower=False, overwrite_a=True)
        if info == 0:
            p, info = lapack.dpotri(factor, lower=False, overwrite_c=True)
    if info != 0:
        raise np.linalg.LinAlgError(f"EASE: XᵀX + λI is not positive definite (LAPACK info {info})")
    n = p.shape[0]
    scale = -1.0 / np.diag(p)
    columns = np.arange(n)

    def rows_of_b(rows: np.ndarray) -> np.ndarray:
        # P = (XᵀX + λI)⁻¹ is symmetric and LAPACK filled only its upper triangle: row i is P[i, j]
        # for j >= i and P[j, i] for j < i. B = −P · diag(1 / diag P).
        full = np.where(columns[None, :] >= rows[:, None], p[rows, :], p[:, rows].T)
        return full * scale[None, :]

    return _top_k_rows(rows_of_b, neighbours, n)


def fit_rp3beta(user_items: sp.csr_matrix, alpha: float, beta: float, neighbours: int) -> tuple[np.ndarray, np.ndarray]:
    """RP3beta weights, top `neighbours` per item."""
    x = _binary(user_items)
    user_degree = np.asarray(x.sum(axis=1)).ravel()
    item_degree = np.asarray(x.sum(axis=0)).ravel()
    p_ui = sp.diags(1.0 / np.maximum(user_degree, 1.0)) @ x
    p_iu = sp.diags(1.0 / np.maximum(item_degree, 1.0)) @ x.T.tocsr()
    p_ui.data **= alpha
    p_iu = p_iu.tocsr()
    p_iu.data **= alpha
    penalty = 1.0 / np.power(np.maximum(item_degree, 1.0), beta)

    def rows_of_w(rows: np.ndarray) -> np.ndarray:
        # a block of rows of P_iu · P_ui at a time: the whole product is nearly dense on big catalogs
        return (p_iu[rows] @ p_ui).toarray() * penalty[None, :]

    return _top_k_rows(rows_of_w, neighbours, x.shape[1])


def fit_itemknn(user_items: sp.csr_matrix, similarity: str, neighbours: int) -> tuple[np.ndarray, np.ndarray]:
    """implicit's item-item neighbours over the confidences, top `neighbours` per item."""
    makers = {"cosine": CosineRecommender, "bm25": BM25Recommender, "tfidf": TFIDFRecommender}
    if similarity not in makers:
        raise ValueError(f"unknown item kNN similarity {similarity!r} ({', '.join(SIMILARITIES)})")
    # K+1 because implicit keeps each item's similarity to itself
    knn = makers[similarity](K=neighbours + 1)
    with warnings.catch_warnings():
        # implicit's weighting hands its own all-pairs kernel a COO matrix and then warns about it
        warnings.simplefilter("ignore", ParameterWarning)
        knn.fit(sp.csr_matrix(user_items, dtype=np.float64), show_progress=False)
    return _top_k_rows(sp.csr_matrix(knn.similarity), neighbours)


@dataclass
class ItemItemModel(Recommender):
    """Scores = history · W, with W stored as each item's K best neighbours."""

    kind: str  # "itemknn", "ease" or "rp3beta"
    neighbours: np.ndarray  # [n_items, K] int32, -1 = empty slot
    weights: np.ndarray  # [n_items, K] float32
    binary: bool  # histories count 1 per item (EASE, RP3beta) instead of their confidence
    fitted_params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def fit(cls, kind: str, user_items: sp.csr_matrix, params: dict[str, Any],
            gram: np.ndarray | None = None) -> "ItemItemModel":
        """Fit W by `kind` with its parameters (see the module docstring); EASE may be given XᵀX."""
        k = int(params["neighbours"])
        if kind == "ease":
            ids, vals = fit_ease(user_items, float(params["l2"]), k, gram)
        elif kind == "rp3beta":
            ids, vals = fit_rp3beta(user_items, float(params["alpha"]), float(params["beta"]), k)
        elif kind == "itemknn":
            ids, vals = fit_itemknn(user_items, str(params["similarity"]), k)
        else:
            raise ValueError(f"unknown item-item model {kind!r}")
        return cls(kind, ids, vals, binary=kind != "itemknn", fitted_params=dict(params))

    def keep(self, k: int) -> "ItemItemModel":
        """The same model with only each item's `k` strongest weights (they are stored strongest
        first): what fitting with `neighbours = k` gives, without refitting (tuning scores one
        EASE solve at several k this way)."""
        k = max(1, min(int(k), self.neighbours.shape[1]))
        return ItemItemModel(self.kind, self.neighbours[:, :k], self.weights[:, :k], self.binary,
                             {**self.fitted_params, "neighbours": k})

    @property
    def family(self) -> str:
        return self.kind

    @property
    def n_items(self) -> int:
        return self.neighbours.shape[0]

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.fitted_params)

    def matrix(self) -> sp.csr_matrix:
        """W as a sparse matrix (cached: batch scoring multiplies whole histories by it)."""
        cached = self.__dict__.get("_matrix")
        if cached is None:
            n, k = self.neighbours.shape
            keep = self.neighbours >= 0
            rows = np.repeat(np.arange(n), k).reshape(n, k)[keep]
            cached = sp.csr_matrix((self.weights[keep], (rows, self.neighbours[keep])), shape=(n, n))
            self.__dict__["_matrix"] = cached
        return cached

    def _values(self, matrix: sp.csr_matrix) -> sp.csr_matrix:
        if not self.binary:
            return matrix
        binary = matrix.copy()
        binary.data = (binary.data > 0).astype(binary.data.dtype)
        return binary

    def user_scores(self, users: np.ndarray, user_items: sp.csr_matrix) -> np.ndarray:
        return self.histories_scores(user_items[users])

    def histories_scores(self, histories: sp.csr_matrix) -> np.ndarray:
        return np.asarray((self._values(histories.tocsr()) @ self.matrix()).todense(), dtype=np.float32)

    def history_scores(self, items: np.ndarray, weights: np.ndarray) -> np.ndarray:
        items = np.asarray(items, dtype=np.int64)
        if self.binary:
            items = np.unique(items)
            weights = np.ones(len(items))
        nbr = self.neighbours[items]
        contrib = self.weights[items] * np.asarray(weights, dtype=np.float32)[:, None]
        keep = nbr >= 0
        return np.bincount(nbr[keep], weights=contrib[keep], minlength=self.n_items).astype(np.float32)

    def item_affinity(self, items: np.ndarray, anchors: np.ndarray) -> np.ndarray:
        """W[anchor, item]: how much each anchor (history item) adds to each item's score (`items`
        distinct). Read from the anchors' neighbour lists: this runs for every page of a feed."""
        items, anchors = np.asarray(items, dtype=np.int64), np.asarray(anchors, dtype=np.int64)
        position = np.full(self.n_items, -1, dtype=np.int64)
        position[items] = np.arange(len(items))
        nbr = self.neighbours[anchors]
        where = np.where(nbr >= 0, position[np.maximum(nbr, 0)], -1)
        keep = where >= 0
        out = np.zeros((len(items), len(anchors)), dtype=np.float32)
        column = np.broadcast_to(np.arange(len(anchors))[:, None], nbr.shape)
        out[where[keep], column[keep]] = self.weights[anchors][keep]
        return out

    def save(self, writer: BundleWriter) -> None:
        writer.save_array("item_model_neighbours", self.neighbours)
        writer.save_array("item_model_weights", self.weights)
        writer.save_json("item_model_meta", {"kind": self.kind, "binary": self.binary,
                                             "params": _jsonable(self.fitted_params)})

    @classmethod
    def load(cls, bundle: Bundle) -> "ItemItemModel":
        meta = bundle.json("item_model_meta")
        return cls(str(meta["kind"]), bundle.array("item_model_neighbours"), bundle.array("item_model_weights"),
                   bool(meta["binary"]), dict(meta["params"]))


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    """Parameters as JSON numbers (NumPy scalars become Python ones)."""
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in params.items()}
