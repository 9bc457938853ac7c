"""Fit every model of a bundle from a validated data folder (or a training split of one)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from tqdm.auto import tqdm

from recsys.config import TrainConfig
from offline_training.datafolder import AppData
from recsys.hybrid import BIAS_FEATURE, HybridModel
from recsys.known import fit_known
from recsys.item_features import build_item_features, catalog_tokenizer, content_matrix, normalize_rows
from recsys.matrix import IdMap, event_weights, user_item_matrix
from recsys.models import CATALOG_COLUMNS, TrainedModels
from recsys.popularity import Popularity
from recsys.profile_kernel import ProfileKernel, field_of
from recsys.profiles import feature_matrix, profile_key_table
from recsys.related import RelatedItems
from recsys.repeat import RepeatModel

STAGES = ("matrices", "known-user model", "popularity", "profile kernel", "hybrid", "related items")
#: Parts of a bundle; evaluation fits only the parts its protocol scores with.
ALL_PARTS = frozenset({"known", "hybrid", "related"})


def known_family(cfg: TrainConfig) -> str:
    """The family a config trains: "auto" means ALS when nothing was tuned (today's default)."""
    return "als" if cfg.model.family == "auto" else cfg.model.family


def known_params(cfg: TrainConfig, family: str) -> dict[str, Any]:
    """The config's hyper-parameters of `family` (its config section as a dict)."""
    section = getattr(cfg, family, None)
    return dataclasses.asdict(section) if dataclasses.is_dataclass(section) else {}


def confidence_matrix(frame: pd.DataFrame, cfg: TrainConfig, users: IdMap, items: IdMap,
                      half_life_days: float | None = None) -> sp.csr_matrix:
    """Users × items summed event weights of `frame` (decayed by the events' half-life unless given)."""
    ev = cfg.events
    half_life = ev.half_life_days if half_life_days is None else half_life_days
    return user_item_matrix(users.lookup(frame["user_id"]), items.lookup(frame["item_id"]),
                            event_weights(frame, ev.weights, ev.use_rating_value, half_life), len(users), len(items))


def kernel_interactions(frame: pd.DataFrame, cfg: TrainConfig, users: IdMap, items: IdMap) -> sp.csr_matrix:
    """What the first-visit kernel counts per (user, item): 1 for an engagement, fading with the
    popularity half-life when there is one (so trends reach first visits too), capped at 1."""
    unit = {event: 1.0 if weight > 0 else 0.0 for event, weight in cfg.events.weights.items()}
    matrix = user_item_matrix(users.lookup(frame["user_id"]), items.lookup(frame["item_id"]),
                              event_weights(frame, unit, False, cfg.popularity.half_life_days), len(users), len(items))
    matrix.data = np.minimum(matrix.data, 1.0)
    return matrix


def positive_mask(frame: pd.DataFrame, cfg: TrainConfig) -> np.ndarray:
    """Rows whose event has a positive weight (impressions are not a sign of interest)."""
    return (frame["event"].map(cfg.events.weights).fillna(0.0) > 0).to_numpy()


def kernel_fields(keys: pd.DataFrame, configured: list[str], max_values: int = 1000) -> list[str]:
    """The configured kernel fields, or every profile field with one value per user and few values."""
    if configured:
        return list(configured)
    table = keys.assign(field=keys["key"].map(field_of))
    per_user = table.groupby(["user_id", "field"]).size().groupby("field").max()
    cardinality = table.drop_duplicates("key").groupby("field").size()
    return sorted(f for f in per_user.index if per_user[f] == 1 and cardinality[f] <= max_values)


def _fit_hybrid(data: AppData, cfg: TrainConfig, users: IdMap, items: IdMap, confidences: sp.csr_matrix,
                keys: pd.DataFrame, segments: IdMap, progress: bool,
                deadline: float | None = None) -> tuple[HybridModel, np.ndarray]:
    """LightFM with profile features for users and content (+ identity of warm items) for items."""
    hyb = cfg.hybrid
    tokenizer = catalog_tokenizer(data.items) if hyb.title_tokens else None
    _, content_vocab, per_item = build_item_features(data.items, hyb.price_bands, tokenizer,
                                                     hyb.min_token_items, identity=False)
    warm_items = np.flatnonzero(np.diff(confidences.tocsc().indptr) > 0)
    item_vocab = IdMap.of([*content_vocab.ids, *(f"id={items.ids[i]}" for i in warm_items)])
    item_features = content_matrix(per_item, item_vocab, list(items.ids))
    user_vocab = IdMap.of([BIAS_FEATURE, *segments.ids])
    with_bias = pd.concat([keys, pd.DataFrame({"user_id": list(users.ids), "key": BIAS_FEATURE})], ignore_index=True)
    user_features, _ = feature_matrix(users, with_bias, user_vocab)
    hybrid = HybridModel.fit(confidences, normalize_rows(user_features), user_vocab, item_features, item_vocab,
                             hyb, progress=progress, deadline=deadline)
    content_vectors = hybrid.item_vectors(content_matrix(per_item, item_vocab))[0]
    return hybrid, content_vectors


def fit_models(data: AppData, cfg: TrainConfig, interactions: pd.DataFrame | None = None,
               progress: bool = True, parts: frozenset[str] = ALL_PARTS,
               deadline: float | None = None) -> TrainedModels:
    """Train the bundle's models: popularity and the profile kernel always, ALS / hybrid / related per `parts`.

    `interactions` defaults to all of `data.interactions`; evaluation passes a training split.
    Related items need the hybrid's content vectors, so "related" implies "hybrid". A `deadline`
    (tuning's) stops the hybrid's fit with DeadlineExceeded when it could not end in time.
    """
    frame = data.interactions if interactions is None else interactions
    bar = tqdm(total=len(STAGES), desc="training", unit="stage", disable=not progress)

    def stage(name: str) -> None:
        bar.set_postfix_str(name)

    stage("matrices")
    items = IdMap.of(data.items["item_id"])
    positive = positive_mask(frame, cfg)
    users = IdMap.of(frame.loc[positive, "user_id"])
    confidences = confidence_matrix(frame, cfg, users, items)
    recent = confidence_matrix(frame, cfg, users, items, cfg.popularity.half_life_days)
    keys = profile_key_table(data.merchant_profiles, data.platform_profiles, cfg.scope_map())
    user_keys, segments = feature_matrix(users, keys)
    bar.update()

    stage("known-user model")
    known = None
    if "known" in parts:
        family = known_family(cfg)
        known = fit_known(family, confidences, known_params(cfg, family), cfg.als, progress=progress)
    bar.update()

    stage("popularity")
    popularity = Popularity.fit(recent, user_keys, segments, cfg.popularity.segment_shrinkage)
    bar.update()

    stage("profile kernel")
    cold = cfg.coldstart
    fields = kernel_fields(keys, cold.fields) if cold.segments else []  # no fields: one segment, everyone
    kernel = ProfileKernel.fit(keys, users, kernel_interactions(frame, cfg, users, items), fields,
                               cold.field_weights, cold.power, cold.bandwidth_scale, binary=False)
    bar.update()

    stage("hybrid")
    hybrid, content_vectors = None, None
    if parts & {"hybrid", "related"}:
        hybrid, content_vectors = _fit_hybrid(data, cfg, users, items, confidences, keys, segments, progress,
                                              deadline)
    bar.update()

    stage("related items")
    related = None
    if "related" in parts:
        related = RelatedItems.fit(confidences, content_vectors, cfg.related.neighbours, cfg.related.content_weight)
    bar.update()
    bar.close()

    catalog = data.items[list(CATALOG_COLUMNS)].reset_index(drop=True)
    repeat = RepeatModel.fit(frame, users, items, dataclasses.replace(cfg.repeat))
    return TrainedModels(users, items, catalog, confidences, known, hybrid, popularity, related,
                         content_vectors, kernel, cold.hybrid_weight, repeat)
