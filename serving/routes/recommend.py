"""Recommendation shelves: home feed, exclusive (member-only) items, related items, buy again."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Query
from fastapi.responses import Response

from recsys.recommend import Page, buy_again_shelf, exclusive_feed, home_feed, related_shelf
from recsys.user_state import UserState
from serving.context import ServingContext
from serving.deps import App
from serving.registry import LoadedApp
from serving.scene_call import OVERLOADED_NOTE, SceneCall, scene_call
from serving.schemas import RecommendationOut

router = APIRouter(prefix="/v1/apps/{app_id}/recommend", tags=["recommend"])

# The routes are `async def` and run their few milliseconds of NumPy and one Redis round trip on the
# event loop: measured, a threadpool hop per request (and 40 threads contending for the GIL) cost more
# CPU than it saved. Uvicorn workers give parallelism across cores.

MAX_N = 100
UserId = Annotated[str | None, Query(max_length=128, description="The user; omit for an anonymous visitor")]
N = Annotated[int, Query(ge=1, le=MAX_N, description=f"Items to return (1..{MAX_N})")]
Offset = Annotated[int, Query(ge=0, le=1000, description="Items to skip (stable pagination)")]


async def user_state(ctx: ServingContext, app_id: str, user_id: str | None,
                     call: SceneCall | None = None) -> tuple[UserState | None, bool]:
    """The user's real-time state from Redis, or (None, degraded=True) when Redis is unreachable or
    slower than the read budget, or the worker is overloaded (`call.overloaded`: not read at all)."""
    if call is not None and call.overloaded:
        return None, True
    if not user_id:
        return None, False
    return await ctx.read(lambda: ctx.stores[app_id].user_state(user_id))


def respond(loaded: LoadedApp, page: Page, degraded: bool, call: SceneCall) -> Response:
    """The RecommendationOut document, built directly with orjson: re-validating our own output
    through the response model costs about a millisecond per request; the route declares the model
    for the docs."""
    note = OVERLOADED_NOTE if call.overloaded else page.note
    return Response(orjson.dumps({"request_id": call.request_id(), "model_version": loaded.version,
                                  "strategy": page.strategy, "degraded": degraded, "note": note,
                                  **call.fields(), "items": [vars(i) for i in page.items]}),
                    media_type="application/json")


@router.get("/home", response_model=RecommendationOut, summary="Personalized home feed")
async def home(app: App, user_id: UserId = None, n: N = 20, offset: Offset = 0,
               category: Annotated[str | None, Query(max_length=200, description="Only this category path")] = None
               ) -> Response:
    call = scene_call(app, "home", user_id)
    state, degraded = await user_state(app.ctx, app.app_id, user_id, call)
    page = home_feed(app.loaded, user_id, state, call.rules(app), n=n, offset=offset, category=category,
                     personalized=call.personalized)
    return respond(app.loaded, page, degraded, call)


@router.get("/exclusive", response_model=RecommendationOut, summary="Member-only items the user may see")
async def exclusive(app: App, user_id: UserId = None, n: N = 20, offset: Offset = 0) -> Response:
    call = scene_call(app, "exclusive", user_id)
    state, degraded = await user_state(app.ctx, app.app_id, user_id, call)
    page = exclusive_feed(app.loaded, user_id, state, call.rules(app), n=n, offset=offset,
                          personalized=call.personalized)
    return respond(app.loaded, page, degraded, call)


@router.get("/related/{item_id}", response_model=RecommendationOut, summary="Related items for a detail page")
async def related(app: App, item_id: str, user_id: UserId = None, n: N = 10, offset: Offset = 0) -> Response:
    call = scene_call(app, "related", user_id)
    state, degraded = await user_state(app.ctx, app.app_id, user_id, call)
    page = related_shelf(app.loaded, item_id, user_id, state, call.rules(app), n=n, offset=offset,
                         personalized=call.personalized)
    return respond(app.loaded, page, degraded, call)


@router.get("/buy-again", response_model=RecommendationOut, summary="The user's past purchases, likeliest rebuy first")
async def buy_again(app: App, user_id: UserId = None, n: N = 20, offset: Offset = 0) -> Response:
    call = scene_call(app, "buy-again", user_id)
    state, degraded = await user_state(app.ctx, app.app_id, user_id, call)
    page = buy_again_shelf(app.loaded, user_id, state, call.rules(app), n=n, offset=offset)
    return respond(app.loaded, page, degraded, call)
