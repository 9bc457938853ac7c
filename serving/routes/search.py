"""Search: result pages, suggestions, hot searches, shading words and discovery chips."""

from __future__ import annotations

import dataclasses
from typing import Annotated

import orjson
from fastapi import APIRouter, Query
from fastapi.responses import Response

from recsys.user_state import UserState
from search.discovery import UserSignals, discover, shading, user_signals
from search.hot import hot_list
from search.rank import POOL, SearchParams, search_page
from search.state import HOT_FETCH, HOT_TTL_S, LiveHot, SearchState
from search.suggest import suggest as suggest_terms
from serving.context import ServingContext
from serving.deps import App
from serving.errors import ApiError
from serving.registry import LoadedApp
from serving.request import UserId, user_state
from serving.scene_call import OVERLOADED_NOTE, scene_call
from serving.search_schemas import (ChipOut, DiscoverOut, HotOut, HotQueryOut, SearchOut, ShadingOut,
                                    SuggestionOut, SuggestOut)
from vocab.experiments import request_id

router = APIRouter(prefix="/v1/apps/{app_id}/search", tags=["search"])

MAX_QUERY_CHARS = 100
MAX_N = 100
MAX_OFFSET = POOL - MAX_N


def _search_state(loaded: LoadedApp) -> SearchState:
    if loaded.search is None:
        raise ApiError(503, "unavailable", f"model {loaded.version} has no search index; retrain the app "
                                           "(`minirec train`) to build one")
    return loaded.search


async def _search_box_state(ctx: ServingContext, app_id: str, user_id: str | None) -> tuple[UserState | None, bool]:
    """The user's signals for the search box (lighter than the full state), or (None, degraded)."""
    if not user_id:
        return None, False
    return await ctx.read(lambda: ctx.stores[app_id].search_box_state(user_id))


async def _live_hot(ctx: ServingContext, app_id: str, search: SearchState, max_age_s: float = HOT_TTL_S) -> LiveHot:
    """The live hot queries: the state's cached read if fresh enough, else a new read from Redis."""
    cached = search.cached_hot(max_age_s)
    if cached is not None:
        return cached
    rows, degraded = await ctx.read(lambda: ctx.stores[app_id].hot_queries(HOT_FETCH))
    return search.store_hot(None if degraded else rows or [])


async def _hot_names(ctx: ServingContext, app_id: str, loaded: LoadedApp, n: int = 20) -> tuple[list[str], bool]:
    search = _search_state(loaded)
    live = await _live_hot(ctx, app_id, search)
    rows, _ = hot_list(live.rows, search.stats.popular, loaded.search_settings.get(), n)
    return [q for q, _ in rows], live.rows is None


@router.get("", response_model=SearchOut, summary="Search the catalog")
async def search(app: App,
                 q: Annotated[str, Query(max_length=MAX_QUERY_CHARS, description="The query (1..100 characters)")],
                 user_id: UserId = None,
                 n: Annotated[int, Query(ge=1, le=MAX_N, description=f"Items per page (1..{MAX_N})")] = 20,
                 offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Items to skip (stable pagination)")] = 0,
                 category: Annotated[str | None, Query(max_length=200, description="Only this category path")] = None,
                 price_min: Annotated[float | None, Query(ge=0, description="Lowest price")] = None,
                 price_max: Annotated[float | None, Query(ge=0, description="Highest price")] = None,
                 in_stock: Annotated[bool, Query(description="false also lists visible items that are sold out")] = True,
                 ) -> Response:
    """BM25 over title, brand, category and tags (words and Chinese character bigrams), personalized
    for known users. Pinyin is read as the catalog's words (`shouji`, `hw手机` → `interpreted_as`),
    ASCII typos and Chinese homophones are corrected (`corrected_from`; items matching the query as
    typed come first); a query that names a brand, category or item exactly also returns `direct`; a
    vague need falls back to the categories closest to it (`fallback: true`, with `did_you_mean`)
    rather than an empty page."""
    ctx, app_id, loaded = app.ctx, app.app_id, app.loaded
    if not q.strip():
        raise ApiError(422, "invalid_request", "q is empty: for an empty search box call "
                                               f"GET /v1/apps/{app_id}/search/shading for the default query")
    if price_min is not None and price_max is not None and price_min > price_max:
        raise ApiError(422, "invalid_request", f"price_min {price_min} is above price_max {price_max}")
    search_state = _search_state(loaded)
    params = SearchParams(q, n, offset, category, price_min, price_max, in_stock)
    call = scene_call(app, "search", user_id)
    state, degraded = await user_state(ctx, app_id, user_id, call)
    settings = loaded.search_settings.get()
    if call.variant is not None and call.variant.personal_weight is not None:
        settings = dataclasses.replace(settings, personal_weight=call.variant.personal_weight)
    signals = user_signals(loaded, state, user_id) if call.personalized else UserSignals()
    page = search_page(loaded, search_state, user_id, state, signals, params, settings,
                       call.rules(app), personalized=call.personalized)
    direct = None
    if page.direct is not None:
        target, count = page.direct
        direct = {"type": target.type, "name": target.name, "target": target.target, "count": count}
    reading = page.reading
    # SearchOut built directly with orjson, as the feeds do: re-validating our own output through
    # the response model cost about a millisecond a request; the route declares the model for the docs
    return Response(orjson.dumps({
        "request_id": call.request_id("empty" if not page.items else "fallback" if page.fallback else None),
        "model_version": loaded.version, "strategy": page.strategy, **call.fields(),
        "degraded": degraded, "note": OVERLOADED_NOTE if call.overloaded else page.note, "items": [vars(i) for i in page.items], "direct": direct,
        "fallback": page.fallback, "total": page.total, "interpreted_as": reading.text if reading else None,
        "corrected_from": q if reading and reading.corrected else None, "did_you_mean": page.did_you_mean,
    }), media_type="application/json")


