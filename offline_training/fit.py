"""Fit every model of a bundle from a validated data folder (or a training split of one)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from offline_training.config import TrainConfig
from offline_training.datafolder import AppData
from recsys.als import ALSModel
from recsys.hybrid import BIAS_FEATURE, HybridModel
from recsys.item_features import build_item_features, catalog_tokenizer, content_matrix, normalize_rows
from recsys.matrix import IdMap, event_weights, user_item_matrix
from recsys.models import CATALOG_COLUMNS, TrainedModels
from recsys.popularity import Popularity
from recsys.profiles import feature_matrix, profile_key_table
from recsys.related import RelatedItems

STAGES = ("matrices", "ALS", "popularity", "hybrid", "related items")
#: Parts of a bundle; evaluation fits only the parts its protocol scores with.
ALL_PARTS = frozenset({"als", "hybrid", "related"})


def positive_mask(frame: pd.DataFrame, cfg: TrainConfig) -> np.ndarray:
    """Rows whose event has a positive weight (impressions are not a sign of interest)."""
    return (frame["event"].map(cfg.events.weights).fillna(0.0) > 0).to_numpy()


def fit_models(data: AppData, cfg: TrainConfig, interactions: pd.DataFrame | None = None,
               progress: bool = True, parts: frozenset[str] = ALL_PARTS) -> TrainedModels:
    """Train ALS, the LightFM hybrid, popularity and related items (popularity always; others per `parts`).

    `interactions` defaults to all of `data.interactions`; evaluation passes a training split.
    Related items need the hybrid's content vectors, so "related" implies "hybrid".
    """
    frame = data.interactions if interactions is None else interactions
    bar = tqdm(total=len(STAGES), desc="training", unit="stage", disable=not progress)

    def stage(name: str) -> None:
        bar.set_postfix_str(name)

    stage("matrices")
    items = IdMap.of(data.items["item_id"])
    positive = positive_mask(frame, cfg)
    users = IdMap.of(frame.loc[positive, "user_id"])
    user_idx = users.lookup(frame["user_id"])
    item_idx = items.lookup(frame["item_id"])
    ev = cfg.events
    confidences = user_item_matrix(user_idx, item_idx, event_weights(frame, ev.weights, ev.use_rating_value,
                                                                     ev.half_life_days), len(users), len(items))
    recent = user_item_matrix(user_idx, item_idx, event_weights(frame, ev.weights, ev.use_rating_value,
                                                                cfg.popularity.half_life_days), len(users), len(items))
    keys = profile_key_table(data.merchant_profiles, data.platform_profiles, cfg.scope_map())
    user_keys, segments = feature_matrix(users, keys)
    bar.update()

    stage("ALS")
    als = ALSModel.fit(confidences, cfg.als, progress=progress) if "als" in parts else None
    bar.update()

    stage("popularity")
    popularity = Popularity.fit(recent, user_keys, segments, cfg.popularity.segment_shrinkage)
    bar.update()

    stage("hybrid")
    hyb = cfg.hybrid
    if not parts & {"hybrid", "related"}:
        bar.close()
        return TrainedModels(users, items, data.items[list(CATALOG_COLUMNS)].reset_index(drop=True), confidences,
                             als, None, popularity, None, None, hyb.cold_popularity_weight)
    tokenizer = catalog_tokenizer(data.items) if hyb.title_tokens else None
    _, content_vocab, per_item = build_item_features(data.items, hyb.price_bands, tokenizer,
                                                     hyb.min_token_items, identity=False)
    warm_items = np.flatnonzero(np.diff(confidences.tocsc().indptr) > 0)
    item_vocab = IdMap.of([*content_vocab.ids, *(f"id={items.ids[i]}" for i in warm_items)])
    item_features = content_matrix(per_item, item_vocab, list(items.ids))
    user_vocab = IdMap.of([BIAS_FEATURE, *segments.ids])
    user_features, _ = feature_matrix(users, pd.concat(
        [keys, pd.DataFrame({"user_id": list(users.ids), "key": BIAS_FEATURE})], ignore_index=True), user_vocab)
    hybrid = HybridModel.fit(confidences, normalize_rows(user_features), user_vocab, item_features, item_vocab,
                             hyb, progress=progress)
    content_vectors = hybrid.item_vectors(content_matrix(per_item, item_vocab))[0]
    bar.update()

    stage("related items")
    related = None
    if "related" in parts:
        related = RelatedItems.fit(confidences, content_vectors, cfg.related.neighbours, cfg.related.content_weight)
    bar.update()
    bar.close()

    catalog = data.items[list(CATALOG_COLUMNS)].reset_index(drop=True)
    return TrainedModels(users, items, catalog, confidences, als, hybrid, popularity, related,
                         content_vectors, hyb.cold_popularity_weight)
