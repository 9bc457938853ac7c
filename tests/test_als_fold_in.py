"""Our NumPy fold-in equals implicit's own `recalculate_user` (the reference answer)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares

from recsys.config import ALSConfig
from recsys.als import ALSModel


def test_fold_in_matches_implicit_recalculate_user():
    rng = np.random.default_rng(0)
    user_items = sp.csr_matrix((rng.random((80, 60)) < 0.1) * rng.integers(1, 5, (80, 60)), dtype=np.float32)
    cfg = ALSConfig(factors=8, regularization=2.0, alpha=3.0, iterations=5, weighting="none")
    model = ALSModel.fit(user_items, cfg, progress=False)
    items = np.array([3, 7, 7, 21, 40])  # a repeated item: confidences add up, as in a CSR row
    weights = np.array([1.0, 2.0, 4.0, 1.0, 10.0])
    reference = AlternatingLeastSquares(factors=8, regularization=2.0, alpha=1.0)
    reference.user_factors, reference.item_factors = model.user_factors, model.item_factors
    # implicit takes the confidence itself: c = 1 + alpha × (summed weight) per item
    summed = np.bincount(items, weights=weights, minlength=60)
    cols = np.flatnonzero(summed)
    row = sp.csr_matrix((1.0 + 3.0 * summed[cols], (np.zeros(len(cols), dtype=int), cols)), shape=(1, 60))
    expected = np.asarray(reference.recalculate_user(0, row)).ravel()
    assert model.fold_in(items, weights) == pytest.approx(expected, rel=1e-4, abs=1e-5)
