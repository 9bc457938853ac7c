"""The request path's shortcuts give the same numbers as the batch (evaluation) paths they stand in for."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recsys.hybrid import BIAS_FEATURE, HybridModel
from recsys.matrix import IdMap
from recsys.models import TrainedModels
from recsys.popularity import Popularity
from recsys.profile_kernel import ProfileKernel

N_USERS, N_ITEMS, DIM = 80, 40, 8
KEYS = ["p.age_band=25-34", "p.gender=F", "m.member_level=gold", "p.age_band=35-44", "p.gender=M"]


def _hybrid(rng: np.random.Generator) -> HybridModel:
    user_vocab = IdMap.of([BIAS_FEATURE, *KEYS])
    item_vocab = IdMap.of([f"f{i}" for i in range(12)])
    return HybridModel(user_vocab, item_vocab,
                       rng.normal(size=(len(user_vocab), DIM)).astype(np.float32),
                       rng.normal(size=len(user_vocab)).astype(np.float32),
                       rng.normal(size=(len(item_vocab), DIM)).astype(np.float32),
                       rng.normal(size=len(item_vocab)).astype(np.float32),
                       rng.normal(size=(N_ITEMS, DIM)).astype(np.float32),
                       rng.normal(size=N_ITEMS).astype(np.float32))


def _models(rng: np.random.Generator, hybrid_weight: float) -> TrainedModels:
    users = IdMap.of([f"u{i}" for i in range(N_USERS)])
    items = IdMap.of([f"i{i}" for i in range(N_ITEMS)])
    y = sp.csr_matrix((rng.random((N_USERS, N_ITEMS)) < 0.2).astype(np.float32))
    rows = [(f"u{u}", k) for u in range(N_USERS) for k in rng.choice(KEYS, 2, replace=False)]
    key_table = pd.DataFrame(rows, columns=["user_id", "key"])
    kernel = ProfileKernel.fit(key_table, users, y, ["m.member_level", "p.age_band", "p.gender"],
                               {"p.gender": 2.0}, 1.0, 0.75)
    segments = IdMap.of(KEYS)
    user_keys = sp.csr_matrix((rng.random((N_USERS, len(KEYS))) < 0.4).astype(np.float32))
    popularity = Popularity.fit(y, user_keys, segments, shrinkage=5.0)
    return TrainedModels(users, items, pd.DataFrame({"item_id": list(items.ids)}), y, None, _hybrid(rng),
                         popularity, None, None, kernel, hybrid_weight)


@pytest.mark.parametrize("keys", [KEYS[:2], KEYS[2:3], ["p.unknown=1"], []])
def test_hybrid_key_vector_equals_the_sparse_feature_path(keys):
    model = _hybrid(np.random.default_rng(0))
    expected = model.user_vectors(model.user_matrix([keys]))[0]
    assert model.key_vector(keys) == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_catalog_moments_equal_the_mean_and_std_of_every_items_score():
    model = _hybrid(np.random.default_rng(1))
    for keys in (KEYS[:3], []):
        user = model.key_vector(keys)
        scores = (model.item_repr @ user + model.item_repr_bias).astype(np.float64)
        mean, std = model.catalog_moments(user)
        assert mean == pytest.approx(scores.mean(), rel=1e-5, abs=1e-6)
        assert std == pytest.approx(scores.std(), rel=1e-5)


@pytest.mark.parametrize("hybrid_weight", [0.0, 0.4, 1.0])
def test_first_visit_scores_equal_the_batch_profile_scores(hybrid_weight):
    models = _models(np.random.default_rng(2), hybrid_weight)
    for keys in (KEYS[:2], KEYS[1:4], ["p.gender=M"]):
        expected = models.profile_user_scores([keys])[0]
        assert models.first_visit_scores(keys) == pytest.approx(expected, rel=1e-4, abs=1e-5)


def test_top_segment_keys_pick_the_segment_of_highest_lift_per_item():
    pop = _models(np.random.default_rng(3), 0.5).popularity
    keys = ["p.gender=F", "p.age_band=35-44", "p.unknown=1"]
    items = np.array([0, 5, 7, 39])
    rows = np.array([pop.segments.get(k) for k in keys[:2]])
    lifts = pop.segment_log_lift(rows)[:, items]
    assert pop.top_segment_keys(keys, items) == [keys[int(b)] for b in np.argmax(lifts, axis=0)]
    assert pop.top_segment_keys(["p.unknown=1"], items) == [None] * len(items)
