"""Evaluation protocols: how interactions are split into what a model learns from and what it must find.

Splits work on distinct (user, item) pairs with a positive event, so that all events of one pair land
on the same side (a view in train and the purchase of the same item in test would leak the answer).
- stratified: per user, a seeded random 75% of pairs to train, the rest to test (Microsoft Recommenders'
  python_stratified_split: round(0.75 × n) pairs of each user go to train).
- last-out: each user's most recent pair is the test; users with fewer than two pairs are not tested.
- cold-users: 20% of users are held out entirely; the model knows only their profiles.
- cold-items: 20% of items are held out entirely; warm users must find them among the held-out items,
  which the model knows only by their content.
- fold-in: 20% of users are left out of training; 75% of each one's pairs are their history, which is
  folded into the trained model as serving does with a user's recent events; the rest is the test.
- temporal: everything before a cut in time trains, the positive pairs after it are the test: what a
  merchant's shoppers do next. Its test pairs keep repeats (an item bought before and again after the
  cut); evaluation scores known users on all of them and on the items new to them, and first visits
  (users with no positive event before the cut) from their profiles.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys.config import PROTOCOLS
from recsys.matrix import SECONDS_PER_DAY


@dataclass
class Split:
    protocol: str
    #: Interaction rows the model may learn from.
    train: pd.DataFrame
    #: Distinct relevant (user_id, item_id) pairs to find.
    test: pd.DataFrame
    #: cold-items only: the held-out item ids, the candidate set.
    candidate_items: np.ndarray | None = None
    #: fold-in only: interaction rows of the held-out users that the model is given after training.
    history: pd.DataFrame | None = None


def _pairs(frame: pd.DataFrame, positive: np.ndarray) -> pd.DataFrame:
    """Distinct positive pairs with the time of their last event."""
    pos = frame.loc[positive, ["user_id", "item_id", "ts"]]
    return pos.groupby(["user_id", "item_id"], sort=False, as_index=False)["ts"].max()


def _rows_not_in(frame: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    key = pd.MultiIndex.from_frame(frame[["user_id", "item_id"]])
    drop = key.isin(pd.MultiIndex.from_frame(pairs[["user_id", "item_id"]]))
    return frame.loc[~drop].reset_index(drop=True)


def stratified(frame: pd.DataFrame, positive: np.ndarray, seed: int, ratio: float = 0.75,
               min_test: int = 0) -> Split:
    """`min_test`: users with at least two pairs hold out at least this many (tuning's validation
    uses 1, so that a small share still validates users with few pairs)."""
    pairs = _pairs(frame, positive)
    users = pd.factorize(pairs["user_id"])[0]
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(len(pairs)), users))
    sorted_users = users[order]
    counts = np.bincount(users)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    position = np.arange(len(order)) - starts[sorted_users]
    is_test = np.zeros(len(pairs), dtype=bool)
    n_train = np.round(counts[sorted_users] * ratio)
    if min_test:
        n_train = np.where(counts[sorted_users] >= 2, np.minimum(n_train, counts[sorted_users] - min_test), n_train)
    is_test[order] = position >= n_train
    test = pairs.loc[is_test, ["user_id", "item_id"]].reset_index(drop=True)
    return Split("stratified", _rows_not_in(frame, test), test)


def last_out(frame: pd.DataFrame, positive: np.ndarray, seed: int) -> Split:
    pairs = _pairs(frame, positive)
    counts = pairs.groupby("user_id")["item_id"].transform("size")
    # ties on ts are broken by a seeded shuffle, not by file order
    rng = np.random.default_rng(seed)
    pairs = pairs.assign(_tie=rng.random(len(pairs)))
    last = pairs.loc[counts >= 2].sort_values(["ts", "_tie"]).groupby("user_id").tail(1)
    test = last[["user_id", "item_id"]].reset_index(drop=True)
    return Split("last-out", _rows_not_in(frame, test), test)


def _held_out_users(frame: pd.DataFrame, positive: np.ndarray, seed: int, share: float) -> np.ndarray:
    """Rows of a seeded random `share` of the users with a positive event (bool mask over `frame`)."""
    users = np.sort(frame.loc[positive, "user_id"].unique())
    rng = np.random.default_rng(seed)
    held = rng.choice(users, size=int(round(share * len(users))), replace=False)
    return frame["user_id"].isin(held).to_numpy()


def cold_users(frame: pd.DataFrame, positive: np.ndarray, seed: int, share: float = 0.2) -> Split:
    is_held = _held_out_users(frame, positive, seed, share)
    test = _pairs(frame, positive & is_held)[["user_id", "item_id"]]
    return Split("cold-users", frame.loc[~is_held].reset_index(drop=True), test.reset_index(drop=True))


def cold_user_folds(frame: pd.DataFrame, positive: np.ndarray, seed: int, folds: int,
                    share: float = 0.2) -> list[Split]:
    """Up to `folds` cold-users splits whose held-out users are disjoint (each a seeded `share`)."""
    users = np.random.default_rng(seed).permutation(np.sort(frame.loc[positive, "user_id"].unique()))
    size = int(round(share * len(users)))
    out = []
    for fold in range(folds):
        held = users[fold * size:(fold + 1) * size]
        if size == 0 or len(held) < size:
            break
        is_held = frame["user_id"].isin(held).to_numpy()
        test = _pairs(frame, positive & is_held)[["user_id", "item_id"]]
        out.append(Split("cold-users", frame.loc[~is_held].reset_index(drop=True), test.reset_index(drop=True)))
    return out


def cold_items(frame: pd.DataFrame, positive: np.ndarray, seed: int, share: float = 0.2) -> Split:
    items = np.sort(frame.loc[positive, "item_id"].unique())
    rng = np.random.default_rng(seed)
    held = rng.choice(items, size=int(round(share * len(items))), replace=False)
    is_held = frame["item_id"].isin(held).to_numpy()
    train = frame.loc[~is_held].reset_index(drop=True)
    test = _pairs(frame, positive & is_held)[["user_id", "item_id"]]
    test = test[test["user_id"].isin(train["user_id"])].reset_index(drop=True)
    return Split("cold-items", train, test, candidate_items=held)


def fold_in(frame: pd.DataFrame, positive: np.ndarray, seed: int, share: float = 0.2) -> Split:
    is_held = _held_out_users(frame, positive, seed, share)
    inner = stratified(frame.loc[is_held].reset_index(drop=True), positive[is_held], seed)
    return Split("fold-in", frame.loc[~is_held].reset_index(drop=True), inner.test, history=inner.train)


class NoTimeToSplit(ValueError):
    """The data's timestamps cannot support a split in time; the message says why."""


