"""The catalog's search index: item fields → tokens → a multi-field BM25 index in the bundle.

Fields: the title, the brand, every level name of the category path (`数码/手机` → `数码`, `手机`) and
the tags, each with its own analysis (words, bigrams, chars: `[search]` in the training config) and
weight. The bundle keeps the analysis (`search_analysis.json`), so serving tokenizes upserted items
and queries exactly as training tokenized the catalog; a bundle without it used words everywhere.
The same file lists the catalog's Chinese words with their document frequency: pinyin and typo
interpretation of queries (search/interpret.py) picks among them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING

import pandas as pd

from recsys.schema import CATEGORY_SEP, LIST_SEP
from recsys.bundle import Bundle, BundleWriter
from search.bm25 import ITEM_FIELD_WEIGHTS, BM25Index
from vocab.fields import FIELDS
from vocab.tokenizer import WORDS, Tokenizer, check_analysis

if TYPE_CHECKING:
    from recsys.config import SearchConfig

#: Bundle prefix of the item index arrays (`search_bm25.indptr.npy`, …).
INDEX_PREFIX = "search_bm25"
#: Bundle name of the query statistics and suggestion terms (`search_queries.json`).
QUERIES_NAME = "search_queries"
#: Bundle name of the per-field analysis and the word list (`search_analysis.json`).
ANALYSIS_NAME = "search_analysis"
#: What bundles without `search_analysis.json` used.
LEGACY_ANALYSIS: dict[str, tuple[str, ...]] = {name: WORDS for name in FIELDS}


def _text(value: object) -> str:
    """A catalog cell as text (missing values are empty)."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value)


def field_texts(item: Mapping[str, object]) -> dict[str, list[str]]:
    """The texts of each indexed field of one item: the category split into its levels, tags apart."""
    return {
        "title": [_text(item.get("title"))],
        "brand": [_text(item.get("brand"))],
        "category": [p for p in _text(item.get("category")).split(CATEGORY_SEP) if p.strip()],
        "tags": [t for t in _text(item.get("tags")).split(LIST_SEP) if t.strip()],
    }


def item_fields(item: Mapping[str, object], tokenizer: Tokenizer,
                analysis: Mapping[str, tuple[str, ...]] = LEGACY_ANALYSIS) -> dict[str, list[str]]:
    """Tokens per indexed field of one item (a catalog row or an upserted item's fields)."""
    return {name: [tok for text in texts for tok in tokenizer.tokens(text, analysis[name])]
            for name, texts in field_texts(item).items()}


def query_analysis(analysis: Mapping[str, tuple[str, ...]]) -> tuple[str, ...]:
    """A query gets every analysis some field uses, so it can match each field's tokens."""
    used = {a for field_analysis in analysis.values() for a in field_analysis}
    return check_analysis(used, "query analysis")


def build_item_index(catalog: pd.DataFrame, tokenizer: Tokenizer,
                     analysis: Mapping[str, tuple[str, ...]] = LEGACY_ANALYSIS,
                     weights: Mapping[str, float] = ITEM_FIELD_WEIGHTS, k1: float = 1.5,
                     b: float = 0.75) -> BM25Index:
    """A BM25 index over the catalog's rows (document id = row position). Raises ValueError for an
    empty catalog."""
    if catalog.empty:
        raise ValueError("cannot build a search index over an empty catalog")
    per_item = [item_fields(row, tokenizer, analysis) for row in catalog.to_dict("records")]
    columns = {name: [fields[name] for fields in per_item] for name in FIELDS}
    return BM25Index.build(columns, {name: float(weights.get(name, 1.0)) for name in FIELDS}, k1=k1, b=b)


def catalog_words(catalog: pd.DataFrame, tokenizer: Tokenizer) -> dict[str, int]:
    """Each Chinese word (jieba search mode) of the catalog's fields → the number of items having it."""
    counts: Counter[str] = Counter()
    for row in catalog.to_dict("records"):
        words = {tok for texts in field_texts(row).values() for text in texts for tok in tokenizer.tokens(text)}
        counts.update(w for w in words if not w.isascii())
    return dict(sorted(counts.items()))


def resolve_analysis(configured: Mapping[str, list[str]]) -> dict[str, tuple[str, ...]]:
    """The configured per-field analysis, with words for fields it leaves out."""
    return {name: check_analysis(configured.get(name, WORDS), f"search.analysis.{name}") for name in FIELDS}


def save_search_index(writer: BundleWriter, catalog: pd.DataFrame, queries: pd.DataFrame | None = None,
                      settings: "SearchConfig | None" = None) -> None:
    """Build the item index, its analysis and word list, and the query statistics (suggest, hot
    fallback, discovery) into a bundle.

    Called once by `offline_training.train` inside its bundle block; `queries` is the data folder's
    optional search log, `settings` the training config's `[search]` (its defaults when None).
    """
    from recsys.config import SearchConfig
    from recsys.item_features import catalog_tokenizer
    from search.query_log import build_query_stats

    settings = settings or SearchConfig()
    analysis = resolve_analysis(settings.analysis)
    tokenizer = catalog_tokenizer(catalog)
    index = build_item_index(catalog, tokenizer, analysis, settings.field_weights, settings.k1, settings.b)
    index.save(writer, INDEX_PREFIX)
    writer.save_json(ANALYSIS_NAME, {"analysis": {k: list(v) for k, v in analysis.items()},
                                     "words": catalog_words(catalog, tokenizer)})
    writer.save_json(QUERIES_NAME, build_query_stats(catalog, queries))


def load_item_index(loaded: Bundle) -> tuple[BM25Index, dict[str, tuple[str, ...]], dict[str, int]] | None:
    """The bundle's item index, its per-field analysis and its word list (document frequencies), or
    None for a bundle trained before search existed."""
    if not loaded.has(f"{INDEX_PREFIX}.meta.json"):
        return None
    index = BM25Index.load(loaded, INDEX_PREFIX)
    if not loaded.has(f"{ANALYSIS_NAME}.json"):
        return index, dict(LEGACY_ANALYSIS), {}
    saved = loaded.json(ANALYSIS_NAME)
    analysis = {name: check_analysis(saved["analysis"].get(name, WORDS), f"{ANALYSIS_NAME}.json {name}")
                for name in FIELDS}
    return index, analysis, {str(w): int(n) for w, n in saved.get("words", {}).items()}
