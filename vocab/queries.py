"""How search queries and a user's recent events are counted, the same in the feature store,
the training log's query statistics and offline evaluation."""

from __future__ import annotations

#: A counted query keeps at most this many characters.
MAX_QUERY_CHARS = 64
#: Recent events kept per user (the store's list, and what offline evaluation folds in).
RECENT_MAX = 50


def normalize_query(query: str) -> str:
    """The form a query is counted under: whitespace collapsed, lower case, at most 64 characters."""
    return " ".join(query.split()).lower()[:MAX_QUERY_CHARS]
