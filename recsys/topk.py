"""Top-k selection over score matrices, in row blocks so memory stays bounded."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the k best entries per row, best first (-inf entries sort last)."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(vals, order, axis=1)


def blocked_top_k(n_rows: int, k: int, score_block: Callable[[np.ndarray], np.ndarray],
                  exclude: sp.csr_matrix | None = None, block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Top-k for rows 0..n_rows-1, computing `score_block(row_ids)` a block at a time.

    Entries set in `exclude` (same rows) are never returned; slots with nothing left are -1.
    """
    ids = np.full((n_rows, k), -1, dtype=np.int64)
    vals = np.full((n_rows, k), -np.inf, dtype=np.float32)
    for start in range(0, n_rows, block):
        rows = np.arange(start, min(start + block, n_rows))
        scores = np.array(score_block(rows), dtype=np.float32)
        if exclude is not None:
            sub = exclude[rows].tocoo()
            scores[sub.row, sub.col] = -np.inf
        idx, val = top_k(scores, k)
        idx = np.where(np.isfinite(val), idx, -1)
        ids[rows, : idx.shape[1]] = idx
        vals[rows, : val.shape[1]] = val
    return ids, vals


def shared_top_k(scores: np.ndarray, n_rows: int, k: int, exclude: sp.csr_matrix | None = None) -> np.ndarray:
    """[n_rows, k] top-k of one score vector shared by every row (popularity), without each row's
    `exclude` entries; -1 where a row runs short. One sort instead of a dense block per rows."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    order = order[np.isfinite(np.asarray(scores)[order])]
    out = np.full((n_rows, k), -1, dtype=np.int64)
    if exclude is None:
        out[:, : min(k, len(order))] = order[:k]
        return out
    exclude = exclude.tocsr()
    for row in range(n_rows):
        seen = exclude.indices[exclude.indptr[row]:exclude.indptr[row + 1]]
        picked = order[: k + len(seen)]
        picked = picked[~np.isin(picked, seen)][:k]
        out[row, : len(picked)] = picked
    return out
