"""Admin routes (admin key): what is loaded, and reloading published models now."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from serving.deps import Admin, Context

router = APIRouter(prefix="/v1/admin", tags=["admin"])


@router.get("/models", summary="Loaded model version per app, and the last reload error")
def models(ctx: Context, _: Admin) -> dict[str, Any]:
    return {"apps": ctx.registry.status(), "redis": ctx.redis.description, "degraded": ctx.gate.degraded}


@router.post("/models/reload", summary="Load newly published versions now (instead of at the next poll)")
def reload(ctx: Context, _: Admin) -> dict[str, Any]:
    changed = ctx.registry.refresh()
    ctx.sync_items()
    ctx.metrics.set_versions({s["app_id"]: s["version"] for s in ctx.registry.status() if s["version"]})
    return {"changed": changed, "apps": ctx.registry.status()}
