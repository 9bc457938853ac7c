"""Profile upserts: the merchant's own (per app) and the platform's (shared, with consent)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from features.store import StoreUnavailable
from serving.deps import AppId, Context, Platform
from serving.errors import ApiError
from serving.schemas import OkOut, PlatformProfileIn, ProfileIn

router = APIRouter(tags=["profiles"])
UserPath = Annotated[str, Path(min_length=1, max_length=128)]


def _write(ctx: Context, call) -> None:
    try:
        ctx.gate.run(call)
    except StoreUnavailable as exc:
        # nothing can hold the write: say so plainly and let the caller retry
        raise ApiError(503, "unavailable", f"profile not stored, Redis is unreachable; retry later ({exc})") from exc


@router.put("/v1/apps/{app_id}/users/{user_id}/profile", response_model=OkOut, summary="Upsert a merchant profile")
def put_merchant_profile(ctx: Context, app_id: AppId, user_id: UserPath, body: ProfileIn) -> OkOut:
    """Set the app's own profile fields of a user (member_level, store, …); an empty value deletes a field."""
    if "user_id" in body.fields:
        raise ApiError(422, "invalid_request", "fields.user_id: the user id is the path, not a field")
    _write(ctx, lambda: ctx.stores[app_id].put_merchant_profile(user_id, body.fields))
    return OkOut()


@router.put("/v1/platform/users/{user_id}/profile", response_model=OkOut, summary="Upsert a platform profile")
def put_platform_profile(ctx: Context, _: Platform, user_id: UserPath, body: PlatformProfileIn) -> OkOut:
    """The platform's profile of a user, shared by every app; fields are used only within `consent`."""
    fields = dict(body.fields)
    if body.consent is not None:
        fields["consent"] = body.consent
    store = next(iter(ctx.stores.values()))  # platform keys are app-independent
    _write(ctx, lambda: store.put_platform_profile(user_id, fields))
    return OkOut()
