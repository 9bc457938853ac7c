"""The serving view of an app's catalog: the bundle's items plus live changes from the API.

Request-time rules need fast masks (visible, in stock, category, audience), so they are kept as
NumPy arrays built once per bundle. Item upserts (`PUT items/{id}`) arrive through Redis and are
applied by a background sync: changes to trained items update the masks, and items published after
training are kept as an overlay with content vectors from the hybrid's item features, which makes
them recommendable without retraining.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recsys.schema import CATEGORY_SEP, ITEMS, LIST_SEP
from recsys.item_features import catalog_tokenizer, category_levels, content_keys, content_matrix
from recsys.models import TrainedModels
from vocab.tokenizer import Tokenizer


def _as_bool(value: Any) -> bool:
    """Booleans arrive from Redis as strings."""
    return str(value).strip().lower() in ("true", "1", "yes")


@dataclass
class NewItems:
    """Items published after training: metadata and hybrid content vectors."""

    ids: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    biases: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))

    def available(self) -> np.ndarray:
        """Which of these items may be shown (visible and in stock)."""
        return np.array([_as_bool(r["visible"]) and float(r["stock"]) > 0 for r in self.rows], dtype=bool)

    def eligible(self, merchant_profile: dict[str, str]) -> np.ndarray:
        """Which of these items this user may see by their audience (as `audience_masks` for trained items)."""
        return np.array([audience_allows(str(r.get("audience") or ""), merchant_profile) for r in self.rows],
                        dtype=bool)


def parse_audience(rule: str) -> tuple[str, frozenset[str]]:
    """`member_level:gold|platinum` → ("member_level", {"gold", "platinum"})."""
    field_name, _, values = rule.partition(":")
    return field_name, frozenset(v.strip() for v in values.split(LIST_SEP))


def audience_allows(rule: str, merchant_profile: dict[str, str]) -> bool:
    """Whether a user with this merchant profile may see an item with this audience rule ("" = everyone)."""
    if not rule:
        return True
    field_name, allowed = parse_audience(rule)
    return merchant_profile.get(field_name, "") in allowed


class ServingCatalog:
    """Masks and metadata of one loaded bundle's catalog, plus the live overlay."""

    def __init__(self, models: TrainedModels, edges: list[float]) -> None:
        self.models = models
        self.edges = edges
        cat = models.catalog
        self.ids: list[str] = list(models.items.ids)
        # plain lists: the request path reads them one item at a time, faster than NumPy object arrays
        self.titles: list[str] = cat["title"].astype(str).tolist()
        self.categories: list[str] = cat["category"].astype(str).tolist()
        self.brands: list[str] = cat["brand"].astype(str).tolist()
        self.prices = cat["price"].to_numpy(dtype=np.float64).copy()
        self._bundle_visible = cat["visible"].astype(bool).to_numpy().copy()
        self._bundle_stock = cat["stock"].to_numpy(dtype=np.float64).copy()
        self.available = self._bundle_visible & (self._bundle_stock > 0)
        self._category_index = self._build_category_index(self.categories)
        self._audience = self._parse_audiences(cat["audience"].astype(str).tolist())
        self._audience_cache: dict[tuple[str, ...], tuple[np.ndarray, np.ndarray]] = {}
        self.new = NewItems()
        self._lock = threading.Lock()
        self._tokenizer: Tokenizer | None = None
        #: Called with every batch of applied upserts (the search index follows the catalog this way).
        self.listeners: list[Callable[[dict[str, dict[str, Any]]], None]] = []

    # --- static structure -----------------------------------------------------------------
    @staticmethod
    def _build_category_index(categories: list[str]) -> dict[str, np.ndarray]:
        index: dict[str, list[int]] = {}
        for i, path in enumerate(categories):
            for level in category_levels(path):
                index.setdefault(level, []).append(i)
        return {k: np.array(v, dtype=np.int64) for k, v in index.items()}

    @staticmethod
    def _parse_audiences(audiences: list[str]) -> list[tuple[str, frozenset[str], np.ndarray]]:
        """Unique audience rules → (profile field, allowed values, item indices)."""
        rules: dict[str, list[int]] = {}
        for i, rule in enumerate(audiences):
            if rule:
                rules.setdefault(rule, []).append(i)
        return [(*parse_audience(rule), np.array(idx)) for rule, idx in rules.items()]

    @property
    def tokenizer(self) -> Tokenizer:
        """The catalog's tokenizer (jieba with the app's brands, categories and tags), built once on
        first use and shared with search, which also teaches it brands of new items."""
        if self._tokenizer is None:
            self._tokenizer = catalog_tokenizer(self.models.catalog)
        return self._tokenizer

    def category_items(self, category: str) -> np.ndarray | None:
        """Indices of items in a category path or below it; None if the category is unknown."""
        return self._category_index.get(category.strip().strip(CATEGORY_SEP))

    def audience_masks(self, merchant_profile: dict[str, str]) -> tuple[np.ndarray, np.ndarray]:
        """(eligible, restricted): items the user may see, and items that have an audience at all.

        Read-only arrays, cached per combination of the profile values the audience rules look at
        (few: a member level, a store), so a request does not rebuild two catalog-sized masks."""
        signature = tuple(merchant_profile.get(field_name, "") for field_name, _, _ in self._audience)
        masks = self._audience_cache.get(signature)
        if masks is None:
            eligible = np.ones(len(self.ids), dtype=bool)
            restricted = np.zeros(len(self.ids), dtype=bool)
            for field_name, allowed, idx in self._audience:
                restricted[idx] = True
                if merchant_profile.get(field_name, "") not in allowed:
                    eligible[idx] = False
            eligible.flags.writeable = restricted.flags.writeable = False
            masks = (eligible, restricted)
            if len(self._audience_cache) < 1024:  # bounded even if a rule's field takes free text
                self._audience_cache[signature] = masks
        return masks

    # --- live changes -----------------------------------------------------------------------
    def apply_updates(self, updates: dict[str, dict[str, Any]]) -> int:
        """Apply item upserts read from Redis; returns how many new items the overlay gained."""
        fresh: list[tuple[str, dict[str, Any]]] = []
        with self._lock:
            for item_id, fields in updates.items():
                idx = self.models.items.get(item_id)
                if idx is not None:
                    self._update_trained(idx, fields)
                else:
                    fresh.append((item_id, fields))
            if fresh:
                self._add_new(fresh)
        for listener in self.listeners:
            listener(updates)
        return len(fresh)

    def _update_trained(self, idx: int, fields: dict[str, Any]) -> None:
        """`fields` is the item's hash in Redis: every field ever PUT; a field never PUT keeps the
        bundle's value (a price change must not un-hide a hidden or sold-out item)."""
        visible = _as_bool(fields["visible"]) if "visible" in fields else bool(self._bundle_visible[idx])
        stock = float(fields["stock"]) if "stock" in fields else float(self._bundle_stock[idx])
        available = self.available.copy()  # replaced, not changed in place under readers
        available[idx] = visible and stock > 0
        self.available = available
        if "price" in fields:
            prices = self.prices.copy()
            prices[idx] = float(fields["price"])
            self.prices = prices

    def _add_new(self, fresh: list[tuple[str, dict[str, Any]]]) -> None:
        hybrid = self.models.hybrid
        if hybrid is None:
            return
        tokenizer = self.tokenizer
        known = {item_id: i for i, item_id in enumerate(self.new.ids)}
        rows = list(self.new.rows)
        ids = list(self.new.ids)
        for item_id, fields in fresh:
            row = {c.name: fields.get(c.name, "" if c.default is None else c.default) for c in ITEMS.columns}
            row["item_id"] = item_id
            if item_id in known:
                rows[known[item_id]] = row
            else:
                ids.append(item_id)
                rows.append(row)
        keys = [content_keys(r, self.edges, tokenizer) for r in rows]
        vectors, biases = hybrid.item_vectors(content_matrix(keys, hybrid.item_vocab))
        self.new = NewItems(ids, rows, vectors, biases)

