"""Recommendation shelves: home feed, exclusive (member-only) items, related items."""

from __future__ import annotations

import uuid
from typing import Annotated

import numpy as np
import orjson
from fastapi import APIRouter, Query
from fastapi.responses import Response

from features.store import UserState
from serving.context import ServingContext
from serving.deps import App
from serving.pipeline import Item, rank, related_scored, score_user
from serving.registry import LoadedApp
from serving.schemas import RecommendationOut

router = APIRouter(prefix="/v1/apps/{app_id}/recommend", tags=["recommend"])

# The routes are `async def` and run their few milliseconds of NumPy and one Redis round trip on the
# event loop: measured, a threadpool hop per request (and 40 threads contending for the GIL) cost more
# CPU than it saved. Uvicorn workers give parallelism across cores.

MAX_N = 100
UserId = Annotated[str | None, Query(max_length=128, description="The user; omit for an anonymous visitor")]
N = Annotated[int, Query(ge=1, le=MAX_N, description=f"Items to return (1..{MAX_N})")]
Offset = Annotated[int, Query(ge=0, le=1000, description="Items to skip (stable pagination)")]


def user_state(ctx: ServingContext, app_id: str, user_id: str | None) -> tuple[UserState | None, bool]:
    """The user's real-time state from Redis, or (None, degraded=True) when Redis is unreachable."""
    if not user_id:
        return None, False
    return ctx.gate.try_run(lambda: ctx.stores[app_id].user_state(user_id))


def respond(loaded: LoadedApp, items: list[Item], strategy: str, degraded: bool, note: str | None) -> Response:
    """The RecommendationOut document, built directly with orjson: re-validating our own output
    through the response model costs about a millisecond per request; the route declares the model
    for the docs."""
    return Response(orjson.dumps({"request_id": uuid.uuid4().hex, "model_version": loaded.version,
                                  "strategy": strategy, "degraded": degraded, "note": note,
                                  "items": [vars(i) for i in items]}), media_type="application/json")


@router.get("/home", response_model=RecommendationOut, summary="Personalized home feed")
async def home(app: App, user_id: UserId = None, n: N = 20, offset: Offset = 0,
               category: Annotated[str | None, Query(max_length=200, description="Only this category path")] = None
               ) -> Response:
    state, degraded = user_state(app.ctx, app.app_id, user_id)
    rules = app.ctx.config.apps[app.app_id].scenes["home"]
    items, strategy, note = rank(app.loaded, user_id, state, rules, n=n, offset=offset, category=category)
    return respond(app.loaded, items, strategy, degraded, note)


@router.get("/exclusive", response_model=RecommendationOut, summary="Member-only items the user may see")
async def exclusive(app: App, user_id: UserId = None, n: N = 20, offset: Offset = 0) -> Response:
    state, degraded = user_state(app.ctx, app.app_id, user_id)
    rules = app.ctx.config.apps[app.app_id].scenes["exclusive"]
    items, strategy, note = rank(app.loaded, user_id, state, rules, n=n, offset=offset, only_restricted=True)
    if not items and note is None:
        note = "no member-only items this user is eligible for"
    return respond(app.loaded, items, strategy, degraded, note)


@router.get("/related/{item_id}", response_model=RecommendationOut, summary="Related items for a detail page")
async def related(app: App, item_id: str, user_id: UserId = None, n: N = 10, offset: Offset = 0) -> Response:
    loaded = app.loaded
    state, degraded = user_state(app.ctx, app.app_id, user_id)
    rules = app.ctx.config.apps[app.app_id].scenes["related"]
    user = score_user(loaded, user_id, state) if user_id else None
    scored = related_scored(loaded, item_id, user)
    note = None
    if scored is None:  # unknown item: the user's own feed is the best shelf we have
        scored = user or score_user(loaded, None, None)
        note = f"unknown item {item_id!r}: showing the home feed instead"
    anchor = loaded.models.items.get(item_id)
    exclude = np.array([anchor]) if anchor is not None else None
    items, strategy, rank_note = rank(loaded, user_id, state, rules, n=n, offset=offset, scored=scored,
                                      exclude=exclude)
    items = [i for i in items if i.item_id != item_id]
    return respond(loaded, items, strategy, degraded, note or rank_note)
