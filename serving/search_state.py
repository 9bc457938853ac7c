"""One app's search state at serving time: the bundle's index and query statistics plus live changes.

Document ids: a trained item's id is its catalog position (as in the bundle's index); an item
published after training gets the next free id (`n_base`, `n_base + 1`, …) in the index's overlay.

Live changes come from `ServingCatalog.apply_updates` (this worker at once on `PUT items/{id}`, the
other workers at their next sync, about a second later), which calls `apply_updates` here:
- visibility, stock and price live in per-document arrays that every query reads as its candidate
  mask, so a hidden or sold-out item drops out of the very next query, with no index change;
- a new item, or a trained item whose title, brand, category or tags changed, is re-tokenized and
  upserted into the BM25 overlay (milliseconds), and its brand, category and title join the
  direct-hit dictionary; a fresh bundle starts from the base index and replays every upsert.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rapidfuzz import fuzz, process

from recsys.schema import CATEGORY_SEP, ITEMS, LIST_SEP
from recsys import bundle
from recsys.item_features import category_levels
from search.bm25 import BM25Index
from search.interpret import QueryReader, Reading, ascii_words
from search.item_index import LEGACY_ANALYSIS, QUERIES_NAME, item_fields, load_item_index, query_analysis
from search.query_log import QueryStats
from search.settings import SearchSettings, SettingsFile
from search.suggest import SuggestIndex, key_of
from vocab.tokenizer import Tokenizer, normalize
from recsys.catalog import ServingCatalog, audience_allows

TEXT_FIELDS = ("title", "brand", "category", "tags")
#: The text fields in the order search reasons name them.
FIELD_ORDER = ("brand", "title", "category", "tags")
_WHITESPACE = re.compile(r"\s+")
#: Seconds a live hot list read from Redis is reused (hot, suggest and discovery share it).
HOT_TTL_S = 2.0
HOT_FETCH = 200


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("true", "1", "yes")


@dataclass(frozen=True)
class Direct:
    """A query that names something exactly: a brand, a category or one item."""

    type: str  # brand | category | item
    name: str
    target: str  # the brand, the category path, or the item id


@dataclass
class _Draft:
    """Copies of a search state's live structures, changed by `apply_updates` and then published."""

    rows: dict[int, dict[str, Any]]
    new_docs: dict[str, int]
    direct: dict[str, "Direct"]
    brand_docs: dict[str, set[int]]
    brand_of: dict[int, str]
    live_terms: set[str]
    visible: np.ndarray
    stock: np.ndarray
    new_prices: np.ndarray

    def grow(self, n: int, n_base: int) -> None:
        """Room for documents up to n (new items start visible and in stock unless told otherwise)."""
        if n > len(self.visible):
            size = max(n, int(len(self.visible) * 1.25) + 16)
            visible, stock = np.ones(size, dtype=bool), np.ones(size)
            visible[: len(self.visible)], stock[: len(self.stock)] = self.visible, self.stock
            self.visible, self.stock = visible, stock
        extra = n - n_base - len(self.new_prices)
        if extra > 0:
            self.new_prices = np.concatenate([self.new_prices, np.zeros(extra)])


@dataclass(frozen=True)
class LiveHot:
    """A cached read of the live hot queries (None: Redis was unreachable)."""

    rows: list[tuple[str, float]] | None
    index: SuggestIndex | None
    fetched_at: float


