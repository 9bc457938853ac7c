"""The known-user model families, how each is fitted from a parameter set, saved and loaded.

`fit_known` is the one place that turns (family, parameters) into a fitted `Recommender`: the tuner,
evaluation and `minirec train` all go through it, so a configuration means the same everywhere.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.als import ALSModel, SweepCallback
from recsys.bundle import Bundle, BundleWriter
from recsys.config import ALSConfig
from recsys.item_models import ItemItemModel
from recsys.recommender import Recommender

#: Families that personalize; `popularity` is what a bundle serves when none of them beats it.
FAMILIES = ("als", "ease", "rp3beta", "itemknn")
ITEM_ITEM = ("ease", "rp3beta", "itemknn")


@dataclass
class PopularityRecommender(Recommender):
    """Everyone gets the same scores: training popularity (users per item)."""

    scores: np.ndarray
    #: Why the bundle serves popularity to known users (shown as the response's note).
    reason: str = ""
    fitted_params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def fit(cls, user_items: sp.csr_matrix, reason: str = "") -> "PopularityRecommender":
        return cls(np.diff(user_items.tocsc().indptr).astype(np.float32), reason)

    @property
    def family(self) -> str:
        return "popularity"

    @property
    def n_items(self) -> int:
        return len(self.scores)

    @property
    def params(self) -> dict[str, Any]:
        return {}

    def user_scores(self, users: np.ndarray, user_items: sp.csr_matrix | None = None) -> np.ndarray:
        return np.broadcast_to(self.scores, (len(users), len(self.scores))).copy()

    def history_scores(self, items: np.ndarray, weights: np.ndarray) -> np.ndarray:
        return self.scores.copy()

    def item_affinity(self, items: np.ndarray, anchors: np.ndarray) -> np.ndarray:
        return np.zeros((len(items), len(anchors)), dtype=np.float32)

    def save(self, writer: BundleWriter) -> None:
        writer.save_array("known_popularity", self.scores)

    @classmethod
    def load(cls, bundle: Bundle) -> "PopularityRecommender":
        return cls(bundle.array("known_popularity"), str(bundle.json("known_model").get("reason", "")))


def als_config(base: ALSConfig, params: dict[str, Any]) -> ALSConfig:
    """The config's ALS settings with `params` (factors, regularization, alpha, weighting, …) over them."""
    known = {f.name for f in dataclasses.fields(ALSConfig)}
    return dataclasses.replace(base, **{k: v for k, v in params.items() if k in known})


def fit_known(family: str, user_items: sp.csr_matrix, params: dict[str, Any], als_base: ALSConfig,
              progress: bool = False, on_sweep: SweepCallback | None = None,
              gram: np.ndarray | None = None) -> Recommender:
    """Fit one family on a users × items confidence matrix with these hyper-parameters (`gram`:
    XᵀX of the same matrix, which EASE trials of one tuning run share)."""
    if family == "als":
        return ALSModel.fit(user_items, als_config(als_base, params), progress=progress, on_sweep=on_sweep)
    if family in ITEM_ITEM:
        return ItemItemModel.fit(family, user_items, params, gram if family == "ease" else None)
    if family == "popularity":
        return PopularityRecommender.fit(user_items, str(params.get("reason", "")))
    raise ValueError(f"unknown model family {family!r} (choose from {', '.join(FAMILIES)} or popularity)")


def save_known(model: Recommender, writer: BundleWriter) -> None:
    meta: dict[str, Any] = {"family": model.family, "params": model.params}
    if isinstance(model, PopularityRecommender):
        meta["reason"] = model.reason
    writer.save_json("known_model", meta)
    model.save(writer)


def load_known(bundle: Bundle) -> Recommender:
    """The bundle's known-user model (bundles of format 1 held ALS only)."""
    family = bundle.json("known_model")["family"] if bundle.has("known_model.json") else "als"
    if family == "als":
        return ALSModel.load(bundle)
    if family in ITEM_ITEM:
        return ItemItemModel.load(bundle)
    if family == "popularity":
        return PopularityRecommender.load(bundle)
    raise ValueError(f"bundle {bundle.path}: unknown model family {family!r}")
