"""Search result pages: BM25 over the allowed items, personal re-ranking, direct hits, fuzzy fallback.

The query is first read as the shopper meant it (search/interpret.py: pinyin, typos, homophones;
`interpret` in search.toml), and that reading is what is searched; after a correction, items that
contain the query exactly as typed are lifted above every corrected match. A query that falls back
also gets `did_you_mean` (suggestion terms closest to it in spelling or pinyin).

Score of a result (`strategy` says which applied):
- `bm25`: anonymous visitors and users we know nothing about get the BM25 score itself;
- `bm25+<path>`: BM25 blended with the user's affinity from the recommendation models (`score_user`,
  z units): score = bm25 + w · max(bm25) · z, i.e. the normalized blend bm25/max + w·z kept in BM25
  units, with w = `personal_weight` from search.toml. Only the BM25 pool (the best `POOL` matches) is
  re-ranked, so personalization reorders relevant items and never pulls in irrelevant ones.
- `fallback+<path>`: the query matches nothing, or too little of it is known to the index (a need such
  as "睡不着"): items of the categories the query is closest to (the training log's clicks for this or
  a containing query, else category names sharing its characters, else the user's own interests),
  ranked by the user's affinity (popularity for anonymous visitors), marked `fallback: true`.

Which items may appear at all is the live catalog's eligibility mask for the user (visible, in
stock unless `in_stock=false`, audience), the same mask every feed uses. The search scene's rules
(minirec.toml `[apps.<id>.scenes.search]`) then apply to the matches through the feeds' rules
function (`recsys/rules.py`): exclusions of seen and purchased items with the feeds' meaning, boosts
and fatigue in standard deviations of the matches' scores, pinned items that match first, category /
brand caps per page; by default none is set and purchased items stay findable (people search to buy
again).

Every page of one query comes from the same deterministic ranking (ties broken by item position),
so pagination is stable and pages are disjoint.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from recsys.catalog import CatalogState
from recsys.pipeline import Item, Scored, score_user, user_items
from recsys.rules import DEFAULTS, SceneRules, apply_rules, page_order
from recsys.schema import CATEGORY_SEP
from recsys.served import ServedModels
from recsys.user_state import UserState
from search.discovery import UserSignals
from search.interpret import Reading
from search.settings import SearchSettings
from search.state import Direct, SearchState
from search.suggest import key_of
from vocab.tokenizer import normalize

#: Matches ranked per query: pages come from this pool, so offset + n must stay within it.
POOL = 600
_CJK_RE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


@dataclass
class SearchPage:
    items: list[Item]
    strategy: str
    fallback: bool
    direct: tuple[Direct, int] | None
    note: str | None
    total: int
    reading: Reading | None = None
    did_you_mean: list[str] = field(default_factory=list)


@dataclass
class SearchParams:
    query: str
    n: int
    offset: int
    category: str | None = None
    price_min: float | None = None
    price_max: float | None = None
    in_stock: bool = True


def _units(token: str) -> set[str]:
    """What a token covers of the query: its Chinese characters one by one, another word as a whole
    (so "iphone" weighs as much as "机", not six times as much)."""
    cjk = {c for c in token if _CJK_RE.match(c)}
    return cjk if cjk else {token}


def coverage(state: SearchState, tokens: list[str]) -> float:
    """Share of the query (Chinese characters and whole other words) inside tokens the index knows."""
    units = {u for t in tokens for u in _units(t)}
    if not units:
        return 0.0
    known = {u for t in tokens if state.known_token(t) for u in _units(t)}
    return len(known) / len(units)


def _affinity(scored: Scored, docs: np.ndarray) -> np.ndarray:
    """The user's z-scored affinity for documents (catalog positions; 0 where unscored)."""
    out = np.zeros(len(docs))
    inside = docs < len(scored.scores)  # a document newer than the scores' snapshot
    out[inside] = scored.scores[docs[inside]]
    out[~np.isfinite(out)] = 0.0
    return out


def _match_reason(state: SearchState, catalog: CatalogState, doc: int, query_tokens: list[str]) -> str:
    """"matches 华为 in brand, 手机 in title": the query's words found in the item, longest form only
    (search mode also yields the parts of a word, e.g. 西门 and 门子 of 西门子). A substring test on
    the normalized field text, not a re-tokenization: it only explains, the index has already ranked."""
    texts = state.normalized_fields(catalog, doc)
    matched = {t: f for t in dict.fromkeys(query_tokens)
               if (f := next((f for f in texts if t in texts[f]), None)) is not None}
    shown = [f"{t} in {f}" for t, f in matched.items() if not any(t != o and t in o for o in matched)]
    return "matches " + ", ".join(shown[:3]) if shown else "matches your search"


