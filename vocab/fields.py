"""The item fields that text search indexes. `[search]` of a training config names them
(`search.analysis`, `search.field_weights`, checked in recsys/config.py) and search/item_index.py
builds one BM25 column per field, so both read the names from here."""

from __future__ import annotations

#: Searchable item fields, in index order.
FIELDS: tuple[str, ...] = ("title", "brand", "category", "tags")