def span_days(frame: pd.DataFrame) -> float:
    """Days between the first and the last event of `frame` (0 when empty)."""
    if frame.empty:
        return 0.0
    ts = frame["ts"].to_numpy(np.float64)
    return float(ts.max() - ts.min()) / SECONDS_PER_DAY


def temporal_cut(frame: pd.DataFrame, test_days: float, min_span_days: float) -> float:
    """The default cut: `test_days` before the newest event, at most a quarter of the span, so that
    at least three quarters of the data's time trains. Raises NoTimeToSplit on data spanning less
    than `min_span_days` (all timestamps equal, or an import that stamped everything at once)."""
    span = span_days(frame)
    if span < min_span_days:
        raise NoTimeToSplit(f"the interactions span {span:.1f} days (a split in time needs at least "
                            f"{min_span_days:g}; tuning.min_span_days)")
    newest = float(frame["ts"].max())
    return newest - min(test_days, span / 4) * SECONDS_PER_DAY


def temporal(frame: pd.DataFrame, positive: np.ndarray, seed: int, cut: float) -> Split:
    """Rows before `cut` train; the distinct positive (user, item) pairs at or after it are the test."""
    ts = frame["ts"].to_numpy(np.float64)
    before = ts < cut
    test = _pairs(frame.loc[~before], positive[~before])[["user_id", "item_id"]].reset_index(drop=True)
    return Split("temporal", frame.loc[before].reset_index(drop=True), test)


def temporal_first_visits(frame: pd.DataFrame, positive: np.ndarray, cut: float) -> Split:
    """Rows before `cut` train; the test is what users with no positive event before it engaged with
    after it (first visits of the merchant's future)."""
    split = temporal(frame, positive, 0, cut)
    known = split.train.loc[positive[frame["ts"].to_numpy(np.float64) < cut], "user_id"].unique()
    test = split.test[~split.test["user_id"].isin(known)].reset_index(drop=True)
    return Split("temporal", split.train, test)


def make_split(protocol: str, frame: pd.DataFrame, positive: np.ndarray, seed: int,
               cut: float | None = None) -> Split:
    """Split interactions by `protocol` (one of PROTOCOLS); `cut` (Unix seconds) only for temporal."""
    makers = {"stratified": stratified, "last-out": last_out, "cold-users": cold_users, "cold-items": cold_items,
              "fold-in": fold_in}
    if protocol == "temporal":
        if cut is None:
            raise ValueError("the temporal protocol needs a cut (Unix seconds)")
        return temporal(frame, positive, seed, cut)
    if protocol not in makers:
        raise ValueError(f"unknown protocol {protocol!r} (choose from {', '.join(PROTOCOLS)})")
    return makers[protocol](frame, positive, seed)
