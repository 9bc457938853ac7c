"""The shared-scores top-k (popularity for many users) equals the blocked dense top-k it replaces."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recsys.topk import blocked_top_k, shared_top_k


def test_shared_top_k_equals_blocked_top_k_with_exclusions_and_short_rows() -> None:
    rng = np.random.default_rng(0)
    scores = rng.random(300)
    scores[:5] = -np.inf  # never returned
    exclude = sp.random(40, 300, density=0.3, format="lil", random_state=1)
    exclude[7, :] = 1.0  # a user who had everything: an empty row of -1
    exclude = exclude.tocsr()
    expected = blocked_top_k(40, 10, lambda rows: np.broadcast_to(scores, (len(rows), 300)), exclude)[0]
    assert np.array_equal(shared_top_k(scores, 40, 10, exclude), expected)
    assert (shared_top_k(scores, 40, 10, exclude)[7] == -1).all()
    assert np.array_equal(shared_top_k(scores, 3, 10)[2], np.argsort(-scores, kind="stable")[:10])
