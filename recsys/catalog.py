"""The one live catalog of an app at serving time: the bundle's items plus live changes from the API.

Every feed, search, fallback and the overload path read items through it. Positions are shared by
all of them: 0..n_trained-1 are the bundle's items (the models' item indices), n_trained + j is the
j-th item published after training. A request takes one `CatalogState` (`catalog.state`) and reads
everything from it — titles, prices, the user's eligibility mask — so a concurrent update never
shows it half a change.

Item upserts (`PUT items/{id}`) arrive through Redis and are applied by a background sync (and at
once by the worker that took the PUT): a change to a trained item replaces the arrays it touches; an
item published after training joins the overlay of new items, with content vectors from the
hybrid's item features when the bundle has a hybrid (feeds then score it without retraining).
Listeners (the search index) are told of every applied batch.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from recsys.item_features import catalog_tokenizer, category_levels, content_keys, content_matrix
from recsys.matrix import IdMap
from recsys.models import TrainedModels
from recsys.schema import CATEGORY_SEP, ITEMS, LIST_SEP
from vocab.tokenizer import Tokenizer

#: The fields of an item that feeds and search show or match on.
TEXT_FIELDS = ("title", "brand", "category", "tags")
#: Distinct combinations of audience-relevant profile values whose masks are kept per state.
_MASK_CACHE = 1024


def as_bool(value: Any) -> bool:
    """An item's `visible` as stored: booleans arrive from Redis as strings."""
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("true", "1", "yes")


def parse_audience(rule: str) -> tuple[str, frozenset[str]]:
    """`member_level:gold|platinum` → ("member_level", {"gold", "platinum"})."""
    field_name, _, values = rule.partition(":")
    return field_name, frozenset(v.strip() for v in values.split(LIST_SEP))


def audience_allows(rule: str, merchant_profile: Mapping[str, str]) -> bool:
    """Whether a user with this merchant profile may see an item with this audience rule ("" = everyone)."""
    if not rule:
        return True
    field_name, allowed = parse_audience(rule)
    return merchant_profile.get(field_name, "") in allowed


def in_category(path: str, category: str) -> bool:
    """Whether an item's category path is `category` or below it."""
    return path == category or path.startswith(category + CATEGORY_SEP)


