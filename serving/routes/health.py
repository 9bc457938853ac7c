"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from serving.deps import ApiKey, Context
from serving.server_config import key_matches
from serving.metrics import CONTENT_TYPE_LATEST

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Able to serve (apps load on their first request), Redis reachable (or degraded on purpose), background loop alive")
def readyz(ctx: Context, x_api_key: ApiKey = None) -> JSONResponse:
    """Ready or not, for load balancers. With the admin key, also why: which apps serve which version,
    their load errors, Redis and the background loop (without it nothing names an app)."""
    models_ok = ctx.registry.ready()
    try:
        redis_ok = bool(ctx.redis.client.ping())
    except Exception:  # noqa: BLE001 - any failure to ping means "not reachable" here
        redis_ok = False
    loop_ok = ctx.background_alive()
    ready = models_ok and loop_ok and (redis_ok or ctx.config.ready_when_degraded)
    body: dict = {"ready": ready}
    if key_matches(x_api_key, ctx.config.admin_key_sha256):
        body |= {"models": models_ok, "redis": redis_ok, "background": ctx.background_status(),
                 "apps": ctx.registry.status()}
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                             "description": "Prometheus text exposition format"}})
def metrics(ctx: Context) -> Response:
    ctx.metrics.degraded.set(1 if ctx.gate.reads_skipped else 0)
    return Response(ctx.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