def allowed_mask(catalog: CatalogState, user_state: UserState | None,
                 params: SearchParams) -> tuple[np.ndarray, str | None]:
    """Items the user may see under the request's filters; a note for an unknown category."""
    mask = catalog.eligible(user_state.merchant_profile if user_state else {}, in_stock=params.in_stock)
    if params.price_min is not None or params.price_max is not None:
        prices = catalog.all_prices()
        if params.price_min is not None:
            mask &= prices >= params.price_min
        if params.price_max is not None:
            mask &= prices <= params.price_max
    if params.category:
        in_category = catalog.category_mask(params.category)
        if in_category is None:
            return np.zeros(len(mask), dtype=bool), f"unknown category {params.category!r}"
        mask &= in_category
    return mask, None


def fallback_categories(state: SearchState, catalog: CatalogState, query: str,
                        signals: UserSignals) -> tuple[list[tuple[str, float]], bool]:
    """(category path or top level, weight) the query is closest to ([] when nothing relates), and
    whether they came from the user rather than the query (then they are not named to the app: the
    user's interests may be the platform's)."""
    near = state.stats.categories_near(query)
    if near:
        return near, False
    chars = set(query)
    by_name = []
    for path in sorted(set(catalog.categories) | set(catalog.new.column("category"))):
        leaf = path.rsplit(CATEGORY_SEP, 1)[-1]
        overlap = len(chars & set(leaf)) / max(len(set(leaf)), 1)
        if overlap >= 0.5:
            by_name.append((path, overlap))
    if by_name:
        total = sum(w for _, w in by_name)
        return [(p, w / total) for p, w in sorted(by_name, key=lambda x: -x[1])[:5]], False
    tops = signals.top_levels()[:3]
    return [(t, 1.0 / len(tops)) for t in tops], True


@dataclass
class _Ranked:
    """Documents with scores, before the scene's rules, and how to explain each."""

    docs: np.ndarray
    scores: np.ndarray
    reason: Callable[[int], str]  # document → why it is shown


def _scene_page(app: ServedModels, catalog: CatalogState, ranked: _Ranked, rules: SceneRules,
                user_id: str | None, user_state: UserState | None,
                params: SearchParams) -> tuple[list[Item], int]:
    """(the page's items, total results) after the scene's rules (`recsys/rules.py`), which apply
    to search as to the feeds: fatigue and boosts in standard deviations of these scores."""
    full = np.full(len(catalog), -np.inf)
    full[ranked.docs] = ranked.scores
    unit = 1.0
    if rules.fatigue_impressions or rules.boosted:
        finite = ranked.scores[np.isfinite(ranked.scores)]
        unit = float(finite.std()) if len(finite) > 1 else 1.0
    user = user_items(app, user_id, user_state, catalog, rules)
    scores = apply_rules(full, np.isfinite(full), rules, catalog, user, unit=unit)
    order, _ = page_order(scores, rules, catalog, params.offset + params.n, params.n, candidates=ranked.docs)
    items = []
    for pos in order[params.offset: params.offset + params.n]:
        items.append(Item(catalog.item_id(pos), round(float(scores[pos]), 6), ranked.reason(pos),
                          catalog.title(pos), catalog.category(pos), catalog.price(pos)))
    return items, int(np.isfinite(scores[ranked.docs]).sum())