@router.get("/suggest", response_model=SuggestOut, summary="As-you-type suggestions")
async def suggest(app: App,
                  prefix: Annotated[str, Query(max_length=50, description="What the user typed: Chinese, pinyin, "
                                                                           "pinyin initials or ASCII")],
                  user_id: UserId = None,
                  n: Annotated[int, Query(ge=1, le=20, description="Suggestions to return (1..20)")] = 10) -> SuggestOut:
    """Popular past queries (training log and live search events) and catalog terms (brands, categories,
    titles' leading words) whose text, full pinyin or pinyin initials start with `prefix`; the
    user's own recent queries and interest categories come first."""
    ctx, app_id, loaded = app.ctx, app.app_id, app.loaded
    if not prefix.strip():
        raise ApiError(422, "invalid_request", "prefix is empty: show GET …/search/hot or …/search/shading instead")
    search_state = _search_state(loaded)
    if app.overloaded:
        state, degraded, signals = None, True, UserSignals()
    else:
        state, degraded = await _search_box_state(ctx, app_id, user_id)
        signals = user_signals(loaded, state, user_id)
    live = await _live_hot(ctx, app_id, search_state)
    indexes = [search_state.suggest] + ([live.index] if live.index is not None else [])
    settings = loaded.search_settings.get()
    found = suggest_terms(prefix, indexes, n + len(settings.blocklist), signals.recent_queries, signals.top_levels())
    allowed = [s for s in found if not settings.blocked(s.text)][:n]
    return SuggestOut(request_id=request_id("suggest"), model_version=loaded.version, degraded=degraded or live.rows is None,
                      suggestions=[SuggestionOut(text=s.text, kind=s.kind, score=s.score) for s in allowed])


@router.get("/hot", response_model=HotOut, summary="Hot searches")
async def hot(app: App,
              n: Annotated[int, Query(ge=1, le=50, description="Queries to return (1..50)")] = 10) -> HotOut:
    """The most searched queries, time-decayed (recent searches count more), without blocked words;
    the training log's popular queries while there are no live searches or Redis is unreachable."""
    ctx, app_id, loaded = app.ctx, app.app_id, app.loaded
    search_state = _search_state(loaded)
    settings = loaded.search_settings.get()
    live = await _live_hot(ctx, app_id, search_state, max_age_s=0.0)  # once per page view: read fresh
    rows, source = hot_list(live.rows, search_state.stats.popular, settings, n)
    return HotOut(request_id=request_id("hot"), model_version=loaded.version, degraded=live.rows is None,
                  source=source, items=[HotQueryOut(query=q, score=s) for q, s in rows])


@router.get("/shading", response_model=ShadingOut, summary="Default query for an empty search box")
async def shading_word(app: App, user_id: UserId = None) -> ShadingOut:
    """A grey placeholder query from the user's interests (recent events' categories, recent queries,
    profile interests), else the hottest query."""
    ctx, app_id, loaded = app.ctx, app.app_id, app.loaded
    search_state = _search_state(loaded)
    call = scene_call(app, "shading", user_id)
    state, degraded = await _search_box_state(ctx, app_id, user_id) if call.personalized else (None, call.overloaded)
    names, hot_degraded = await _hot_names(ctx, app_id, loaded)
    signals = user_signals(loaded, state, user_id) if call.personalized else UserSignals()
    found = shading(search_state.stats, signals, names, loaded.search_settings.get())
    query, source, reason = found if found else (None, None, None)
    return ShadingOut(request_id=call.request_id(), model_version=loaded.version, degraded=degraded or hot_degraded,
                      query=query, source=source, reason=reason, **call.fields())


@router.get("/discover", response_model=DiscoverOut, summary="Search discovery chips")
async def discover_chips(app: App, user_id: UserId = None,
                         n: Annotated[int, Query(ge=1, le=20, description="Chips to return (1..20)")] = 8) -> DiscoverOut:
    """Queries searched together with the user's recent queries, queries of their interest
    categories, then hot queries; never the user's own recent queries."""
    ctx, app_id, loaded = app.ctx, app.app_id, app.loaded
    search_state = _search_state(loaded)
    call = scene_call(app, "discover", user_id)
    state, degraded = await _search_box_state(ctx, app_id, user_id) if call.personalized else (None, call.overloaded)
    names, hot_degraded = await _hot_names(ctx, app_id, loaded)
    signals = user_signals(loaded, state, user_id) if call.personalized else UserSignals()
    chips = discover(search_state.stats, signals, names, loaded.search_settings.get(), n)
    return DiscoverOut(request_id=call.request_id(), model_version=loaded.version, degraded=degraded or hot_degraded,
                       items=[ChipOut(query=q, reason=r) for q, r in chips], **call.fields())
