"""The hot-search list: live decayed search counts, filtered by the app's blocklist."""

from __future__ import annotations

from collections.abc import Sequence

from search.settings import SearchSettings


def hot_list(live: Sequence[tuple[str, float]] | None, popular: Sequence[tuple[str, float]],
             settings: SearchSettings, n: int) -> tuple[list[tuple[str, float]], str]:
    """(the n hottest allowed queries, source). `live` are Redis's decayed counts (None when Redis is
    unreachable); when it has nothing allowed, the training log's popular queries stand in, so a new
    deployment or a Redis outage still shows a list. Source is "live" or "training"."""
    for source, rows in (("live", live or ()), ("training", popular)):
        allowed = [(q, round(float(s), 4)) for q, s in rows if q.strip() and not settings.blocked(q)]
        if allowed:
            return allowed[:n], source
    return [], "training"

