"""Recommendation shelves: home feed, exclusive (member-only) items, related items, buy again."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from recsys.recommend import buy_again_shelf, exclusive_feed, home_feed, related_shelf
from serving.deps import App
from serving.request import N, Offset, UserId, feed_response, user_state
from serving.scene_call import scene_call
from serving.schemas import RecommendationOut

router = APIRouter(prefix="/v1/apps/{app_id}/recommend", tags=["recommend"])

# The routes are `async def` and run their few milliseconds of NumPy and one Redis round trip on the
# event loop: measured, a threadpool hop per request (and 40 threads contending for the GIL) cost more
# CPU than it saved. Uvicorn workers give parallelism across cores.


@router.get("/home", response_model=RecommendationOut, summary="Personalized home feed")
async def home(app: App, user_id: UserId = None, n: N = 20, offset: Offset = 0,
               category: Annotated[str | None, Query(max_length=200, description="Only this category path")] = None
               ) -> Response:
    call = scene_call(app, "home", user_id)
    state, degraded = await user_state(app.ctx, app.app_id, user_id, call)
    page = home_feed(app.loaded, user_id, state, call.rules(app), n=n, offset=offset, category=category,
                     personalized=call.personalized)
    return feed_response(app.loaded, page, degraded, call)


@router.get("/exclusive", response_model=RecommendationOut, summary="Member-only items the user may see")
async def exclusive(app: App, user_id: UserId = None, n: N = 20, offset: Offset = 0) -> Response:
    call = scene_call(app, "exclusive", user_id)
    state, degraded = await user_state(app.ctx, app.app_id, user_id, call)
    page = exclusive_feed(app.loaded, user_id, state, call.rules(app), n=n, offset=offset,
                          personalized=call.personalized)
    return feed_response(app.loaded, page, degraded, call)


@router.get("/related/{item_id}", response_model=RecommendationOut, summary="Related items for a detail page")
async def related(app: App, item_id: str, user_id: UserId = None, n: N = 10, offset: Offset = 0) -> Response:
    call = scene_call(app, "related", user_id)
    state, degraded = await user_state(app.ctx, app.app_id, user_id, call)
    page = related_shelf(app.loaded, item_id, user_id, state, call.rules(app), n=n, offset=offset,
                         personalized=call.personalized)
    return feed_response(app.loaded, page, degraded, call)


@router.get("/buy-again", response_model=RecommendationOut, summary="The user's past purchases, likeliest rebuy first")
async def buy_again(app: App, user_id: UserId = None, n: N = 20, offset: Offset = 0) -> Response:
    call = scene_call(app, "buy-again", user_id)
    state, degraded = await user_state(app.ctx, app.app_id, user_id, call)
    page = buy_again_shelf(app.loaded, user_id, state, call.rules(app), n=n, offset=offset)
    return feed_response(app.loaded, page, degraded, call)
