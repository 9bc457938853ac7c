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

The search scene's rules (minirec.toml `[apps.<id>.scenes.search]`) then apply to the matches only:
boosts and fatigue move items within them, pinned items that match come first, category / brand caps
diversify each page; by default none is set and purchased items stay findable (people search to
buy again).

Every page of one query comes from the same deterministic ranking (ties broken by item position),
so pagination is stable and pages are disjoint.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from recsys.user_state import UserState
from recsys.schema import CATEGORY_SEP
from search.discovery import UserSignals
from search.interpret import Reading
from search.settings import SearchSettings
from search.suggest import key_of
from vocab.tokenizer import normalize
from recsys.pipeline import Item, Scored, diverse_order, score_user
from serving.registry import LoadedApp
from serving.scenes import DEFAULTS, SceneRules
from serving.search_state import Direct, SearchState

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


def _affinity(app: LoadedApp, state: SearchState, scored: Scored, docs: np.ndarray) -> np.ndarray:
    """The user's z-scored affinity for documents (new items through the hybrid, 0 if unscored)."""
    out = np.zeros(len(docs))
    base = docs < state.n_base
    out[base] = scored.catalog[docs[base]]
    if (~base).any():
        position = {item_id: j for j, item_id in enumerate(scored.new_items.ids)}
        for k in np.flatnonzero(~base):
            j = position.get(state.item_id(int(docs[k])))
            if j is not None and j < len(scored.new) and np.isfinite(scored.new[j]):
                out[k] = scored.new[j]
    out[~np.isfinite(out)] = 0.0
    return out


