"""Request dependencies: the shared context, and API-key checks per app, platform and admin.

They are `async def` on purpose: they do no I/O, and a sync dependency costs a threadpool hop per
request (measured: about 1 ms of CPU per request under load)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Path, Request

from serving.context import ServingContext
from serving.errors import ApiError
from serving.registry import LoadedApp
from serving.server_config import key_matches


async def get_context(request: Request) -> ServingContext:
    return request.app.state.ctx


Context = Annotated[ServingContext, Depends(get_context)]
ApiKey = Annotated[str | None, Header(alias="X-API-Key", description="The app's API key")]


def check_app_key(ctx: ServingContext, app_id: str, x_api_key: str | None) -> None:
    """401 without a valid key; 403 when the key is not this app's — the same answer whether or not
    `app_id` exists, so a key cannot probe for other tenants' ids. The key is hashed once per request
    and found by one lookup (`ServerConfig.app_for_key`), however many apps the server has."""
    if not x_api_key:
        raise ApiError(401, "unauthorized", "missing X-API-Key header")
    owner = ctx.config.app_for_key(x_api_key)
    if owner is None:
        raise ApiError(401, "unauthorized", "unknown API key")
    if owner != app_id:
        raise ApiError(403, "forbidden", f"this API key is not for app {app_id!r}")


AppPath = Annotated[str, Path(description="The app (tenant) id")]


async def require_app(request: Request, app_id: AppPath, x_api_key: ApiKey = None) -> str:
    """The app id, once the key is checked."""
    check_app_key(request.app.state.ctx, app_id, x_api_key)
    return app_id


AppId = Annotated[str, Depends(require_app)]


@dataclass(frozen=True)
class Served:
    """What a route answering from an app's models needs, resolved by one dependency: each extra
    dependency in FastAPI's graph costs tens of microseconds per request on the hot routes."""

    ctx: ServingContext
    app_id: str
    loaded: LoadedApp
    #: The worker is overloaded (serving/overload.py): skip Redis reads and personalization.
    overloaded: bool = False


async def served_app(request: Request, app_id: AppPath, x_api_key: ApiKey = None) -> Served:
    """Key checked as `require_app`, then the app's loaded bundle, or 503 if none could be loaded yet."""
    ctx: ServingContext = request.app.state.ctx
    check_app_key(ctx, app_id, x_api_key)
    registry = ctx.registry
    loaded = registry.get(app_id) if registry.resident(app_id) is not None else None
    if loaded is None:  # not in memory: loaded in a thread, so the worker goes on answering the others
        loaded = await asyncio.to_thread(registry.get, app_id)
    if loaded is None:
        raise ApiError(503, "unavailable", f"app {app_id!r} has no model loaded yet; see GET /v1/admin/models")
    return Served(ctx, app_id, ctx.settle(loaded), bool(request.scope.get("state", {}).get("overloaded")))


App = Annotated[Served, Depends(served_app)]


async def require_admin(ctx: Context, x_api_key: ApiKey = None) -> None:
    """The admin key, or 401 / 403."""
    if not x_api_key:
        raise ApiError(401, "unauthorized", "missing X-API-Key header")
    if not key_matches(x_api_key, ctx.config.admin_key_sha256):
        raise ApiError(403, "forbidden", "admin routes need the admin key")


async def require_platform(ctx: Context, x_api_key: ApiKey = None) -> None:
    if not x_api_key:
        raise ApiError(401, "unauthorized", "missing X-API-Key header")
    digest = ctx.config.platform_key_sha256
    if digest is None or not key_matches(x_api_key, digest):
        raise ApiError(403, "forbidden", "platform profile routes need the platform key")


async def require_app_or_admin(request: Request, app_id: AppPath, x_api_key: ApiKey = None) -> str:
    """The app id, for the app's key or the admin key (merchant pages a provider also opens)."""
    ctx: ServingContext = request.app.state.ctx
    if x_api_key and key_matches(x_api_key, ctx.config.admin_key_sha256):
        if app_id not in ctx.config.apps:
            raise ApiError(404, "not_found", f"no app {app_id!r} (in minirec.toml or created through the admin API)")
        return app_id
    check_app_key(ctx, app_id, x_api_key)
    return app_id


AppOrAdmin = Annotated[str, Depends(require_app_or_admin)]
Admin = Annotated[None, Depends(require_admin)]
Platform = Annotated[None, Depends(require_platform)]
