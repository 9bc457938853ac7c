"""Choose the scoring path for one user and return the top items: the core of the home feed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys.models import TrainedModels
from recsys.topk import top_k


@dataclass(frozen=True)
class Ranked:
    item_ids: list[str]
    scores: list[float]
    #: Which path produced the list: "als", "hybrid", or "popularity".
    strategy: str


def recommend_user(models: TrainedModels, user_id: str | None, profile_keys: list[str], n: int) -> Ranked:
    """Known user → ALS (history excluded); profile only → hybrid blend; nothing → popularity."""
    user = models.users.get(user_id) if user_id else None
    if user is not None:
        scores = models.known_user_scores(np.array([user]))[0].astype(np.float64)
        scores[models.history(user)[0]] = -np.inf
        strategy = "als"
    elif profile_keys:
        scores = models.profile_user_scores([profile_keys])[0]
        strategy = "hybrid"
    else:
        scores = models.popularity_scores().astype(np.float64)
        strategy = "popularity"
    idx, vals = top_k(scores[None, :], n)
    keep = np.isfinite(vals[0])
    return Ranked([models.items.ids[i] for i in idx[0][keep]], [float(v) for v in vals[0][keep]], strategy)


def related_items(models: TrainedModels, item_id: str, n: int) -> Ranked:
    """The stored neighbours of an item (empty for an unknown item)."""
    item = models.items.get(item_id)
    if item is None:
        return Ranked([], [], "related")
    ids, scores = models.related.neighbours[item], models.related.scores[item]
    keep = ids >= 0
    return Ranked([models.items.ids[i] for i in ids[keep][:n]], [float(s) for s in scores[keep][:n]], "related")
