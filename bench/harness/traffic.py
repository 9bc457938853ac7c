"""What the bench mall's visitors send: pre-encoded requests for the load phases (home, related,
suggest, search, events) and the forms a shopper types a query in (pinyin, initials)."""

from __future__ import annotations

import json
import urllib.parse
from typing import TYPE_CHECKING

import numpy as np

from bench.harness.client import encode_get, encode_post_json
from bench.harness.mall import APP, BENCH_KEY
from vocab.pinyin import pinyin_forms

if TYPE_CHECKING:
    from bench.harness.mall import Prepared

#: Shares of home requests per user kind: trained users, first visits with a platform profile, unknown ids.
DEFAULT_MIX = {"known": 0.5, "cold": 0.3, "unknown": 0.2}
PAGE = 20  # items per home and search request

RequestList = list[tuple[str, bytes]]


def typed_prefix(query: str, form: str, rng: np.random.Generator) -> str:
    """What someone typing `query` has typed so far, as `text` (its own characters), `pinyin`
    (full pinyin, no tones) or `initials` (pinyin initials); at least one character."""
    typed = query if form not in ("pinyin", "initials") else pinyin_forms(query)[form == "initials"]
    cut = int(rng.integers(1, max(2, min(len(typed), 6) + 1)))
    return typed[:cut]


def home_requests(prep: Prepared, port: int, mix: dict[str, float], n: int = 5000,
                  seed: int = 0) -> RequestList:
    """`n` home requests, kinds drawn by `mix`, users uniformly within a kind."""
    rng = np.random.default_rng(seed)
    pools = {"known": prep.known, "cold": prep.cold, "unknown": prep.unknown}
    kinds = [k for k in mix if mix[k] > 0 and pools[k]]
    p = np.array([mix[k] for k in kinds], dtype=float)
    drawn = rng.choice(len(kinds), size=n, p=p / p.sum())
    out = []
    for k in drawn:
        pool = pools[kinds[k]]
        user = pool[int(rng.integers(len(pool)))]
        out.append((kinds[k], encode_get(f"/v1/apps/{APP}/recommend/home?user_id={user}&n={PAGE}", port, BENCH_KEY)))
    return out


def related_requests(prep: Prepared, port: int, n: int = 5000, seed: int = 4) -> RequestList:
    """`n` related-shelf requests of random items by known users."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        item = prep.items[int(rng.integers(len(prep.items)))]
        user = prep.known[int(rng.integers(len(prep.known)))]
        out.append(("related", encode_get(f"/v1/apps/{APP}/recommend/related/{item}?user_id={user}&n=10", port,
                                          BENCH_KEY)))
    return out


def suggest_requests(prep: Prepared, port: int, n: int = 5000, seed: int = 1) -> RequestList:
    """`n` suggest requests (kind = prefix form), queries drawn by how often they were searched."""
    rng = np.random.default_rng(seed)
    texts = list(prep.queries)
    weights = np.array(list(prep.queries.values()), dtype=float)
    forms = ("text", "pinyin", "initials")
    out = []
    for q, f in zip(rng.choice(len(texts), size=n, p=weights / weights.sum()), rng.choice(3, size=n, p=[.4, .3, .3])):
        prefix = typed_prefix(texts[q], forms[f], rng)
        user = f"&user_id={prep.known[int(rng.integers(len(prep.known)))]}" if rng.random() < 0.5 else ""
        path = f"/v1/apps/{APP}/search/suggest?prefix={urllib.parse.quote(prefix)}{user}"
        out.append((forms[f], encode_get(path, port, BENCH_KEY)))
    return out


def search_requests(prep: Prepared, port: int, n: int = 5000, seed: int = 3) -> RequestList:
    """`n` search requests (kind = how the query is typed): logged queries drawn by how often they
    were searched, half as typed, the rest in pinyin, initials, with a homophone or a typo
    (bench/query_variants.py); half of them with a known user's id."""
    from bench.query_variants import variant

    rng = np.random.default_rng(seed)
    texts = list(prep.queries)
    weights = np.array(list(prep.queries.values()), dtype=float)
    forms = ("typed", "pinyin", "initials", "homophone", "typo")
    out = []
    for q, f in zip(rng.choice(len(texts), size=n, p=weights / weights.sum()),
                    rng.choice(len(forms), size=n, p=[.5, .2, .1, .1, .1])):
        query = texts[q] if forms[f] == "typed" else variant(forms[f], texts[q], rng)
        form = forms[f] if query is not None else "typed"
        user = f"&user_id={prep.known[int(rng.integers(len(prep.known)))]}" if rng.random() < 0.5 else ""
        path = f"/v1/apps/{APP}/search?q={urllib.parse.quote(query or texts[q])}&n={PAGE}{user}"
        out.append((form, encode_get(path, port, BENCH_KEY)))
    return out


def event_requests(prep: Prepared, port: int, n: int, seed: int = 2) -> RequestList:
    """`n` `POST events` requests of one event each (click 1 in 5, else impression) by known users,
    each with its own event_id so none is a duplicate."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        kind = "click" if rng.random() < 0.2 else "impression"
        body = json.dumps({"events": [{
            "event_id": f"bench-{seed}-{i}", "type": kind, "user_id": prep.known[int(rng.integers(len(prep.known)))],
            "item_id": prep.items[int(rng.integers(len(prep.items)))]}]}).encode()
        out.append((kind, encode_post_json(f"/v1/apps/{APP}/events", port, BENCH_KEY, body)))
    return out
