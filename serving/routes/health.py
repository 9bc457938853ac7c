"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from serving.deps import Context
from serving.metrics import CONTENT_TYPE_LATEST

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Models loaded and Redis reachable (or degraded on purpose)")
def readyz(ctx: Context) -> JSONResponse:
    models_ok = ctx.registry.ready()
    try:
        redis_ok = bool(ctx.redis.client.ping())
    except Exception:  # noqa: BLE001 - any failure to ping means "not reachable" here
        redis_ok = False
    ready = models_ok and (redis_ok or ctx.config.ready_when_degraded)
    body = {"ready": ready, "models": models_ok, "redis": redis_ok, "apps": ctx.registry.status()}
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics", summary="Prometheus metrics")
def metrics(ctx: Context) -> Response:
    ctx.metrics.degraded.set(1 if ctx.gate.degraded else 0)
    return Response(ctx.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