def _frozen(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


@dataclass(frozen=True)
class NewItems:
    """Items published after training, in order of arrival; one immutable snapshot."""

    ids: tuple[str, ...] = ()
    #: Each item's full row (every column of the data contract).
    rows: tuple[dict[str, Any], ...] = ()
    #: The hybrid's content vectors and biases; None when the bundle has no hybrid.
    vectors: np.ndarray | None = None
    biases: np.ndarray | None = None
    index: dict[str, int] = field(default_factory=dict)
    #: Columns derived from `rows`, made once per snapshot (requests read them, never change them).
    _derived: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __len__(self) -> int:
        return len(self.ids)

    def _once(self, key: str, make: Callable[[], Any]) -> Any:
        found = self._derived.get(key)
        if found is None:
            found = self._derived[key] = make()
        return found

    def column(self, name: str) -> list[str]:
        return self._once(f"text:{name}", lambda: [str(r.get(name) or "") for r in self.rows])

    def visible(self) -> np.ndarray:
        """Read-only, like `stock` and `prices`."""
        return self._once("visible", lambda: _frozen(np.array([as_bool(r["visible"]) for r in self.rows], dtype=bool)))

    def stock(self) -> np.ndarray:
        return self._once("stock", lambda: _frozen(np.array([float(r["stock"] or 0) for r in self.rows])))

    def prices(self) -> np.ndarray:
        return self._once("prices", lambda: _frozen(np.array([float(r["price"] or 0) for r in self.rows])))


@dataclass(frozen=True)
class CatalogState:
    """One consistent snapshot of the live catalog (see the module docstring for positions)."""

    items: IdMap
    titles: list[str]
    categories: list[str]
    brands: list[str]
    tags: list[str]
    audiences: list[str]
    prices: np.ndarray
    visible: np.ndarray
    stock: np.ndarray
    category_index: dict[str, np.ndarray]
    #: Unique audience rules of trained items → (profile field, allowed values, item positions).
    audience_rules: list[tuple[str, frozenset[str], np.ndarray]]
    new: NewItems = field(default_factory=NewItems)
    _masks: dict[tuple[str, ...], np.ndarray] = field(default_factory=dict, compare=False, repr=False)
    #: Positions below this are the bundle's items (a plain attribute: read for every item shown).
    n_trained: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "n_trained", len(self.titles))

    # --- positions -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.n_trained + len(self.new)

    def position(self, item_id: str) -> int | None:
        """The item's position, trained or new; None if the catalog does not have it."""
        idx = self.items.get(item_id)
        if idx is not None:
            return idx
        j = self.new.index.get(item_id)
        return None if j is None else self.n_trained + j

    def item_id(self, pos: int) -> str:
        return self.items.ids[pos] if pos < self.n_trained else self.new.ids[pos - self.n_trained]

    def _new_text(self, pos: int, name: str) -> str:
        return str(self.new.rows[pos - self.n_trained].get(name) or "")

    def title(self, pos: int) -> str:
        return self.titles[pos] if pos < self.n_trained else self._new_text(pos, "title")

    def category(self, pos: int) -> str:
        return self.categories[pos] if pos < self.n_trained else self._new_text(pos, "category")

    def brand(self, pos: int) -> str:
        return self.brands[pos] if pos < self.n_trained else self._new_text(pos, "brand")

    def texts(self, pos: int) -> tuple[str, str, str, str]:
        """The item's title, brand, category and tags (`TEXT_FIELDS`)."""
        if pos < self.n_trained:
            return self.titles[pos], self.brands[pos], self.categories[pos], self.tags[pos]
        row = self.new.rows[pos - self.n_trained]
        return tuple(str(row.get(name) or "") for name in TEXT_FIELDS)  # type: ignore[return-value]

    def price(self, pos: int) -> float:
        if pos < self.n_trained:
            return float(self.prices[pos])
        return float(self.new.rows[pos - self.n_trained].get("price") or 0)

    def row(self, pos: int) -> dict[str, Any]:
        """The item's searchable text fields, id and price."""
        return {"item_id": self.item_id(pos), **dict(zip(TEXT_FIELDS, self.texts(pos))), "price": self.price(pos)}

    def all_prices(self) -> np.ndarray:
        return np.concatenate([self.prices, self.new.prices()]) if len(self.new) else self.prices

    # --- masks over every position -----------------------------------------------------------------
    def available(self) -> np.ndarray:
        """Trained items that may be shown to anyone in the audience: visible and in stock (what
        tuning and the gate leave out of every ranked list, as serving does)."""
        return self.visible & (self.stock > 0)

    def eligible(self, merchant_profile: Mapping[str, str], *, in_stock: bool = True) -> np.ndarray:
        """Items this user may be shown: visible, in stock (unless `in_stock` is false) and within
        their audience. A new writable array over every position (trained, then new)."""
        trained = self.available() if in_stock else self.visible.copy()
        trained &= self.audience_mask(merchant_profile)
        if not len(self.new):
            return trained
        new = self.new.visible() & (self.new.stock() > 0) if in_stock else self.new.visible().copy()
        audiences = self.new.column("audience")
        if any(audiences):
            new &= np.array([audience_allows(a, merchant_profile) for a in audiences], dtype=bool)
        return np.concatenate([trained, new])

    def audience_mask(self, merchant_profile: Mapping[str, str]) -> np.ndarray:
        """Trained items the profile's audience allows (items without an audience included); cached
        per combination of the profile values the rules look at (a member level, a store: few),
        read-only."""
        signature = tuple(merchant_profile.get(name, "") for name, _, _ in self.audience_rules)
        mask = self._masks.get(signature)
        if mask is None:
            mask = np.ones(self.n_trained, dtype=bool)
            for name, allowed, idx in self.audience_rules:
                if merchant_profile.get(name, "") not in allowed:
                    mask[idx] = False
            mask = _frozen(mask)
            if len(self._masks) < _MASK_CACHE:  # bounded even if a rule's field takes free text
                self._masks[signature] = mask
        return mask

    def restricted(self) -> np.ndarray:
        """Items that have an audience at all (the exclusive shelf's candidates)."""
        mask = np.zeros(len(self), dtype=bool)
        for _, _, idx in self.audience_rules:
            mask[idx] = True
        mask[self.n_trained:] = [bool(a) for a in self.new.column("audience")]
        return mask

    def category_mask(self, category: str) -> np.ndarray | None:
        """Items in the category path or below it; None if no item has that category."""
        path = category.strip().strip(CATEGORY_SEP)
        mask = np.zeros(len(self), dtype=bool)
        members = self.category_index.get(path)
        known = members is not None
        if members is not None:
            mask[members] = True
        for j, item_category in enumerate(self.new.column("category")):
            if in_category(item_category, path):
                mask[self.n_trained + j] = known = True
        return mask if known else None


