"""The catalog's search index: item fields → tokens → a multi-field BM25 index in the bundle.

Fields: the title, the brand, every level name of the category path (`数码/手机` → `数码`, `手机`) and
the tags, weighted by `ITEM_FIELD_WEIGHTS`. The same `item_fields` serves the whole catalog at
training time and one upserted item at serving time, so live documents are tokenized exactly like
the base ones.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from recsys.schema import CATEGORY_SEP, LIST_SEP
from recsys.bundle import Bundle, BundleWriter
from search.bm25 import ITEM_FIELD_WEIGHTS, BM25Index
from search.tokenizer import Tokenizer

#: Bundle prefix of the item index arrays (`search_bm25.indptr.npy`, …).
INDEX_PREFIX = "search_bm25"
#: Bundle name of the query statistics and suggestion terms (`search_queries.json`).
QUERIES_NAME = "search_queries"
FIELDS: tuple[str, ...] = ("title", "brand", "category", "tags")


def _text(value: object) -> str:
    """A catalog cell as text (missing values are empty)."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value)


def item_fields(item: Mapping[str, object], tokenizer: Tokenizer) -> dict[str, list[str]]:
    """Tokens per indexed field of one item (a catalog row or an upserted item's fields)."""
    levels = [p for p in _text(item.get("category")).split(CATEGORY_SEP) if p.strip()]
    tags = [t for t in _text(item.get("tags")).split(LIST_SEP) if t.strip()]
    return {
        "title": tokenizer.tokens(_text(item.get("title"))),
        "brand": tokenizer.tokens(_text(item.get("brand"))),
        "category": [tok for level in levels for tok in tokenizer.tokens(level)],
        "tags": [tok for tag in tags for tok in tokenizer.tokens(tag)],
    }


def build_item_index(catalog: pd.DataFrame, tokenizer: Tokenizer) -> BM25Index:
    """A BM25 index over the catalog's rows (document id = row position), fields weighted by
    `ITEM_FIELD_WEIGHTS`. Raises ValueError for an empty catalog."""
    if catalog.empty:
        raise ValueError("cannot build a search index over an empty catalog")
    per_item = [item_fields(row, tokenizer) for row in catalog.to_dict("records")]
    columns = {name: [fields[name] for fields in per_item] for name in FIELDS}
    return BM25Index.build(columns, {name: ITEM_FIELD_WEIGHTS[name] for name in FIELDS})


def save_search_index(writer: BundleWriter, catalog: pd.DataFrame, queries: pd.DataFrame | None = None) -> None:
    """Build the item index and the query statistics (suggest, hot fallback, discovery) into a bundle.

    Called once by `offline_training.train` inside its bundle block; `queries` is the data folder's
    optional search log.
    """
    from recsys.item_features import catalog_tokenizer
    from search.query_log import build_query_stats

    tokenizer = catalog_tokenizer(catalog)
    build_item_index(catalog, tokenizer).save(writer, INDEX_PREFIX)
    writer.save_json(QUERIES_NAME, build_query_stats(catalog, queries))


def load_item_index(loaded: Bundle) -> BM25Index | None:
    """The bundle's item index, or None for a bundle trained before search existed."""
    if not loaded.has(f"{INDEX_PREFIX}.meta.json"):
        return None
    return BM25Index.load(loaded, INDEX_PREFIX)
