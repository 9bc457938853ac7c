"""`PUT items/{item_id}`: price, stock, visibility changes and new items, live without retraining."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from features.store import StoreUnavailable
from serving.deps import AppId, Context
from serving.errors import ApiError
from serving.schemas import ItemIn, OkOut

router = APIRouter(prefix="/v1/apps/{app_id}", tags=["items"])


@router.put("/items/{item_id}", response_model=OkOut, summary="Upsert an item")
def put_item(ctx: Context, app_id: AppId, item_id: Annotated[str, Path(min_length=1, max_length=128)],
             body: ItemIn) -> OkOut:
    """Only the given fields change. A new item needs `title` and `category`; it becomes
    recommendable at once through the hybrid model's content features."""
    fields = body.model_dump(exclude_none=True)
    loaded = ctx.registry.get(app_id)
    known = loaded is not None and loaded.models.items.get(item_id) is not None
    store = ctx.stores[app_id]
    try:
        stored = ctx.gate.run(lambda: store.items([item_id]))[0]
        if not known and stored is None and not {"title", "category"} <= set(fields):
            raise ApiError(422, "invalid_request", "a new item needs at least title and category")
        version = ctx.gate.run(lambda: store.put_item(item_id, fields))
    except StoreUnavailable as exc:
        raise ApiError(503, "unavailable", f"item not stored, Redis is unreachable; retry later ({exc})") from exc
    if loaded is not None:  # this worker sees it now; the others at their next sync (about a second)
        loaded.catalog.apply_updates({item_id: {**(stored or {}), **fields}}, {item_id: version})
    return OkOut()