_PLURAL = {"title": "titles", "category": "categories", "brand": "brands", "tags": "tags"}


def _category_index(categories: list[str]) -> dict[str, np.ndarray]:
    index: dict[str, list[int]] = {}
    for i, path in enumerate(categories):
        for level in category_levels(path):
            index.setdefault(level, []).append(i)
    return {k: _frozen(np.array(v, dtype=np.int64)) for k, v in index.items()}


def _audience_rules(audiences: list[str]) -> list[tuple[str, frozenset[str], np.ndarray]]:
    rules: dict[str, list[int]] = {}
    for i, rule in enumerate(audiences):
        if rule:
            rules.setdefault(rule, []).append(i)
    return [(*parse_audience(rule), _frozen(np.array(idx, dtype=np.int64))) for rule, idx in rules.items()]


def catalog_state(catalog: pd.DataFrame, items: IdMap) -> CatalogState:
    """The state of a catalog table (the data contract's `items` columns, rows in `items` order)
    before any live change: what a loaded bundle starts from, and what tuning ranks within."""
    text = {name: catalog[name].astype(str).tolist() for name in (*TEXT_FIELDS, "audience")}
    return CatalogState(
        items=items, titles=text["title"], categories=text["category"], brands=text["brand"],
        tags=text["tags"], audiences=text["audience"],
        prices=_frozen(catalog["price"].to_numpy(dtype=np.float64).copy()),
        visible=_frozen(catalog["visible"].astype(bool).to_numpy().copy()),
        stock=_frozen(catalog["stock"].to_numpy(dtype=np.float64).copy()),
        category_index=_category_index(text["category"]), audience_rules=_audience_rules(text["audience"]))


