"""One contract for every known-user model (ALS, EASE, RP3beta, item kNN, popularity), on tiny data
whose right answer is known, and each item-item model against its textbook formula."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recsys import bundle
from recsys.config import ALSConfig
from recsys.item_models import ItemItemModel, ease_fits
from recsys.known import FAMILIES, PopularityRecommender, fit_known, load_known, save_known

PARAMS = {
    "als": {"factors": 4, "regularization": 1.0, "alpha": 2.0, "weighting": "none", "iterations": 10},
    "ease": {"l2": 1.0, "neighbours": 100},
    "rp3beta": {"alpha": 1.0, "beta": 0.3, "neighbours": 100},
    "itemknn": {"similarity": "cosine", "neighbours": 100},
}


def two_tastes(n_users: int = 60, n_items: int = 20, seed: int = 0) -> sp.csr_matrix:
    """Users 0..n/2 like items 0..9, the others items 10..19; each user has seen 6 of their 10."""
    rng = np.random.default_rng(seed)
    rows, cols = [], []
    for u in range(n_users):
        group = 0 if u < n_users // 2 else 10
        picks = rng.choice(10, size=6, replace=False) + group
        rows += [u] * len(picks)
        cols += picks.tolist()
    return sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n_users, n_items))


@pytest.fixture(scope="module")
def data() -> sp.csr_matrix:
    return two_tastes()


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_ranks_the_users_own_taste_first(family, data):
    model = fit_known(family, data, PARAMS[family], ALSConfig(random_state=0))
    assert model.family == family and model.n_items == 20
    scores = model.user_scores(np.arange(60), data)
    scores[data.nonzero()] = -np.inf
    top = np.argsort(-scores, axis=1)[:, :4]
    own = np.where(np.arange(60)[:, None] < 30, top < 10, top >= 10)
    assert own.mean() > 0.95


@pytest.mark.parametrize("family", FAMILIES)
def test_fold_in_of_a_users_history_ranks_like_the_trained_user(family, data):
    """A user the model never saw, given the same history as a trained user, gets the same ranking
    (item-item models: exactly the same scores; ALS: the folded-in vector ranks alike)."""
    model = fit_known(family, data, PARAMS[family], ALSConfig(random_state=0))
    for user in (0, 45):
        row = data[user]
        folded = model.history_scores(row.indices, row.data)
        trained = model.user_scores(np.array([user]), data)[0]
        if family == "als":
            assert np.corrcoef(folded, trained)[0, 1] > 0.95
        else:
            np.testing.assert_allclose(folded, trained, rtol=1e-5, atol=1e-6)
        batch = model.histories_scores(data[[user, user]])
        np.testing.assert_allclose(batch[1], folded, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("family", [*FAMILIES, "popularity"])
def test_save_and_load_give_the_same_model(family, data, tmp_path):
    model = fit_known(family, data, PARAMS.get(family, {}), ALSConfig(random_state=0))
    with bundle.BundleWriter(tmp_path, "app") as writer:
        save_known(model, writer)
        writer.commit(data_fingerprint="x", config={}, metrics={})
    loaded = load_known(bundle.open_current(tmp_path, "app") if bundle.current_version(tmp_path, "app")
                        else bundle.verify(writer.path))
    assert loaded.family == family and loaded.params == model.params
    np.testing.assert_allclose(loaded.user_scores(np.arange(5), data), model.user_scores(np.arange(5), data),
                               rtol=1e-6)
    items, anchors = np.array([1, 2, 12]), np.array([3, 4])
    np.testing.assert_allclose(loaded.item_affinity(items, anchors), model.item_affinity(items, anchors), rtol=1e-6)


def test_ease_equals_its_closed_form(data):
    x = data.toarray().astype(np.float64)
    p = np.linalg.inv(x.T @ x + 3.0 * np.eye(20))
    b = np.eye(20) - p / np.diag(p)[None, :]
    model = ItemItemModel.fit("ease", data, {"l2": 3.0, "neighbours": 19})
    np.testing.assert_allclose(model.user_scores(np.arange(60), data), x @ b, rtol=1e-4, atol=1e-6)


def test_ease_keeps_its_strongest_weights_by_magnitude(data):
    full = ItemItemModel.fit("ease", data, {"l2": 3.0, "neighbours": 19}).matrix().toarray()
    pruned = ItemItemModel.fit("ease", data, {"l2": 3.0, "neighbours": 5}).matrix().toarray()
    for row in range(20):
        kept = np.flatnonzero(pruned[row])
        assert len(kept) == 5
        assert np.abs(full[row, kept]).min() >= np.sort(np.abs(full[row]))[-5] - 1e-9
        np.testing.assert_allclose(pruned[row, kept], full[row, kept], rtol=1e-5)


def test_ease_is_only_a_candidate_when_its_solve_fits_memory():
    assert ease_fits(11_000, 2048) and not ease_fits(12_000, 2048)


def test_rp3beta_equals_its_definition(data):
    x = data.toarray().astype(np.float64)
    p_ui = (x / x.sum(axis=1, keepdims=True)) ** 0.7
    p_iu = (x.T / x.T.sum(axis=1, keepdims=True)) ** 0.7
    w = (p_iu @ p_ui) / np.power(x.sum(axis=0), 0.4)[None, :]
    np.fill_diagonal(w, 0.0)
    model = ItemItemModel.fit("rp3beta", data, {"alpha": 0.7, "beta": 0.4, "neighbours": 19})
    np.testing.assert_allclose(model.matrix().toarray(), w, rtol=1e-5, atol=1e-7)


def test_item_knn_scores_like_implicit(data):
    import warnings

    from implicit.nearest_neighbours import BM25Recommender
    from implicit.utils import ParameterWarning
    weighted = data.multiply(np.arange(1, 61, dtype=np.float32)[:, None] % 3 + 1).tocsr()  # confidences 1..3
    reference = BM25Recommender(K=20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ParameterWarning)  # implicit warns about its own COO matrix
        reference.fit(weighted.astype(np.float64), show_progress=False)
    sim = reference.similarity.toarray()
    np.fill_diagonal(sim, 0.0)  # our W leaves an item's similarity to itself out (its own history)
    model = ItemItemModel.fit("itemknn", weighted, {"similarity": "bm25", "neighbours": 19})
    np.testing.assert_allclose(model.user_scores(np.arange(60), weighted), weighted.toarray() @ sim, rtol=1e-5)


def test_popularity_gives_everyone_the_same_scores(data):
    model = PopularityRecommender.fit(data, reason="because")
    scores = model.user_scores(np.arange(3), data)
    np.testing.assert_array_equal(scores[0], np.asarray((data > 0).sum(axis=0)).ravel())
    np.testing.assert_array_equal(model.history_scores(np.array([1]), np.array([1.0])), scores[1])
