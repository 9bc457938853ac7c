"""Id maps and the weighted user × item matrix that the collaborative models learn from."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

SECONDS_PER_DAY = 86_400.0


@dataclass(frozen=True)
class IdMap:
    """Dense index ↔ external string id."""

    ids: tuple[str, ...]

    @classmethod
    def of(cls, ids: Iterable[str]) -> "IdMap":
        return cls(tuple(dict.fromkeys(str(i) for i in ids)))

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def index(self) -> dict[str, int]:
        cached = self.__dict__.get("_index")
        if cached is None:
            cached = {item: i for i, item in enumerate(self.ids)}
            object.__setattr__(self, "_index", cached)
        return cached

    def get(self, key: str) -> int | None:
        return self.index.get(key)

    def lookup(self, keys: Sequence[str] | pd.Series) -> np.ndarray:
        """Indices of `keys`; -1 where unknown."""
        return pd.Series(keys, dtype=object).map(self.index).fillna(-1).to_numpy(np.int64)


def event_weights(frame: pd.DataFrame, weights: dict[str, float], use_rating_value: bool,
                  half_life_days: float, now_ts: int | None = None) -> np.ndarray:
    """Confidence of each interaction row: event weight × (rating value) × time decay."""
    w = frame["event"].map(weights).fillna(0.0).to_numpy(np.float64)
    if use_rating_value:
        is_rating = (frame["event"] == "rating").to_numpy()
        w = np.where(is_rating, w * frame["value"].to_numpy(np.float64), w)
    if half_life_days > 0 and len(frame):
        now = frame["ts"].max() if now_ts is None else now_ts
        age_days = (now - frame["ts"].to_numpy(np.float64)) / SECONDS_PER_DAY
        w = w * np.power(0.5, np.clip(age_days, 0, None) / half_life_days)
    return w


def user_item_matrix(user_idx: np.ndarray, item_idx: np.ndarray, weights: np.ndarray,
                     n_users: int, n_items: int) -> sp.csr_matrix:
    """Sum of weights per (user, item); zero-weight and unmapped (-1) rows are dropped."""
    keep = (weights > 0) & (user_idx >= 0) & (item_idx >= 0)
    matrix = sp.csr_matrix(
        (weights[keep].astype(np.float32), (user_idx[keep], item_idx[keep])), shape=(n_users, n_items)
    )
    matrix.sum_duplicates()
    return matrix
