"""Lookalike audiences (app key) and their delivery on the platform's own slots (platform key).

The merchant sends a seed and a size and gets back an audience id and aggregates; membership stays on
the platform side (features/audiences.py) and is read only by `GET /v1/platform/placements`. The
model and its data: analytics/lookalike.py, analytics/platform_data.py; docs/audiences.md.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from analytics.disclosure import Suppressor
from analytics.lookalike import AudienceError, build_audience
from analytics.platform_data import platform_users
from features.audiences import MAX_TTL_S, AudienceStore
from features.store import StoreError, StoreUnavailable
from recsys.config import TrainConfig
from serving.deps import AppId, Context, Platform
from serving.errors import ApiError
from serving.schemas import ErrorOut
from vocab.campaigns import is_campaign_id, new_campaign_id, placement_request_id

router = APIRouter(tags=["audiences"])
UserText = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]*$")]


class AudienceIn(BaseModel):
    """A seed (the app's own user ids) and the audience size wanted."""

    model_config = ConfigDict(extra="forbid")

    user_ids: list[UserText] | None = Field(default=None, max_length=100_000,
                                            description="Seed: ids of this app's users (e.g. best customers)")
    segment: str | None = Field(default=None, max_length=64, description="Seed: an insight segment (not yet)")
    size: int = Field(ge=1, le=1_000_000, description="Audience size wanted (at least `[privacy] k_min`, 50 by default)")
    ttl_days: float = Field(default=30.0, gt=0, le=MAX_TTL_S / 86400, description="Days the audience lives")
    exclude_app_users: bool = Field(default=True, description="Leave the app's current users out (prospects only)")


def _store(ctx: Context) -> AudienceStore:
    return AudienceStore(ctx.redis.client)


def _unavailable(exc: StoreError) -> ApiError:
    return ApiError(503, "unavailable", f"audiences need Redis, which is not reachable; retry later ({exc})")


@router.post("/v1/apps/{app_id}/audiences", summary="Build a lookalike audience of platform users",
             responses={422: {"model": ErrorOut, "description": "seed too small, bad size"}})
def create_audience(ctx: Context, app_id: AppId, body: AudienceIn) -> dict[str, Any]:
    """Scores the platform users who granted `marketing` by similarity to the seed. The answer holds
    the audience id, its size, k-anonymous aggregates and the lift on a held-out part of the seed:
    never a user id."""
    if body.segment is not None:
        raise ApiError(422, "invalid_request", "segment seeds are not supported yet; send user_ids")
    if not body.user_ids:
        raise ApiError(422, "invalid_request", "user_ids: the seed needs this app's user ids")
    audience_id = new_campaign_id()
    store = _store(ctx)
    now = time.time()
    try:
        users = ctx.gate.run(lambda: platform_users(store, ctx.config.state_dir / "events", TrainConfig().scope_map(),
                                                    now))
        privacy = ctx.config.privacy
        built = build_audience(users, app_id, body.user_ids, body.size, key=audience_id,
                               exclude_app_users=body.exclude_app_users,
                               rule=Suppressor(privacy.k_min, privacy.round_to))
        ttl = int(body.ttl_days * 86400)
        summary = {"audience_id": audience_id, "requested_size": body.size, "created_at": now,
                   "expires_at": now + ttl, **built.summary()}
        ctx.gate.run(lambda: store.save(audience_id, app_id, built.members, summary, ttl, now))
    except AudienceError as exc:
        raise ApiError(422, "invalid_request", str(exc)) from exc
    except (StoreUnavailable, StoreError) as exc:
        raise _unavailable(exc) from exc
    return {"app_id": app_id, **summary}


@router.get("/v1/apps/{app_id}/audiences/{audience_id}", summary="An audience's summary",
            responses={404: {"model": ErrorOut, "description": "no such audience for this app (or expired)"}})
def get_audience(ctx: Context, app_id: AppId, audience_id: Annotated[str, Path(max_length=64)]) -> dict[str, Any]:
    """The summary given at creation (size, aggregates, lift), while the audience lives."""
    try:
        summary = ctx.gate.run(lambda: _store(ctx).summary(audience_id)) if is_campaign_id(audience_id) else None
    except (StoreUnavailable, StoreError) as exc:
        raise _unavailable(exc) from exc
    if summary is None or summary.get("app_id") != app_id:  # another app's audience: the same answer
        raise ApiError(404, "not_found", f"no audience {audience_id!r} for app {app_id!r} (unknown or expired)")
    return {"app_id": app_id, **{k: v for k, v in summary.items() if k != "app_id"}}


@router.get("/v1/platform/placements", summary="Campaigns to show a user in the super-app's public slots")
def placements(ctx: Context, _: Platform,
               user_id: Annotated[str, Query(min_length=1, max_length=128)]) -> dict[str, Any]:
    """Platform key only: the live campaigns whose audience holds the user, each with the request_id
    its impressions, clicks and conversions should carry (credited to the campaign in analytics)."""
    try:
        found = ctx.gate.run(lambda: _store(ctx).placements(user_id))
    except (StoreUnavailable, StoreError) as exc:
        raise _unavailable(exc) from exc
    return {"user_id": user_id, "placements": [
        {"campaign": audience, "app_id": app, "request_id": placement_request_id(audience)}
        for app, audience in found if app in ctx.config.apps and is_campaign_id(audience)]}