def search_page(app: ServedModels, state: SearchState, user_id: str | None, user_state: UserState | None,
                signals: UserSignals, params: SearchParams, settings: SearchSettings,
                rules: SceneRules = DEFAULTS["search"], personalized: bool = True) -> SearchPage:
    """One page of results for a query (`state` is the app's search state); see the module
    docstring. `personalized=False` (an experiment's popularity variant) ranks as for an anonymous
    visitor; the scene's rules still see the user."""
    catalog = app.catalog.state  # one snapshot for the whole request
    mask, note = allowed_mask(catalog, user_state, params)
    direct = state.direct_hit(params.query, mask, catalog)
    if note is not None:
        return SearchPage([], "bm25", False, None, note, 0)
    reading = state.read(params.query) if settings.interpret else None
    searched = reading.text if reading is not None else params.query
    tokens = state.query_tokens(searched)
    words = state.tokenizer.tokens(searched)  # reasons name words, not bigrams
    # coverage counts words and bigrams, not single characters: every character of a vague need
    # ("睡不着") is somewhere in a big catalog, and such needs should fall back to categories
    covering = state.tokenizer.tokens(searched, tuple(a for a in state.query_analysis if a != "chars") or ("words",))
    scored = score_user(app, user_id, user_state) if user_id and personalized else None
    personal = scored is not None and scored.strategy != "popularity" and settings.personal_weight > 0
    docs, bm25 = state.index.search(tokens, k=POOL, candidate_mask=mask) if tokens else (np.zeros(0, np.int64),
                                                                                          np.zeros(0))
    if len(docs) and coverage(state, covering) >= settings.min_coverage:
        final, boost, best = bm25.astype(np.float64), np.zeros(len(docs)), float(bm25.max())
        if personal:
            boost = settings.personal_weight * best * _affinity(scored, docs)
            final = final + boost
        if reading is not None and reading.corrected:
            docs, final, boost = _typed_first(state, catalog, params.query, mask, docs, final, boost)

        boost_of = dict(zip(docs.tolist(), boost.tolist()))

        def reason(doc: int) -> str:
            text = _match_reason(state, catalog, doc, words)
            return text + "; picked for you" if boost_of[doc] > 0.05 * best else text

        items, total = _scene_page(app, catalog, _Ranked(docs, final, reason), rules, user_id, user_state, params)
        strategy = f"bm25+{scored.strategy}" if personal else "bm25"
        return SearchPage(items, strategy, False, direct, None, total, reading)
    page = _fallback(app, state, catalog, scored, signals, params, mask, direct, tokens, rules, user_id, user_state)
    page.reading, page.did_you_mean = reading, state.did_you_mean(params.query, settings)
    return page


def _typed_first(state: SearchState, catalog: CatalogState, query: str, mask: np.ndarray, docs: np.ndarray,
                 final: np.ndarray, boost: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A corrected query's matches with the items that contain the query as typed (every piece of
    it, spaces aside) added and lifted above all others: exact matches rank above corrected ones."""
    typed, typed_scores = state.index.search(state.query_tokens(query), k=POOL, candidate_mask=mask)
    pieces = [key_of(p) for p in normalize(query).split() if key_of(p)]
    exact = [k for k, doc in enumerate(typed.tolist())
             if pieces and all(p in state.text_key(catalog, doc) for p in pieces)]
    if not exact:
        return docs, final, boost
    exact_docs = typed[exact]
    rest = ~np.isin(docs, exact_docs)
    floor = float(final[rest][np.isfinite(final[rest])].max()) if rest.any() and np.isfinite(final[rest]).any() else 0.0
    lifted = typed_scores[exact].astype(np.float64)
    lifted = lifted - lifted.min() + max(floor, 0.0) + 1.0
    return (np.concatenate([exact_docs, docs[rest]]), np.concatenate([lifted, final[rest]]),
            np.concatenate([np.zeros(len(exact_docs)), boost[rest]]))


def _fallback(app: ServedModels, state: SearchState, catalog: CatalogState, scored: Scored | None,
              signals: UserSignals, params: SearchParams, mask: np.ndarray, direct: tuple[Direct, int] | None,
              tokens: list[str], rules: SceneRules, user_id: str | None, user_state: UserState | None) -> SearchPage:
    scored = scored or score_user(app, None, None)
    weights, from_user = fallback_categories(state, catalog, params.query, signals)
    allowed = np.zeros(len(mask), dtype=bool)
    share = np.zeros(len(mask))
    chosen = []
    for path, weight in weights:
        members = catalog.category_mask(path)
        if members is None:
            continue
        members &= mask
        if members.any():
            allowed |= members
            share[members] = np.maximum(share[members], weight)
            chosen.append(path)
    if not allowed.any():  # nothing relates: the user's (or everyone's) best items
        allowed = mask
    docs = np.flatnonzero(allowed)
    why = "for you" if scored.strategy != "popularity" else "popular"

    def reason(doc: int) -> str:
        return "no exact match; picked for you" if from_user else f"no exact match; {why} in {catalog.category(doc)}"

    ranked = _Ranked(docs, _affinity(scored, docs) + share[docs], reason)
    items, total = _scene_page(app, catalog, ranked, rules, user_id, user_state, params)
    if not tokens:
        note = "the query has no searchable words; showing related items"
    elif chosen and not from_user:
        note = f"few matches for {params.query!r}; showing items from {', '.join(chosen[:3])}"
    else:
        note = f"few matches for {params.query!r}; showing {why} items"
    return SearchPage(items, f"fallback+{scored.strategy}", True, direct, note, total)