class ServingCatalog:
    """The live catalog of one loaded bundle: `state` is the current snapshot."""

    def __init__(self, models: TrainedModels, edges: list[float]) -> None:
        self.models = models
        self.edges = edges
        self.state = catalog_state(models.catalog, models.items)
        self._lock = threading.Lock()
        self._versions: dict[str, float] = {}  # update time of the last applied upsert, per item
        self._tokenizer: Tokenizer | None = None
        #: Called with every applied batch of upserts and the state it produced (search follows the
        #: catalog this way).
        self.listeners: list[Callable[[dict[str, dict[str, Any]], CatalogState], None]] = []

    @property
    def ids(self) -> tuple[str, ...]:
        """Trained items' ids (never change for a loaded bundle)."""
        return self.models.items.ids

    @property
    def tokenizer(self) -> Tokenizer:
        """The catalog's tokenizer (jieba with the app's brands, categories and tags), built once on
        first use and shared with search, which also teaches it brands of new items."""
        if self._tokenizer is None:
            self._tokenizer = catalog_tokenizer(self.models.catalog)
        return self._tokenizer

    def apply_updates(self, updates: dict[str, dict[str, Any]], versions: Mapping[str, float] | None = None) -> int:
        """Apply item upserts read from Redis (each the item's whole hash: every field ever PUT);
        returns how many items the overlay of new items gained.

        `versions` are the upserts' update times: an upsert older than one already applied to the
        same item is skipped, so a sync that read an item just before a PUT changed it cannot undo
        that PUT here (the sync's next round brings the newer fields with their own time)."""
        with self._lock:
            if versions is not None:
                updates = {i: f for i, f in updates.items() if versions.get(i, 0.0) >= self._versions.get(i, 0.0)}
                self._versions.update((i, versions.get(i, 0.0)) for i in updates)
            before = self.state
            trained = {i: f for i, f in updates.items() if before.items.get(i) is not None}
            fresh = {i: f for i, f in updates.items() if before.items.get(i) is None}
            state = _update_trained(before, trained) if trained else before
            state = self._update_new(state, fresh) if fresh else state
            self.state = state
        for listener in self.listeners:
            listener(updates, state)
        return len(state.new) - len(before.new)

    def _update_new(self, state: CatalogState, fresh: dict[str, dict[str, Any]]) -> CatalogState:
        """New items join (or change in) the overlay; a first upsert without a title and category is
        ignored (the API refuses such an item, an incomplete row from Redis is skipped too)."""
        new = state.new
        rows, ids = list(new.rows), list(new.ids)
        for item_id, fields in fresh.items():
            j = new.index.get(item_id)
            if j is None and not {"title", "category"} <= set(fields):
                continue
            base = rows[j] if j is not None else {c.name: "" if c.default is None else c.default
                                                  for c in ITEMS.columns}
            row = {**base, **{k: v for k, v in fields.items() if v is not None}, "item_id": item_id}
            if j is None:
                ids.append(item_id)
                rows.append(row)
            else:
                rows[j] = row
        vectors = biases = None
        hybrid = self.models.hybrid
        if hybrid is not None and rows:
            keys = [content_keys(r, self.edges, self.tokenizer) for r in rows]
            vectors, biases = hybrid.item_vectors(content_matrix(keys, hybrid.item_vocab))
        index = {item_id: j for j, item_id in enumerate(ids)}
        return replace(state, new=NewItems(tuple(ids), tuple(rows), vectors, biases, index))


def _update_trained(state: CatalogState, updates: dict[str, dict[str, Any]]) -> CatalogState:
    """Changes to the bundle's items, on copies of what they touch (readers keep the old state). A
    field never PUT keeps the bundle's value: a price change must not un-hide a hidden item."""
    changes: dict[str, Any] = {}

    def copy_of(name: str) -> Any:
        if name not in changes:
            value = getattr(state, name)
            changes[name] = value.copy() if isinstance(value, np.ndarray) else list(value)
        return changes[name]

    for item_id, fields in updates.items():
        idx = state.items.index[item_id]
        if "visible" in fields:
            copy_of("visible")[idx] = as_bool(fields["visible"])
        if "stock" in fields:
            copy_of("stock")[idx] = float(fields["stock"] or 0)
        if "price" in fields:
            copy_of("prices")[idx] = float(fields["price"] or 0)
        for name in (*TEXT_FIELDS, "audience"):
            plural = _PLURAL.get(name, "audiences")
            if name in fields and str(fields[name] or "") != getattr(state, plural)[idx]:
                copy_of(plural)[idx] = str(fields[name] or "")
    for name, value in changes.items():
        if isinstance(value, np.ndarray):
            _frozen(value)
    if "categories" in changes:
        changes["category_index"] = _category_index(changes["categories"])
    if "audiences" in changes:
        changes["audience_rules"] = _audience_rules(changes["audiences"])
    return replace(state, **changes, _masks={} if "audiences" in changes else state._masks)
