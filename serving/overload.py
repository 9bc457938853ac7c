"""Overload protection: degrade on purpose, then shed, instead of queueing into timeouts.

Each worker counts the requests it holds (`in flight`: started and not yet answered, this one
included) and keeps its recent CPU cost per read (CPU time of the event loop's thread over answered
GET requests, every quarter second). A new read waits about `reads in flight × cost` behind the
others (writes are not counted: they wait for an fsync or Redis in a thread, not for the loop): from
`degrade_wait_ms` of expected wait (and at least `degrade_in_flight` reads in flight) the
expensive paths give way to cheap ones — as many requests as it takes to bring the wait back down,
so the worker serves full answers with whatever capacity it has and cheap ones beyond it:
- the home feed is answered right here, before FastAPI, from a page of the app's popularity ranking
  cached for `PAGE_TTL_S` (the same `home_feed` an anonymous visitor gets, with hidden and sold-out
  items removed), `strategy: "popularity"`, `degraded: true`;
- every other route runs with `overloaded` set (`serving.deps.Served`): no Redis read of the user's
  state, no personal re-ranking or fold-in (related, exclusive, search, shading and discover answer
  as for an anonymous visitor), `degraded: true`.
From `shed_in_flight` requests get 503 with `Retry-After` (health, metrics and admin routes never).
Degraded responses carry no experiment: they are not credited to a variant.
Both are counted in /metrics (`minirec_overload_total{action, route}`). Thresholds come from
`[server.overload]` in minirec.toml (docs/serving.md).
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from serving.guard import _header, _send_error
from serving.server_config import OverloadSettings
from vocab.experiments import request_id

#: A cached popularity page is recomputed after this long, and at once when the live catalog changed
#: (an item hidden or sold out is never answered from an older page).
PAGE_TTL_S = 2.0
#: Routes that are never shed (probes, monitoring, operators).
_NEVER_SHED = ("/healthz", "/readyz", "/metrics", "/v1/admin/")
_HOME_PARAMS = {"user_id", "n", "offset"}


class PopularPages:
    """Cached home pages of each app's popularity ranking, per (version, n, offset), each with the
    catalog snapshot it was ranked on."""

    def __init__(self) -> None:
        self._pages: dict[tuple[str, str, int, int], tuple[float, object, list[dict[str, Any]]]] = {}

    def items(self, ctx: Any, app_id: str, n: int, offset: int) -> tuple[str, list[dict[str, Any]]] | None:
        """(model version, items) or None while the app is not in memory (the request then takes
        the normal path, which loads it off the event loop)."""
        from recsys.recommend import home_feed  # deferred: keeps this module light for the app factory

        loaded = ctx.registry.resident(app_id)
        if loaded is None:
            return None
        key = (app_id, loaded.version, n, offset)
        cached = self._pages.get(key)
        now, catalog = time.monotonic(), loaded.catalog.state
        if cached is None or now - cached[0] > PAGE_TTL_S or cached[1] is not catalog:
            rules = ctx.config.apps[app_id].scenes["home"]
            page = home_feed(loaded, None, None, rules, n=n, offset=offset)
            if len(self._pages) > 1000:  # n × offset pairs of old versions: drop them all
                self._pages.clear()
            cached = self._pages[key] = (now, catalog, [vars(i) for i in page.items])
        return loaded.version, cached[2]


def _home_query(scope: Scope) -> tuple[str | None, int, int] | None:
    """(user_id, n, offset) of a plain home request, or None when FastAPI must validate it."""
    try:
        params = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))
        if not set(params) <= _HOME_PARAMS:
            return None
        n, offset = int(params.get("n", 20)), int(params.get("offset", 0))
    except ValueError:
        return None
    user = params.get("user_id")
    if not 1 <= n <= 100 or not 0 <= offset <= 1000 or (user is not None and len(user) > 128):
        return None
    return user, n, offset


#: How often the CPU cost per request is re-estimated, and the fewest answers an estimate needs.
COST_EVERY_S = 0.25
COST_MIN_ANSWERS = 10
#: A sample above this is a pause (a full garbage collection), not the cost of requests.
MAX_COST_MS = 50.0


class OverloadGuard:
    """ASGI middleware: counts requests in flight; degrades, then sheds (see the module docstring)."""

    def __init__(self, app: ASGIApp, owner: Any) -> None:
        self.app = app
        self.owner = owner
        self.in_flight = 0
        #: GET requests in flight: those that queue for the event loop's CPU (a write spends most of
        #: its time waiting for an fsync or Redis in a thread, and is not answered cheaper anyway).
        self.reads_in_flight = 0
        self.pages = PopularPages()
        self.cost_ms = 1.0  # CPU per answered request, smoothed; starts at a full home answer's order
        self._answered = 0
        self._mark: tuple[float, float, int] | None = None  # set by the first request, after start-up

    def _update_cost(self, now: float) -> None:
        """Re-estimate the CPU per request of the event loop's thread, where the routes run (the
        background reloads and Redis reads on other threads are not what a new request queues behind)."""
        if self._mark is None:
            self._mark = (now, time.thread_time(), self._answered)
            return
        at, cpu, answered = self._mark
        if now - at < COST_EVERY_S or self._answered - answered < COST_MIN_ANSWERS:
            return
        cpu_now = time.thread_time()
        sample = min((cpu_now - cpu) * 1000 / (self._answered - answered), MAX_COST_MS)
        self.cost_ms = 0.5 * self.cost_ms + 0.5 * sample
        self._mark = (now, cpu_now, self._answered)

    def overloaded(self, settings: OverloadSettings) -> bool:
        """Whether a read arriving now would wait at least `degrade_wait_ms` for a full answer."""
        return bool(settings.degrade_in_flight) and self.reads_in_flight >= settings.degrade_in_flight \
            and self.reads_in_flight * self.cost_ms >= settings.degrade_wait_ms

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx = getattr(self.owner.state, "ctx", None)
        if scope["type"] != "http" or ctx is None:
            await self.app(scope, receive, send)
            return
        settings: OverloadSettings = ctx.config.overload
        path: str = scope["path"]
        read = scope["method"] in ("GET", "HEAD")
        self.in_flight += 1
        self.reads_in_flight += read
        if read:
            self._update_cost(time.monotonic())
        try:
            if settings.shed_in_flight and self.in_flight >= settings.shed_in_flight \
                    and not path.startswith(_NEVER_SHED):
                ctx.metrics.overload.labels(action="shed", route=_route_kind(path)).inc()
                await _send_error(send, 503, "overloaded", "the server is overloaded; retry after "
                                  f"{settings.retry_after_s} s", [(b"retry-after", str(settings.retry_after_s).encode())])
                return
            if read and path.startswith("/v1/apps/") and self.overloaded(settings):
                ctx.metrics.overload.labels(action="degraded", route=_route_kind(path)).inc()
                if await self._cheap_home(ctx, scope, send):
                    return
                scope.setdefault("state", {})["overloaded"] = True
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
            self.reads_in_flight -= read
            self._answered += read

    async def _cheap_home(self, ctx: Any, scope: Scope, send: Send) -> bool:
        """Answer a well-formed home request from the cached popularity page; False to pass it on."""
        parts = scope["path"].split("/")  # ['', 'v1', 'apps', app, 'recommend', 'home']
        if scope["method"] != "GET" or len(parts) != 6 or parts[4:] != ["recommend", "home"]:
            return False
        query = _home_query(scope)
        app_id = parts[3]
        if query is None or app_id not in ctx.config.apps:
            return False
        if ctx.config.app_for_key(_header(scope, b"x-api-key")) != app_id:
            return False  # FastAPI gives the documented 401 / 403
        found = self.pages.items(ctx, app_id, query[1], query[2])
        if found is None:
            return False
        version, items = found
        body = orjson.dumps({"request_id": request_id("home"), "model_version": version, "strategy": "popularity",
                             "degraded": True, "note": "server overloaded: popular items for everyone",
                             "experiment": None, "variant": None, "items": items})
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
        return True


def _route_kind(path: str) -> str:
    """A bounded label for /metrics: the route family, never raw path text."""
    parts = path.split("/")
    if len(parts) > 4 and parts[1:3] == ["v1", "apps"]:
        tail = parts[4:]
        if tail[:1] == ["recommend"] and len(tail) > 1:
            return f"recommend/{tail[1]}" if tail[1] in ("home", "exclusive", "related") else "other"
        if tail[:1] == ["search"]:
            return "search/" + tail[1] if len(tail) > 1 and tail[1] in ("suggest", "hot", "shading", "discover") \
                else "search"
        return tail[0] if tail[0] in ("events", "items", "users", "analytics", "models") else "other"
    return "other"
