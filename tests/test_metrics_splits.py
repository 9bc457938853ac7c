"""Ranking metrics against hand-computed values; splits keep their promises."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from offline_training.metrics import ranking_metrics
from offline_training.splits import make_split


def truth_matrix(rows: list[list[int]], n_items: int) -> sp.csr_matrix:
    r = [u for u, items in enumerate(rows) for _ in items]
    c = [i for items in rows for i in items]
    return sp.csr_matrix((np.ones(len(r)), (r, c)), shape=(len(rows), n_items))


def test_metrics_match_hand_computation():
    recs = np.array([[0, 1, 2], [3, 4, -1], [5, 6, 7]])
    truth = truth_matrix([[1, 9], [3], []], n_items=10)  # third user has no test items: not counted
    m = ranking_metrics(recs, truth, k=3, n_items=10)
    d = [1 / math.log2(r + 1) for r in (1, 2, 3)]
    assert m["ndcg@3"] == pytest.approx(((d[1]) / (d[0] + d[1]) + 1.0) / 2)
    assert m["precision@3"] == pytest.approx((1 / 3 + 1 / 3) / 2)
    assert m["recall@3"] == pytest.approx((1 / 2 + 1) / 2)
    assert m["map@3"] == pytest.approx(((1 / 2) / 2 + 1.0) / 2)
    assert m["hr@3"] == 1.0
    assert m["coverage"] == pytest.approx(8 / 10)  # items 0-7 were shown


def events(n_users: int = 30, per_user: int = 8, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [{"user_id": f"u{u}", "item_id": f"i{rng.integers(0, 40)}", "event": "view", "ts": int(t), "value": 1.0}
            for u in range(n_users) for t in rng.integers(0, 10_000, per_user)]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("protocol", ["stratified", "last-out", "cold-users", "cold-items", "fold-in"])
def test_no_test_pair_is_in_training(protocol):
    frame = events()
    split = make_split(protocol, frame, np.ones(len(frame), dtype=bool), seed=1)
    train_pairs = set(zip(split.train["user_id"], split.train["item_id"]))
    test_pairs = set(zip(split.test["user_id"], split.test["item_id"]))
    assert test_pairs and not (train_pairs & test_pairs)
    if protocol == "cold-users":
        assert not set(split.train["user_id"]) & set(split.test["user_id"])
        assert len(set(split.test["user_id"])) == 6  # 20% of 30
    if protocol == "cold-items":
        assert not set(split.train["item_id"]) & set(split.candidate_items)
    if protocol == "fold-in":
        held = set(split.history["user_id"])
        assert len(held) == 6 and not held & set(split.train["user_id"])
        assert set(split.test["user_id"]) <= held
        history_pairs = set(zip(split.history["user_id"], split.history["item_id"]))
        assert not history_pairs & test_pairs


def test_stratified_puts_three_quarters_of_each_users_pairs_in_training():
    frame = pd.DataFrame({"user_id": ["a"] * 8 + ["b"] * 4, "item_id": [f"i{i}" for i in range(12)],
                          "event": "view", "ts": range(12), "value": 1.0})
    split = make_split("stratified", frame, np.ones(12, dtype=bool), seed=3)
    assert split.train.groupby("user_id").size().to_dict() == {"a": 6, "b": 3}
    again = make_split("stratified", frame, np.ones(12, dtype=bool), seed=3)
    pd.testing.assert_frame_equal(split.test, again.test)


def test_last_out_holds_out_the_latest_item():
    frame = pd.DataFrame({"user_id": ["a", "a", "a", "b"], "item_id": ["x", "y", "z", "x"],
                          "event": "view", "ts": [5, 9, 1, 3], "value": 1.0})
    split = make_split("last-out", frame, np.ones(4, dtype=bool), seed=0)
    assert split.test.values.tolist() == [["a", "y"]]  # b has a single item: not tested


def test_unknown_protocol():
    with pytest.raises(ValueError, match="unknown protocol"):
        make_split("random", events(), np.ones(240, dtype=bool), seed=0)
