"""One app's search state at serving time: the bundle's BM25 index and query statistics, plus the
overlay of live documents.

Document ids are the live catalog's positions (`recsys/catalog.py`): a trained item's id is its
catalog position, an item published after training is `n_trained + j`. Whether an item may be
shown (visible, stock, audience), its price and its current text all come from the request's
catalog snapshot; search keeps only what is its own:
- the BM25 overlay: a new item, or a trained item whose title, brand, category or tags changed, is
  re-tokenized and upserted into the index (milliseconds) when the catalog applies the change (this
  worker at once on `PUT items/{id}`, the other workers at their next sync, about a second later);
- the direct-hit dictionary (brands, categories, titles) and the words the query reader knows;
- the cached read of the live hot queries.
A fresh bundle starts from the base index and replays every upsert through the catalog.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from rapidfuzz import fuzz, process

from recsys import bundle
from recsys.catalog import TEXT_FIELDS, CatalogState, ServingCatalog
from recsys.item_features import category_levels
from recsys.schema import CATEGORY_SEP, LIST_SEP
from search.bm25 import BM25Index
from search.interpret import QueryReader, Reading, ascii_words
from search.item_index import LEGACY_ANALYSIS, QUERIES_NAME, item_fields, load_item_index, query_analysis
from search.query_log import QueryStats
from search.settings import SearchSettings
from search.suggest import SuggestIndex, key_of
from vocab.tokenizer import Tokenizer, normalize

#: The text fields in the order search reasons name them.
FIELD_ORDER = ("brand", "title", "category", "tags")
_WHITESPACE = re.compile(r"\s+")
#: Seconds a live hot list read from Redis is reused (hot, suggest and discovery share it).
HOT_TTL_S = 2.0
HOT_FETCH = 200


@dataclass(frozen=True)
class Direct:
    """A query that names something exactly: a brand, a category or one item."""

    type: str  # brand | category | item
    name: str
    target: str  # the brand, the category path, or the item id


@dataclass(frozen=True)
class _Dictionary:
    """The direct-hit dictionary: replaced as a whole by a live change, never changed in place."""

    direct: dict[str, Direct]
    brand_docs: dict[str, frozenset[int]]
    brand_of: dict[int, str]

    def learn(self, doc: int, item_id: str, title: str, brand: str, category: str) -> None:
        """Add an item's brand, category levels and title (on a draft copy). On a name clash a brand
        wins over a category, and a category over an item title."""
        old = self.brand_of.pop(doc, None)
        if old is not None:  # a live change may move an item to another brand
            self.brand_docs[old] = self.brand_docs[old] - {doc}
        if brand.strip():
            key = key_of(brand)
            self.direct.setdefault(key, Direct("brand", brand.strip(), brand.strip()))
            self.brand_docs[key] = self.brand_docs.get(key, frozenset()) | {doc}
            self.brand_of[doc] = key
        for path in category_levels(category):
            for name in (path, path.rsplit(CATEGORY_SEP, 1)[-1]):
                known = self.direct.get(key_of(name))
                if known is None or known.type == "item":
                    self.direct[key_of(name)] = Direct("category", name, path)
        title_key = key_of(title)
        if title_key and title_key not in self.direct:
            self.direct[title_key] = Direct("item", title.strip(), item_id)

    def draft(self) -> "_Dictionary":
        return _Dictionary(dict(self.direct), dict(self.brand_docs), dict(self.brand_of))


@dataclass(frozen=True)
class LiveHot:
    """A cached read of the live hot queries (None: Redis was unreachable)."""

    rows: list[tuple[str, float]] | None
    index: SuggestIndex | None
    fetched_at: float


class SearchState:
    """Index, tokenizer, query statistics, suggest terms and direct hits of one loaded bundle."""

    def __init__(self, index: BM25Index, tokenizer: Tokenizer, stats: QueryStats, catalog: CatalogState,
                 analysis: dict[str, tuple[str, ...]] = LEGACY_ANALYSIS, words: dict[str, int] | None = None) -> None:
        if index.n_base != catalog.n_trained:
            raise ValueError(f"search index has {index.n_base} documents, the catalog {catalog.n_trained} items")
        self.index = index
        self.tokenizer = tokenizer
        self.analysis = dict(analysis)
        self.query_analysis = query_analysis(self.analysis)
        #: the catalog's Chinese words → items having them (pinyin and typo interpretation)
        self.words = words or {}
        self.stats = stats
        self.live_terms: set[str] = set()  # tokens of live documents (the base has `index.spans`)
        self.top_levels = sorted({c.split(CATEGORY_SEP, 1)[0] for c in catalog.categories})
        # The suggest index and the query reader hold the pinyin of every catalog word and searched
        # term: most of an app's load time, so they are built on the app's first search-box request
        # rather than when a home feed request loads the app (two racing builds are equal; one stays).
        self._suggest: SuggestIndex | None = None
        self._reader: QueryReader | None = None
        dictionary = _Dictionary({}, {}, {})
        for doc in range(catalog.n_trained):
            dictionary.learn(doc, catalog.item_id(doc), catalog.titles[doc], catalog.brands[doc],
                             catalog.categories[doc])
        self._dictionary = dictionary
        self._base = catalog  # the bundle's text, which the base index holds
        self._indexed: dict[int, tuple[str, ...]] = {}  # text of documents indexed live
        self._hot = LiveHot(None, None, -HOT_TTL_S)
        self._hot_index_at = -HOT_TTL_S
        #: normalized fields per document, with the text they were made from (a live change re-makes them)
        self._normalized: dict[int, tuple[tuple[str, ...], dict[str, str], str]] = {}
        self._lock = threading.Lock()

    @classmethod
    def load(cls, loaded: bundle.Bundle, catalog: ServingCatalog) -> "SearchState | None":
        """The search state of a bundle, following its catalog's live updates; None for a bundle
        trained before search existed (search routes then answer 503 until the next training)."""
        found = load_item_index(loaded)
        if found is None or not loaded.has(f"{QUERIES_NAME}.json"):
            return None
        index, analysis, words = found
        state = cls(index, catalog.tokenizer, QueryStats(loaded.json(QUERIES_NAME)), catalog.state, analysis, words)
        catalog.listeners.append(state.apply_updates)
        return state

    @property
    def suggest(self) -> SuggestIndex:
        """Suggestion terms of the training log and catalog (built on first use)."""
        if self._suggest is None:
            self._suggest = SuggestIndex(self.stats.terms, self.top_levels)
        return self._suggest

    @property
    def reader(self) -> QueryReader:
        """The pinyin / typo reader of queries against this catalog's words (built on first use)."""
        if self._reader is None:
            index = self.index
            self._reader = QueryReader(self.words, ascii_words(index.vocab, np.diff(index.indptr)), self.tokenizer,
                                       bigrams="bigrams" in self.query_analysis,
                                       terms=[(t[0], t[2]) for t in self.stats.terms if t[1] != "title"])
        return self._reader

    # --- direct hits ------------------------------------------------------------------------
    def direct_hit(self, query: str, allowed: np.ndarray, catalog: CatalogState) -> tuple[Direct, int] | None:
        """(target, number of allowed items behind it) if the query names a brand, category or item."""
        found = self._dictionary.direct.get(key_of(query))
        if found is None:
            return None
        if found.type == "brand":
            docs = np.fromiter(self._dictionary.brand_docs.get(key_of(found.name), ()), dtype=np.int64)
            count = int(allowed[docs[docs < len(allowed)]].sum())
        elif found.type == "item":
            doc = catalog.position(found.target)
            count = int(doc is not None and doc < len(allowed) and bool(allowed[doc]))
        else:
            members = catalog.category_mask(found.target)
            count = int((members & allowed).sum()) if members is not None else 0
        return (found, count) if count else None

    # --- documents ----------------------------------------------------------------------------
    def normalized_fields(self, catalog: CatalogState, doc: int) -> dict[str, str]:
        """Brand, title, category and tags of a document, normalized (NFKC, lower case), in the order
        match reasons name them; cached until the item's text changes."""
        return self._normalize(catalog, doc)[1]

    def text_key(self, catalog: CatalogState, doc: int) -> str:
        """The document's searchable text without whitespace (exact-match checks of typed queries)."""
        return self._normalize(catalog, doc)[2]

    def _normalize(self, catalog: CatalogState, doc: int) -> tuple[tuple[str, ...], dict[str, str], str]:
        texts = catalog.texts(doc)
        cached = self._normalized.get(doc)
        if cached is None or cached[0] != texts:
            by_name = dict(zip(TEXT_FIELDS, texts))
            fields = {f: normalize(by_name[f]) for f in FIELD_ORDER}
            cached = (texts, fields, "".join(_WHITESPACE.sub("", t) for t in fields.values()))
            self._normalized[doc] = cached
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

    def did_you_mean(self, query: str, settings: SearchSettings, n: int = 3) -> list[str]:
        """Up to n suggestion terms (queries, brands, categories) closest to the query in spelling or
        pinyin (rapidfuzz's ratio of their keys ≥ 60), best first, without blocked words."""
        key = key_of(query)
        if not key or not self.suggest.keys:
            return []
        found = process.extract(key, self.suggest.keys, scorer=fuzz.ratio, limit=5 * n, score_cutoff=60)
        order = sorted(found, key=lambda f: (-f[1], -self.suggest.key_weights[f[2]]))
        texts = dict.fromkeys(self.suggest.texts[int(self.suggest.term_of[f[2]])] for f in order)
        return [t for t in texts if key_of(t) != key and not settings.blocked(t)][:n]

    def query_tokens(self, query: str) -> list[str]:
        """The query's tokens under the index's analysis (every analysis some field uses)."""
        return self.tokenizer.tokens(query, self.query_analysis)

    # --- live changes -----------------------------------------------------------------------------
    def apply_updates(self, updates: dict[str, dict[str, Any]], catalog: CatalogState) -> None:
        """Index the text of items the catalog just changed (its listener; see the module docstring).

        Queries run concurrently and never take the lock, so nothing they read is changed in place:
        the dictionary is replaced as a whole, and new postings are added to the index after the
        catalog state that describes their documents was published."""
        with self._lock:
            dictionary = self._dictionary.draft()
            postings = []
            for item_id in updates:
                doc = catalog.position(str(item_id))
                if doc is None:
                    continue  # an incomplete new item the catalog ignored
                row = catalog.row(doc)
                if self._indexed_text(doc) == catalog.texts(doc):
                    continue  # stock, price or visibility only: the catalog state already says so
                postings.append((doc, self._tokens(row)))
                dictionary.learn(doc, row["item_id"], row["title"], row["brand"], row["category"])
            self._dictionary = dictionary
            for doc, tokens in postings:
                self._indexed[doc] = catalog.texts(doc)
                self.index.upsert(doc, tokens)

    def _indexed_text(self, doc: int) -> tuple[str, ...] | None:
        """The text a document is indexed under: the bundle's for a trained item not changed live,
        None for a new item not indexed yet."""
        if doc in self._indexed:
            return self._indexed[doc]
        if doc >= self._base.n_trained:
            return None
        return self._base.texts(doc)

    def _tokens(self, row: dict[str, Any]) -> dict[str, list[str]]:
        # a new brand or tag becomes one token for queries too
        self.tokenizer.add_words([str(row.get("brand", ""))] + str(row.get("tags", "")).split(LIST_SEP)
                                 + str(row.get("category", "")).split(CATEGORY_SEP))
        tokens = item_fields(row, self.tokenizer, self.analysis)
        self.live_terms.update(t for toks in tokens.values() for t in toks)
        return tokens

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

