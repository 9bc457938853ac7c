"""Training-time statistics of the search log and the catalog for suggest, hot, shading and discovery.

Everything here is computed once per training from the data folder's optional `queries` table
(user_id, query, ts, clicked_item_id) and the catalog, and stored in the bundle as one JSON document:

- `popular`:   the most searched queries with their counts (hot-list fallback, suggestions);
- `categories`: query → categories of the items clicked from its results (fuzzy-need fallback,
  shading words), so "睡不着" leads to 助眠 / 床品 because that is what people clicked;
- `related`:   query → queries the same users also searched (search discovery);
- `terms`:     suggestion terms (popular queries, brands, category names, titles' leading words) with
  weight, top-level categories and their pinyin keys, computed here so serving only sorts them.

Queries are counted in `vocab.queries.normalize_query` form, the form live search events use.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from itertools import combinations
from typing import Any

import pandas as pd

from vocab.queries import normalize_query
from recsys.schema import CATEGORY_SEP
from search.suggest import pinyin_keys

FORMAT = 1
MAX_POPULAR = 2000
MAX_TITLE_TERMS = 20_000
CATEGORIES_PER_QUERY = 5
RELATED_PER_QUERY = 10
#: Queries per user taken into co-occurrence (the most recent): bounds the pairs to 435 per user.
QUERIES_PER_USER = 30


def _top_level(path: str) -> str:
    return str(path).split(CATEGORY_SEP, 1)[0].strip()


def _leading_words(title: str) -> str:
    """The first two words of a title ("西门子 十字四门冰箱 520L" → "西门子 十字四门冰箱")."""
    return " ".join(str(title).split()[:2])


def _query_stats(catalog: pd.DataFrame, queries: pd.DataFrame) -> tuple[Counter, dict, dict]:
    log = pd.DataFrame({"user_id": queries["user_id"].astype(str),
                        "query": queries["query"].astype(str).map(normalize_query),
                        "ts": queries["ts"],
                        "clicked": queries["clicked_item_id"].astype(str) if "clicked_item_id" in queries
                        else ""})
    log = log[log["query"].str.strip() != ""]
    counts = Counter(log["query"].tolist())
    category_of = dict(zip(catalog["item_id"].astype(str), catalog["category"].astype(str)))
    clicks = log[log["clicked"].isin(category_of.keys())]
    by_query: dict[str, Counter] = defaultdict(Counter)
    for query, item in zip(clicks["query"], clicks["clicked"]):
        by_query[query][category_of[item]] += 1
    categories = {q: [[c, n] for c, n in cats.most_common(CATEGORIES_PER_QUERY)] for q, cats in by_query.items()}
    # co-occurrence: distinct queries of one user (anonymous searches carry no user)
    pairs: Counter = Counter()
    named = log[log["user_id"] != ""].sort_values("ts", kind="stable")
    for _, group in named.groupby("user_id", sort=False):
        recent = list(dict.fromkeys(reversed(group["query"].tolist())))[:QUERIES_PER_USER]
        for a, b in combinations(sorted(recent), 2):
            pairs[(a, b)] += 1
    related: dict[str, Counter] = defaultdict(Counter)
    for (a, b), n in pairs.items():
        related[a][b] += n
        related[b][a] += n
    # rank partners by count, then by their own popularity (lift would favour one-off pairs)
    related_top = {q: [[p, n] for p, n in sorted(partners.items(), key=lambda x: (-x[1], -counts[x[0]], x[0]))
                       [:RELATED_PER_QUERY]] for q, partners in related.items()}
    return counts, categories, related_top


def build_query_stats(catalog: pd.DataFrame, queries: pd.DataFrame | None) -> dict[str, Any]:
    """The JSON document described in the module docstring (works without a search log)."""
    if queries is not None and len(queries):
        counts, categories, related = _query_stats(catalog, queries)
    else:
        counts, categories, related = Counter(), {}, {}
    popular = counts.most_common(MAX_POPULAR)
    # suggestion terms: text → [kind, weight, top-level categories]
    terms: dict[str, list[Any]] = {}

    def add(text: str, kind: str, weight: float, cats: list[str]) -> None:
        text = " ".join(str(text).split())
        if not text:
            return
        entry = terms.setdefault(text, [kind, 0.0, []])
        entry[1] += weight
        entry[2] = list(dict.fromkeys(entry[2] + [c for c in cats if c]))[:3]

    for query, n in popular:
        add(query, "query", float(n), [_top_level(c) for c, _ in categories.get(query, [])])
    cats = catalog["category"].astype(str)
    for brand, group in catalog.groupby(catalog["brand"].astype(str), sort=True):
        add(brand, "brand", 0.5 * len(group), group["category"].astype(str).map(_top_level).value_counts().index.tolist())
    levels: Counter = Counter()
    for path, n in cats.value_counts().items():
        parts = [p for p in str(path).split(CATEGORY_SEP) if p.strip()]
        for part in parts:
            levels[(part, parts[0])] += n
    for (name, top), n in sorted(levels.items()):
        add(name, "category", 0.5 * n, [top])
    leads = pd.DataFrame({"lead": catalog["title"].astype(str).map(_leading_words), "top": cats.map(_top_level)})
    lead_counts = leads.groupby("lead")["top"].agg(["size", "first"]).sort_values("size", ascending=False)
    for lead, row in lead_counts.head(MAX_TITLE_TERMS).iterrows():
        if lead not in terms:  # a lead that is already a brand or query keeps that kind
            add(lead, "title", 0.1 * float(row["size"]), [row["first"]])
    term_rows = [[text, kind, round(weight, 4), cats, pinyin_keys(text)]
                 for text, (kind, weight, cats) in sorted(terms.items())]
    return {"format": FORMAT, "popular": [[q, n] for q, n in popular], "categories": categories,
            "related": related, "terms": term_rows}


class QueryStats:
    """The bundle's query statistics, indexed for serving (see `build_query_stats`)."""

    def __init__(self, doc: dict[str, Any]) -> None:
        if doc.get("format") != FORMAT:
            raise ValueError(f"search query statistics have format {doc.get('format')!r}, expected {FORMAT}")
        self.popular: list[tuple[str, float]] = [(str(q), float(n)) for q, n in doc["popular"]]
        self.categories: dict[str, list[tuple[str, float]]] = {
            q: [(str(c), float(n)) for c, n in cats] for q, cats in doc["categories"].items()}
        self.related: dict[str, list[tuple[str, float]]] = {
            q: [(str(p), float(n)) for p, n in partners] for q, partners in doc["related"].items()}
        self.terms: list[tuple[str, str, float, list[str], list[str]]] = [
            (str(t), str(k), float(w), list(c), list(keys)) for t, k, w, c, keys in doc["terms"]]
        # category path and top-level name → queries whose clicks went there, most clicks first
        by_category: dict[str, Counter] = defaultdict(Counter)
        for query, cats in self.categories.items():
            for path, n in cats:
                by_category[path][query] += n
                by_category[_top_level(path)][query] += n
        self.by_category = {c: [q for q, _ in counts.most_common(20)] for c, counts in by_category.items()}

    def categories_near(self, query: str) -> list[tuple[str, float]]:
        """Categories people clicked for this query, or for logged queries containing it or contained
        in it ("睡不着觉" → "睡不着"); shares summing to 1, best first."""
        query = normalize_query(query)
        found: Counter = Counter(dict(self.categories.get(query, [])))
        if not found and len(query) >= 2:
            for logged, cats in self.categories.items():
                if len(logged) >= 2 and (logged in query or query in logged):
                    for path, n in cats:
                        found[path] += n
        total = sum(found.values())
        return [(c, n / total) for c, n in found.most_common(CATEGORIES_PER_QUERY)] if total else []
