"""`GET insight`: who the app's users are, as k-anonymous aggregates (analytics/insight.py computes
and caches them; docs/insight.md has the document and the suppression rule)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query

from analytics.disclosure import Suppressor
from analytics.insight import (InsightCache, InsightFilterError, Filters, UserTable, catalog_items,
                               compute_user_table, log_version, logged_events)
from features.store import StoreError
from offline_training.datafolder import DEFAULT_SCOPES, DataError, load_data_folder
from serving.context import ServingContext
from serving.deps import AppOrAdmin, Context
from serving.errors import ApiError
from serving.schemas import ErrorOut

router = APIRouter(prefix="/v1/apps/{app_id}", tags=["insight"])
#: Per worker: each app's user table for its data version (computed once, not per request).
_CACHE = InsightCache()


def _seed_version(folder: Path | None) -> tuple[Any, ...]:
    """The training data folder's files (name, size, mtime): a changed folder is a new data version."""
    if folder is None or not folder.is_dir():
        return ()
    return tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.iterdir()) if p.is_file())


def _insight(ctx: ServingContext, app_id: str, filters: Filters) -> dict[str, Any]:
    """The document, from the cached user table of the app's current model and data (in a thread)."""
    config = ctx.config
    seed = config.apps[app_id].seed_data
    loaded = ctx.registry.get(app_id)  # the live catalog's prices and categories, when a model is loaded
    source = config.event_stream or config.state_dir / "events"
    version = (loaded.version if loaded else None, _seed_version(seed))

    def compute() -> UserTable:
        data = load_data_folder(seed, scopes=loaded.scopes if loaded else None) if seed else None
        items = catalog_items(loaded.catalog.state) if loaded else (
            data.items[["item_id", "category", "price"]] if data is not None else None)
        if items is None:
            raise ApiError(503, "unavailable", f"app {app_id!r} has neither a loaded model nor seed data: "
                                               "no catalog to price purchases")
        known = data.merchant_profiles["user_id"].astype(str) if data is not None else []
        return compute_user_table(ctx.redis.client, app_id, data.interactions if data is not None else None,
                                  known, logged_events(source, app_id, config.event_stream_name), items,
                                  loaded.scopes if loaded else (data.scopes if data is not None else DEFAULT_SCOPES))

    rule = Suppressor(config.privacy.k_min, config.privacy.round_to)
    doc = _CACHE.document((str(config.state_dir), app_id), version, log_version(source, app_id), compute, rule,
                          filters)
    return {"app": app_id, "model_version": version[0], **doc}


@router.get("/insight", summary="The app's users in k-anonymous aggregates: profile fields, RFM segments, "
                                "top categories, new vs returning, consented platform-profile distributions",
            responses={404: {"model": ErrorOut, "description": "admin key and an app that does not exist"}})
async def insight(ctx: Context, app_id: AppOrAdmin,
                  segment: Annotated[str | None, Query(max_length=32, description="Only this RFM segment")] = None,
                  field: Annotated[str | None, Query(max_length=200, description="Only users whose merchant "
                                                     "profile has <field>=<value>, e.g. member_level=gold")] = None,
                  ) -> dict[str, Any]:
    """App key or admin key. Every count is >= `[privacy] k_min` users or suppressed; a filter that
    would isolate fewer than k_min users answers `suppressed: true` with no counts."""
    try:
        filters = Filters.parse(segment, field)
        return await asyncio.to_thread(_insight, ctx, app_id, filters)
    except InsightFilterError as exc:
        raise ApiError(422, "invalid_request", str(exc)) from exc
    except StoreError as exc:
        raise ApiError(503, "unavailable", f"insight needs the profiles in Redis, which is unreachable; retry "
                                           f"later ({exc})") from exc
    except DataError as exc:
        raise ApiError(503, "unavailable", f"the app's seed data folder is not readable: {exc}") from exc