def _order(docs: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Best score first, ties by document id (deterministic across pages)."""
    return np.lexsort((docs, -scores))


def _match_reason(state: SearchState, doc: int, query_tokens: list[str]) -> str:
    """"matches 华为 in brand, 手机 in title": the query's words found in the item, longest form only
    (search mode also yields the parts of a word, e.g. 西门 and 门子 of 西门子). A substring test on
    the normalized field text, not a re-tokenization: it only explains, the index has already ranked."""
    texts = state.normalized_fields(doc)
    matched = {t: f for t in dict.fromkeys(query_tokens)
               if (f := next((f for f in texts if t in texts[f]), None)) is not None}
    shown = [f"{t} in {f}" for t, f in matched.items() if not any(t != o and t in o for o in matched)]
    return "matches " + ", ".join(shown[:3]) if shown else "matches your search"


def _item(state: SearchState, doc: int, score: float, reason: str, prices: np.ndarray) -> Item:
    row = state.row(doc)
    return Item(state.item_id(doc), round(float(score), 6), reason, str(row["title"]), str(row["category"]),
                float(prices[doc]))


def allowed_mask(state: SearchState, user_state: UserState | None, params: SearchParams) -> tuple[np.ndarray, str | None]:
    """Items the user may see under the request's filters; a note for an unknown category."""
    mask = state.base_mask(user_state.merchant_profile if user_state else {}, params.in_stock)
    n = len(mask)
    if params.price_min is not None or params.price_max is not None:
        prices = state.prices()[:n]
        if params.price_min is not None:
            mask &= prices >= params.price_min
        if params.price_max is not None:
            mask &= prices <= params.price_max
    if params.category:
        in_category, known = state.category_mask(params.category, n)
        if not known:
            return np.zeros(n, dtype=bool), f"unknown category {params.category!r}"
        mask &= in_category
    return mask, None


def fallback_categories(state: SearchState, query: str, signals: UserSignals) -> tuple[list[tuple[str, float]], bool]:
    """(category path or top level, weight) the query is closest to ([] when nothing relates), and
    whether they came from the user rather than the query (then they are not named to the app: the
    user's interests may be the platform's)."""
    near = state.stats.categories_near(query)
    if near:
        return near, False
    chars = set(query)
    by_name = []
    for path in sorted(set(state.catalog.categories)):
        leaf = path.rsplit(CATEGORY_SEP, 1)[-1]
        overlap = len(chars & set(leaf)) / max(len(set(leaf)), 1)
        if overlap >= 0.5:
            by_name.append((path, overlap))
    if by_name:
        total = sum(w for _, w in by_name)
        return [(p, w / total) for p, w in sorted(by_name, key=lambda x: -x[1])[:5]], False
    tops = signals.top_levels()[:3]
    return [(t, 1.0 / len(tops)) for t in tops], True


def _scene_scores(app: LoadedApp, state: SearchState, docs: np.ndarray, final: np.ndarray, rules: SceneRules,
                  user_id: str | None, user_state: UserState | None) -> np.ndarray:
    """The search scene's rules on the matches' scores: purchased items dropped (if configured),
    fatigue and boosts in standard deviations of the matches' scores; never adds an item."""
    if not (rules.exclude_purchased or rules.boosted or (rules.fatigue_impressions and user_state is not None)):
        return final  # the default search scene: nothing to apply (and the ids cost ~0.4 ms a query)
    final = final.copy()
    unit = float(final.std()) if len(final) > 1 else 1.0
    ids = [state.item_id(int(d)) for d in docs]
    if rules.exclude_purchased:
        purchased = set(user_state.purchased) if user_state is not None else set()
        user = app.models.users.get(user_id) if user_id else None
        if user is not None:
            purchased |= {app.catalog.ids[i] for i in app.models.history(user)[0].tolist()}
        final[[k for k, item_id in enumerate(ids) if item_id in purchased]] = -np.inf
    if rules.fatigue_impressions and user_state is not None:
        for k, item_id in enumerate(ids):
            if user_state.shown.get(item_id, 0) >= rules.fatigue_impressions:
                final[k] -= rules.fatigue_penalty * unit
    for k, item_id in enumerate(ids):
        if item_id in rules.boosted:
            final[k] += rules.boosted[item_id] * unit
    return final


def _scene_order(state: SearchState, docs: np.ndarray, final: np.ndarray, rules: SceneRules,
                 params: SearchParams) -> np.ndarray:
    """Positions into `docs`, best first: pinned matches first (in config order), then by score,
    diversified per page of `n` when the scene caps categories or brands."""
    order = _order(docs, final)
    order = order[np.isfinite(final[order])]
    if rules.pinned:
        position = {state.item_id(int(docs[k])): k for k in order}
        first = [position[item_id] for item_id in rules.pinned if item_id in position]
        taken = set(first)
        order = np.array(first + [k for k in order.tolist() if k not in taken], dtype=np.int64)
    if rules.max_per_category or rules.max_per_brand:
        def keys(k: int) -> tuple[str, str]:
            row = state.row(int(docs[k]))
            return str(row["category"]), str(row["brand"])
        picked = diverse_order(order.tolist(), keys, params.offset + params.n, params.n, rules)
        order = order[picked]
    return order


def search_page(app: LoadedApp, state: SearchState, user_id: str | None, user_state: UserState | None,
                signals: UserSignals, params: SearchParams, settings: SearchSettings,
                rules: SceneRules = DEFAULTS["search"], personalized: bool = True) -> SearchPage:
    """One page of results for a query (`state` is `app.search`); see the module docstring.
    `personalized=False` (an experiment's popularity variant) ranks as for an anonymous visitor."""
    mask, note = allowed_mask(state, user_state, params)
    direct = state.direct_hit(params.query, mask)
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
    prices = state.prices()
    docs, bm25 = state.index.search(tokens, k=POOL, candidate_mask=mask) if tokens else (np.zeros(0, np.int64),
                                                                                          np.zeros(0))
    if len(docs) and coverage(state, covering) >= settings.min_coverage:
        final, boost, best = bm25.astype(np.float64), np.zeros(len(docs)), float(bm25.max())
        if personal:
            boost = settings.personal_weight * best * _affinity(app, state, scored, docs)
            final = final + boost
        final = _scene_scores(app, state, docs, final, rules, user_id, user_state)
        if reading is not None and reading.corrected:
            docs, final, boost = _typed_first(state, params.query, mask, docs, final, boost)
        order = _scene_order(state, docs, final, rules, params)
        page = order[params.offset: params.offset + params.n]
        items = []
        for k in page:
            reason = _match_reason(state, int(docs[k]), words)
            if boost[k] > 0.05 * best:
                reason += "; picked for you"
            items.append(_item(state, int(docs[k]), final[k], reason, prices))
        strategy = f"bm25+{scored.strategy}" if personal else "bm25"
        return SearchPage(items, strategy, False, direct, None, len(order), reading)
    page = _fallback(app, state, scored, signals, params, mask, prices, direct, tokens)
    page.reading, page.did_you_mean = reading, state.did_you_mean(params.query)
    return page


def _typed_first(state: SearchState, query: str, mask: np.ndarray, docs: np.ndarray, final: np.ndarray,
                 boost: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A corrected query's matches with the items that contain the query as typed (every piece of
    it, spaces aside) added and lifted above all others: exact matches rank above corrected ones."""
    typed, typed_scores = state.index.search(state.query_tokens(query), k=POOL, candidate_mask=mask)
    pieces = [key_of(p) for p in normalize(query).split() if key_of(p)]
    exact = [k for k, doc in enumerate(typed.tolist()) if pieces and all(p in state.text_key(doc) for p in pieces)]
    if not exact:
        return docs, final, boost
    exact_docs = typed[exact]
    rest = ~np.isin(docs, exact_docs)
    floor = float(final[rest][np.isfinite(final[rest])].max()) if rest.any() and np.isfinite(final[rest]).any() else 0.0
    lifted = typed_scores[exact].astype(np.float64)
    lifted = lifted - lifted.min() + max(floor, 0.0) + 1.0
    return (np.concatenate([exact_docs, docs[rest]]), np.concatenate([lifted, final[rest]]),
            np.concatenate([np.zeros(len(exact_docs)), boost[rest]]))


def _fallback(app: LoadedApp, state: SearchState, scored: Scored | None, signals: UserSignals,
              params: SearchParams, mask: np.ndarray, prices: np.ndarray, direct: tuple[Direct, int] | None,
              tokens: list[str]) -> SearchPage:
    scored = scored or score_user(app, None, None)
    weights, from_user = fallback_categories(state, params.query, signals)
    n = len(mask)
    allowed = np.zeros(n, dtype=bool)
    share = np.zeros(n)
    chosen = []
    for path, weight in weights:
        members, known = state.category_mask(path, n)
        members &= mask
        if members.any():
            allowed |= members
            share[members] = np.maximum(share[members], weight)
            chosen.append(path)
    if not allowed.any():  # nothing relates: the user's (or everyone's) best items
        allowed = mask
    docs = np.flatnonzero(allowed)
    scores = _affinity(app, state, scored, docs) + share[docs]
    order = _order(docs, scores)
    page = order[params.offset: params.offset + params.n]
    why = "for you" if scored.strategy != "popularity" else "popular"
    items = []
    for k in page:
        doc = int(docs[k])
        category = str(state.row(doc)["category"])
        reason = "no exact match; picked for you" if from_user else f"no exact match; {why} in {category}"
        items.append(_item(state, doc, scores[k], reason, prices))
    if not tokens:
        note = "the query has no searchable words; showing related items"
    elif chosen and not from_user:
        note = f"few matches for {params.query!r}; showing items from {', '.join(chosen[:3])}"
    else:
        note = f"few matches for {params.query!r}; showing {why} items"
    return SearchPage(items, f"fallback+{scored.strategy}", True, direct, note, len(docs))
