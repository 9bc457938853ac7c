"""What the shelf and search routes share: query parameters, the user's real-time state read, and
the response body of a feed. Routes import these from here, never from another route."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import Query
from fastapi.responses import Response

from recsys.recommend import Page
from recsys.user_state import UserState
from serving.context import ServingContext
from serving.registry import LoadedApp
from serving.scene_call import OVERLOADED_NOTE, SceneCall

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


def feed_response(loaded: LoadedApp, page: Page, degraded: bool, call: SceneCall) -> Response:
    """The RecommendationOut document, built directly with orjson: re-validating our own output
    through the response model costs about a millisecond per request; the route declares the model
    for the docs."""
    note = OVERLOADED_NOTE if call.overloaded else page.note
    return Response(orjson.dumps({"request_id": call.request_id(), "model_version": loaded.version,
                                  "strategy": page.strategy, "degraded": degraded, "note": note,
                                  **call.fields(), "items": [vars(i) for i in page.items]}),
                    media_type="application/json")