class SearchState:
    """Index, tokenizer, query statistics, suggest terms and live item state of one loaded bundle."""

    def __init__(self, index: BM25Index, tokenizer: Tokenizer, stats: QueryStats, catalog: ServingCatalog,
                 settings: SettingsFile, analysis: dict[str, tuple[str, ...]] = LEGACY_ANALYSIS,
                 words: dict[str, int] | None = None) -> None:
        self.index = index
        self.tokenizer = tokenizer
        self.analysis = dict(analysis)
        self.query_analysis = query_analysis(self.analysis)
        #: the catalog's Chinese words → items having them (pinyin and typo interpretation)
        self.words = words or {}
        self.stats = stats
        self.catalog = catalog
        self.settings_file = settings
        cat = catalog.models.catalog
        self.n_base = len(catalog.ids)
        if index.n_base != self.n_base:
            raise ValueError(f"search index has {index.n_base} documents, the catalog {self.n_base} items")
        self.tags = cat["tags"].astype(str).to_numpy(dtype=object)
        self.visible = cat["visible"].astype(bool).to_numpy().copy()
        self.stock = cat["stock"].to_numpy(dtype=np.float64).copy()
        self.new_prices = np.zeros(0)
        #: rows of documents changed or added live (doc id → full item row), and new items' doc ids
        self.rows: dict[int, dict[str, Any]] = {}
        self.new_docs: dict[str, int] = {}
        self.live_terms: set[str] = set()  # tokens of live documents (the base has `index.spans`)
        self.top_levels = sorted({c.split(CATEGORY_SEP, 1)[0] for c in catalog.categories})
        self.suggest = SuggestIndex(stats.terms, self.top_levels)
        self.reader = QueryReader(self.words, ascii_words(index.vocab, np.diff(index.indptr)), tokenizer,
                                  bigrams="bigrams" in self.query_analysis,
                                  terms=[(t[0], t[2]) for t in stats.terms if t[1] != "title"])
        self.direct: dict[str, Direct] = {}
        self._brand_docs: dict[str, set[int]] = {}
        self._brand_of: dict[int, str] = {}
        for i, row in enumerate(cat[["item_id", "title", "brand", "category"]].astype(str).itertuples(index=False)):
            self._learn(i, row.item_id, row.title, row.brand, row.category)
        self._hot = LiveHot(None, None, -HOT_TTL_S)
        self._hot_index_at = -HOT_TTL_S
        self._normalized: dict[int, dict[str, str]] = {}  # trained documents' normalized fields
        self._text_keys: dict[int, str] = {}  # and their text without whitespace
        self._lock = threading.Lock()

    @classmethod
    def load(cls, loaded: bundle.Bundle, catalog: ServingCatalog) -> "SearchState | None":
        """The search state of a bundle, attached to its catalog's live updates; None for a bundle
        trained before search existed (search routes then answer 503 until the next training)."""
        found = load_item_index(loaded)
        if found is None or not loaded.has(f"{QUERIES_NAME}.json"):
            return None
        index, analysis, words = found
        state = cls(index, catalog.tokenizer, QueryStats(loaded.json(QUERIES_NAME)),
                    catalog, SettingsFile(Path(loaded.path).parent), analysis, words)
        catalog.listeners.append(state.apply_updates)
        return state

    @property
    def settings(self) -> SearchSettings:
        return self.settings_file.get()

    # --- direct hits ------------------------------------------------------------------------
    def _learn(self, doc: int, item_id: str, title: str, brand: str, category: str,
               into: "_Draft | None" = None) -> None:
        """Add an item's brand, category levels and title to the direct-hit dictionary (of `into`, a
        live change's draft; else this state's own, while it is being built).
        On a name clash a brand wins over a category, and a category over an item title."""
        direct, brand_docs, brand_of = (into.direct, into.brand_docs, into.brand_of) if into else (
            self.direct, self._brand_docs, self._brand_of)
        old = brand_of.pop(doc, None)
        if old is not None:  # a live change may move an item to another brand
            brand_docs[old] = brand_docs[old] - {doc}  # a new set: queries may be reading the old one
        if brand.strip():
            direct.setdefault(key_of(brand), Direct("brand", brand.strip(), brand.strip()))
            if into is None:
                brand_docs.setdefault(key_of(brand), set()).add(doc)
            else:
                brand_docs[key_of(brand)] = brand_docs.get(key_of(brand), set()) | {doc}
            brand_of[doc] = key_of(brand)
        for path in category_levels(category):
            for name in (path, path.rsplit(CATEGORY_SEP, 1)[-1]):
                known = direct.get(key_of(name))
                if known is None or known.type == "item":
                    direct[key_of(name)] = Direct("category", name, path)
        title_key = key_of(title)
        if title_key and title_key not in direct:
            direct[title_key] = Direct("item", title.strip(), item_id)

    def direct_hit(self, query: str, allowed: np.ndarray) -> tuple[Direct, int] | None:
        """(target, number of allowed items behind it) if the query names a brand, category or item."""
        found = self.direct.get(key_of(query))
        if found is None:
            return None
        if found.type == "brand":
            docs = np.fromiter(self._brand_docs.get(key_of(found.name), ()), dtype=np.int64)
            count = int(allowed[docs[docs < len(allowed)]].sum())
        elif found.type == "item":
            doc = self.doc_of(found.target)
            count = int(doc is not None and doc < len(allowed) and bool(allowed[doc]))
        else:
            count = int(self.category_mask(found.target, len(allowed))[0][allowed].sum())
        return (found, count) if count else None

    # --- documents ----------------------------------------------------------------------------
    def doc_of(self, item_id: str) -> int | None:
        idx = self.catalog.models.items.get(item_id)
        return idx if idx is not None else self.new_docs.get(item_id)

    def item_id(self, doc: int) -> str:
        return self.catalog.ids[doc] if doc < self.n_base else str(self.rows[doc]["item_id"])

    def row(self, doc: int) -> dict[str, Any]:
        """The item's current fields (live changes applied)."""
        if doc in self.rows:
            return self.rows[doc]
        cat = self.catalog
        return {"item_id": cat.ids[doc], "title": str(cat.titles[doc]), "category": str(cat.categories[doc]),
                "brand": str(cat.brands[doc]), "tags": str(self.tags[doc]),
                "price": float(cat.prices[doc])}

    def normalized_fields(self, doc: int) -> dict[str, str]:
        """Brand, title, category and tags of a document, normalized (NFKC, lower case), in the order
        match reasons name them; cached for trained documents (a live change makes its own row)."""
        if doc in self.rows:
            row = self.rows[doc]
            return {f: normalize(str(row.get(f, ""))) for f in FIELD_ORDER}
        cached = self._normalized.get(doc)
        if cached is None:
            row = self.row(doc)
            cached = self._normalized[doc] = {f: normalize(str(row.get(f, ""))) for f in FIELD_ORDER}
        return cached

    def text_key(self, doc: int) -> str:
        """The document's searchable text without whitespace (exact-match checks of typed queries)."""
        if doc in self.rows:
            return "".join(_WHITESPACE.sub("", text) for text in self.normalized_fields(doc).values())
        cached = self._text_keys.get(doc)
        if cached is None:
            cached = self._text_keys[doc] = "".join(_WHITESPACE.sub("", t) for t in self.normalized_fields(doc).values())
        return cached

    def known_token(self, token: str) -> bool:
        return token in self.index.spans or token in self.live_terms

    def read(self, query: str) -> Reading | None:
        """The query read as pinyin or corrected (search/interpret.py), None if it is searched as typed."""
        return self.reader.read(query, self.known_token, self._together)

    def _together(self, text: str, others: list[str]) -> int:
        """Items (of the trained catalog) having every word of `text` and each of `others`, summed over
        `others`."""
        docs = None
        for word in self.tokenizer.tokens(text) or [text]:
            found = self._docs_with(word)
            docs = found if docs is None else np.intersect1d(docs, found, assume_unique=True)
        return sum(len(np.intersect1d(docs, self._docs_with(o), assume_unique=True)) for o in others)

    def _docs_with(self, token: str) -> np.ndarray:
        span = self.index.spans.get(token)
        return np.zeros(0, np.int32) if span is None else np.sort(self.index.postings[span[0]:span[1]])

    def did_you_mean(self, query: str, n: int = 3) -> list[str]:
        """Up to n suggestion terms (queries, brands, categories) closest to the query in spelling or
        pinyin (rapidfuzz's ratio of their keys ≥ 60), best first."""
        key = key_of(query)
        if not key or not self.suggest.keys:
            return []
        found = process.extract(key, self.suggest.keys, scorer=fuzz.ratio, limit=5 * n, score_cutoff=60)
        order = sorted(found, key=lambda f: (-f[1], -self.suggest.key_weights[f[2]]))
        texts = dict.fromkeys(self.suggest.texts[int(self.suggest.term_of[f[2]])] for f in order)
        return [t for t in texts if key_of(t) != key and not self.settings.blocked(t)][:n]

    def query_tokens(self, query: str) -> list[str]:
        """The query's tokens under the index's analysis (every analysis some field uses)."""
        return self.tokenizer.tokens(query, self.query_analysis)

    # --- candidate masks ----------------------------------------------------------------------
    def n_docs(self) -> int:
        return self.n_base + len(self.new_docs)

    def prices(self) -> np.ndarray:
        return np.concatenate([self.catalog.prices, self.new_prices])

    def base_mask(self, merchant_profile: dict[str, str], in_stock: bool) -> np.ndarray:
        """Items this user may see: visible, eligible (audience) and, unless `in_stock` is false, in stock."""
        n = self.n_docs()
        visible, stock = self.visible[:n], self.stock[:n]
        mask = visible & (stock > 0) if in_stock else visible.copy()
        eligible, _ = self.catalog.audience_masks(merchant_profile)
        mask[: self.n_base] &= eligible
        for doc in self.new_docs.values():
            if not audience_allows(str(self.rows[doc].get("audience") or ""), merchant_profile):
                mask[doc] = False
        return mask

    def category_mask(self, category: str, n: int) -> tuple[np.ndarray, bool]:
        """(items in the category path or below it, whether the category is known at all)."""
        path = category.strip().strip(CATEGORY_SEP)
        mask = np.zeros(n, dtype=bool)
        members = self.catalog.category_items(path)
        known = members is not None
        if members is not None:
            mask[members[members < n]] = True
        for doc in self.new_docs.values():
            cat = str(self.rows[doc].get("category", ""))
            if doc < n and (cat == path or cat.startswith(path + CATEGORY_SEP)):
                mask[doc] = known = True
        return mask, known

    # --- live changes -----------------------------------------------------------------------------
    def apply_updates(self, updates: dict[str, dict[str, Any]]) -> None:
        """Apply item upserts (called by `ServingCatalog.apply_updates`); see the module docstring.

        Queries run concurrently and never take the lock, so nothing they read is changed in place:
        the changes are made on copies (a draft), published by replacing references — arrays and
        rows first, then the new items' ids, then the direct hits — and only then are the new
        postings added to the index, so every document a query can find is already described."""
        with self._lock:
            draft = _Draft(dict(self.rows), dict(self.new_docs), dict(self.direct), dict(self._brand_docs),
                           dict(self._brand_of), set(self.live_terms), self.visible.copy(), self.stock.copy(),
                           self.new_prices.copy())
            postings = [p for item_id, fields in updates.items()
                        if (p := self._apply_one(draft, str(item_id), fields)) is not None]
            self.visible, self.stock, self.new_prices = draft.visible, draft.stock, draft.new_prices
            self.rows, self.live_terms = draft.rows, draft.live_terms
            self.new_docs = draft.new_docs
            self.direct, self._brand_docs, self._brand_of = draft.direct, draft.brand_docs, draft.brand_of
            for doc, tokens in postings:
                self.index.upsert(doc, tokens)

    def _apply_one(self, d: "_Draft", item_id: str, fields: dict[str, Any]) -> tuple[int, dict] | None:
        """Apply one upsert to the draft; returns the document's new postings if its text changed."""
        idx = self.catalog.models.items.get(item_id)
        fresh = idx is None and item_id not in d.new_docs
        if fresh and not {"title", "category"} <= set(fields):
            return None  # the API refuses such a new item; an incomplete row from Redis is ignored too
        if idx is not None:
            doc, before = idx, d.rows.get(idx) or self.row(idx)
        elif not fresh:
            doc = d.new_docs[item_id]
            before = d.rows[doc]
        else:
            doc = self.n_base + len(d.new_docs)
            before = {c.name: ("" if c.default is None else c.default) for c in ITEMS.columns}
        row = {**before, **{k: v for k, v in fields.items() if v is not None}, "item_id": item_id}
        text_changed = doc >= self.n_base or any(str(row.get(f, "")) != str(before.get(f, "")) for f in TEXT_FIELDS)
        if text_changed or doc in d.rows:
            d.rows[doc] = row
        if fresh:
            d.grow(doc + 1, self.n_base)
            d.new_docs[item_id] = doc
        if "visible" in fields:
            d.visible[doc] = _as_bool(fields["visible"])
        if "stock" in fields:
            d.stock[doc] = float(fields["stock"])
        if doc >= self.n_base:
            d.new_prices[doc - self.n_base] = float(row.get("price") or 0.0)
        if not text_changed:
            return None
        # a new brand or tag becomes one token for queries too
        self.tokenizer.add_words([str(row.get("brand", ""))] + str(row.get("tags", "")).split(LIST_SEP)
                                 + str(row.get("category", "")).split(CATEGORY_SEP))
        tokens = item_fields(row, self.tokenizer, self.analysis)
        d.live_terms.update(t for toks in tokens.values() for t in toks)
        self._learn(doc, item_id, str(row.get("title", "")), str(row.get("brand", "")), str(row.get("category", "")),
                    into=d)
        return doc, tokens

    # --- live hot queries -------------------------------------------------------------------------
    def cached_hot(self, max_age_s: float = HOT_TTL_S) -> LiveHot | None:
        """The last read of the live hot queries if it is under `max_age_s` old, else None.

        Suggest reads them on every keystroke, so it reuses a read for `HOT_TTL_S` seconds; the hot
        list itself (once per page view) reads fresh."""
        hot = self._hot
        return hot if time.monotonic() - hot.fetched_at < max_age_s else None

    def store_hot(self, rows: list[tuple[str, float]] | None) -> LiveHot:
        """Keep a new read of the live hot queries; None (Redis unreachable) keeps the last suggest
        terms and makes `rows` None, so that the caller answers degraded."""
        now = time.monotonic()
        if rows is None:
            self._hot = LiveHot(None, self._hot.index, now)
            return self._hot
        # The suggest index of the hot queries (their pinyin: tens of ms for a few hundred) is rebuilt
        # at most every HOT_TTL_S: the hot list reads fresh rows on every call, and rebuilding there
        # blocked the event loop under load (every request waited behind it).
        index = self._hot.index
        if not rows:
            index = None
        elif index is None or now - self._hot_index_at >= HOT_TTL_S:
            index = SuggestIndex.of_texts(rows, "hot", self.top_levels)
            self._hot_index_at = now
        self._hot = LiveHot(rows, index, now)
        return self._hot
