"""Top-k ranking metrics with binary relevance, vectorized over users.

Definitions (k = cut-off, T = a user's relevant test items, hits at 1-based ranks r):
- precision@k = hits / k;  recall@k = hits / |T|;  hr@k = 1 if any hit
- ndcg@k = sum 1/log2(r+1) over hits / sum 1/log2(r+1) for r = 1..min(|T|, k)
- map@k = sum over hits of precision@r / min(|T|, k)
- coverage = distinct recommended items / catalog size
These match Microsoft Recommenders' python_evaluation (binary relevance, top-k) so published figures
compare like with like; users without test items are not counted.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

METRIC_NAMES = ("ndcg", "precision", "recall", "map", "hr")


def hit_matrix(recs: np.ndarray, truth: sp.csr_matrix) -> np.ndarray:
    """hits[u, r] = 1 if recs[u, r] is in row u of `truth`; -1 in `recs` marks an empty slot."""
    n_users, k = recs.shape
    n_cols = truth.shape[1]
    truth = truth.tocsr()
    truth.sort_indices()
    rows = np.repeat(np.arange(truth.shape[0], dtype=np.int64), np.diff(truth.indptr))
    truth_keys = rows * n_cols + truth.indices.astype(np.int64)
    rec_keys = np.arange(n_users, dtype=np.int64)[:, None] * n_cols + recs.astype(np.int64)
    hits = np.isin(rec_keys, truth_keys) & (recs >= 0)
    return hits.astype(np.float64)


def ndcg_per_user(recs: np.ndarray, truth: sp.csr_matrix, k: int) -> np.ndarray:
    """NDCG@k of every user (row) with at least one relevant item, in row order."""
    recs = recs[:, :k]
    n_true = np.diff(truth.tocsr().indptr)
    evaluated = n_true > 0
    hits = hit_matrix(recs, truth)[evaluated]
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.cumsum(discounts)[np.minimum(n_true[evaluated], k) - 1]
    return (hits @ discounts) / ideal


def ranking_metrics(recs: np.ndarray, truth: sp.csr_matrix, k: int, n_items: int) -> dict[str, float]:
    """Mean metrics@k over users (rows) with at least one relevant item; plus catalog coverage.

    `recs` is (n_users, >=k) item indices, best first; `truth` is (n_users, n_items) relevance.
    """
    recs = recs[:, :k]
    n_true = np.diff(truth.tocsr().indptr)
    evaluated = n_true > 0
    hits = hit_matrix(recs, truth)[evaluated]
    n_true = n_true[evaluated]
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = hits @ discounts
    ideal = np.cumsum(discounts)[np.minimum(n_true, k) - 1]
    n_hits = hits.sum(axis=1)
    precision_at_r = np.cumsum(hits, axis=1) / np.arange(1, k + 1)
    ap = (precision_at_r * hits).sum(axis=1) / np.minimum(n_true, k)
    shown = recs[recs >= 0]
    return {
        f"ndcg@{k}": float(np.mean(dcg / ideal)),
        f"precision@{k}": float(np.mean(n_hits / k)),
        f"recall@{k}": float(np.mean(n_hits / n_true)),
        f"map@{k}": float(np.mean(ap)),
        f"hr@{k}": float(np.mean(n_hits > 0)),
        "coverage": float(len(np.unique(shown)) / n_items) if n_items else 0.0,
    }
