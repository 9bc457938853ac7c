"""What every request shares: config, model registry, Redis-backed stores, event log, metrics.

The apps can change while the server runs (apps created through the admin API, serving/live_apps.py):
`ServingContext.config` is then replaced by a config with the new app table, and the per-app parts
(the feature store of each app) are made on first use, so nothing per app is fixed at start."""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from features.eventlog import EventLog
from features.eventstream import JetStreamLog
from features.redis_conn import RedisHandle
from features.store import FeatureStore, StoreUnavailable
from serving.live_apps import LiveApps
from serving.metrics import Metrics
from serving.ratelimit import RateLimiter
from serving.registry import LoadedApp, ModelRegistry
from serving.server_config import AppSearchSettings, ServerConfig

T = TypeVar("T")
#: Threads for the requests' Redis reads (a few: each waits on a socket, not on the CPU).
_READS = ThreadPoolExecutor(max_workers=16, thread_name_prefix="minirec-redis-read")
#: `/readyz` says not ready when the background loop has not completed a round for this long (or
#: for ten of its rounds, if longer).
BACKGROUND_STALE_S = 3.0
log = logging.getLogger("minirec.serving")


class RedisGate:
    """A circuit breaker: after a Redis failure, skip Redis for `cooldown` seconds.

    While Redis is down every request would otherwise wait for a socket timeout; with the gate
    open they answer degraded at once, and the first call after the cooldown probes Redis again,
    so service recovers by itself when Redis returns.
    """

    def __init__(self, cooldown: float = 1.0, on_trip: Callable[[], None] | None = None) -> None:
        self.cooldown = cooldown
        #: Called when a failure opens the gate: drops the pool's connections, which are all stale
        #: after a Redis restart (else each would fail once, and re-open the gate, in turn).
        self.on_trip = on_trip
        self._open_until = 0.0
        self._slow_until = 0.0
        self.last_error: str | None = None

    @property
    def degraded(self) -> bool:
        """Redis failed within the cooldown: every call is skipped."""
        return time.monotonic() < self._open_until

    @property
    def reads_skipped(self) -> bool:
        """Redis failed or was too slow within the cooldown: requests' reads are skipped (writes,
        which have no budget to keep, still try)."""
        return self.degraded or time.monotonic() < self._slow_until

    def trip_slow(self, reason: str) -> None:
        """Redis answered a read, but too slowly to be worth waiting for: skip reads for a while."""
        self.last_error = reason
        self._slow_until = time.monotonic() + self.cooldown

    def run(self, call: Callable[[], T]) -> T:
        """Run a store call; raises StoreUnavailable at once while the gate is open."""
        if self.degraded:
            raise StoreUnavailable(self.last_error or "redis unavailable")
        try:
            return call()
        except StoreUnavailable as exc:
            self.last_error = str(exc)
            self._open_until = time.monotonic() + self.cooldown
            if self.on_trip is not None:
                try:
                    self.on_trip()
                except Exception:  # noqa: BLE001 - dropping connections is best effort
                    log.debug("could not reset the Redis connections", exc_info=True)
            raise

    def try_run(self, call: Callable[[], T]) -> tuple[T | None, bool]:
        """(result, degraded): None and True instead of raising.

        Other errors (a bug, a misconfigured Redis, or the client library tripping over a connection
        dropped under it while Redis restarts) are logged and also answered degraded: a read that
        fails must not take the request down with it."""
        try:
            return self.run(call), False
        except StoreUnavailable:
            return None, True
        except Exception:  # noqa: BLE001 - see the docstring
            log.exception("redis call failed")
            return None, True


class AppStores(dict[str, FeatureStore]):
    """Each app's feature store, made on first use (`stores[app_id]`) from the app's current
    settings; KeyError for an app the server does not serve."""

    def __init__(self, make: Callable[[str], FeatureStore | None]) -> None:
        super().__init__()
        self._make = make

    def __missing__(self, app_id: str) -> FeatureStore:
        store = self._make(app_id)
        if store is None:
            raise KeyError(app_id)
        self[app_id] = store
        return store


@dataclass
class ServingContext:
    #: The server's config with the current app table (replaced, never changed in place).
    config: ServerConfig
    registry: ModelRegistry
    redis: RedisHandle
    #: Per app; pass an empty `AppStores` (or a dict with every app) — see `make_store`.
    stores: dict[str, FeatureStore]
    #: The local log, or the JetStream sink (features/eventstream.py): both `append(app, events)`.
    eventlog: EventLog | JetStreamLog
    metrics: Metrics
    gate: RedisGate = field(default_factory=RedisGate)
    limiter: RateLimiter = field(default=None)  # type: ignore[assignment]  # set in __post_init__
    #: Per app, the newest item-update time already applied to the loaded catalog.
    synced_until: dict[str, float] = field(default_factory=dict)
    #: Per app, the items already applied at exactly `synced_until` (Redis ranges are inclusive).
    synced_edge: dict[str, set[str]] = field(default_factory=dict)
    synced_version: dict[str, str] = field(default_factory=dict)
    #: When the background loop last completed a round, and its last error.
    background_last_ok: float = field(default_factory=time.monotonic)
    background_error: str | None = None
    #: minirec.toml's apps and the app store's (None: the file's apps only, as in unit tests).
    live_apps: LiveApps | None = None

    def __post_init__(self) -> None:
        if self.limiter is None:
            self.limiter = RateLimiter(self.redis.client)
        self.gate.on_trip = self.redis.drop_connections

    def make_store(self, app_id: str) -> FeatureStore | None:
        """A feature store for `app_id` with its current settings (None for an unknown app)."""
        app = self.config.apps.get(app_id)
        if app is None:
            return None
        return FeatureStore(self.redis.client, app_id, **app.features.store_kwargs())

    def refresh_apps(self) -> bool:
        """Follow the app store: swap in the new app table if it changed (a cheap poll otherwise);
        returns whether it changed. Stores of deleted apps, and of apps whose feature settings
        changed, are dropped (made again on next use); new apps get theirs now, so the item sync
        covers them from the start."""
        if self.live_apps is None:
            return False
        config = self.live_apps.poll()
        if config is None:
            return False
        before, self.config = self.config.apps, config
        for app_id in list(self.stores):
            app = config.apps.get(app_id)
            old = before.get(app_id)
            if app is None or old is None or app.features != old.features:
                self.stores.pop(app_id, None)
        for app_id in config.apps:
            if app_id not in self.stores:
                store = self.make_store(app_id)
                if store is not None:
                    self.stores[app_id] = store
        added, removed = set(config.apps) - set(before), set(before) - set(config.apps)
        if added or removed:
            log.info("apps: %d served (%d added, %d removed)", len(config.apps), len(added), len(removed))
        return True

    def settle(self, loaded: LoadedApp) -> LoadedApp:
        """Make a loaded bundle follow its app table's search settings (those of minirec.toml's
        `[apps.<id>.search]` or of the admin API), over its search.toml; idempotent and cheap."""
        if type(loaded.search_settings) is not AppSearchSettings:
            loaded.search_settings = AppSearchSettings(loaded.app_id, loaded.search_settings,  # type: ignore[assignment]
                                                       lambda: self.config)
        return loaded

    async def read(self, call: Callable[[], T]) -> tuple[T | None, bool]:
        """(result, degraded) of a Redis read for a request on the event loop.

        The read runs on a small thread pool and is awaited for at most `redis_budget_ms`: a Redis
        that is slow but up (a big command, a saturated host, a failover) would otherwise hold the
        event loop, and every request of the worker, /healthz included, would wait behind it. A read
        over the budget answers degraded and opens the gate, so the next requests skip Redis until
        the cooldown ends; the late read finishes in its thread and is dropped."""
        if self.gate.reads_skipped:
            return None, True
        budget = self.config.redis_budget_ms / 1000
        future = asyncio.get_running_loop().run_in_executor(_READS, self.gate.try_run, call)
        try:
            return await asyncio.wait_for(future, budget)
        except TimeoutError:
            self.gate.trip_slow(f"Redis answered slower than the {self.config.redis_budget_ms:.0f} ms budget")
            return None, True

    def background_ok(self) -> None:
        self.background_last_ok, self.background_error = time.monotonic(), None

    def background_failed(self, exc: BaseException) -> None:
        self.background_error = f"{type(exc).__name__}: {exc}"

    def background_alive(self) -> bool:
        """False once the loop has not completed a round for `BACKGROUND_STALE_S` (or 10 rounds)."""
        stale = max(BACKGROUND_STALE_S, 10 * self.config.reload_interval_s)
        return time.monotonic() - self.background_last_ok < stale

    def background_status(self) -> dict[str, object]:
        return {"alive": self.background_alive(),
                "seconds_since_ok": round(time.monotonic() - self.background_last_ok, 1),
                "last_error": self.background_error}

    def replay_items(self, loaded: LoadedApp) -> None:
        """Apply every item upsert Redis holds to a freshly loaded bundle, before it is swapped in."""
        # forget what an earlier load of this app had applied: if this replay fails, the item sync
        # starts over for the fresh bundle instead of going on from the evicted one's position
        self.synced_version.pop(loaded.app_id, None)
        self.settle(loaded)
        try:
            store = self.stores[loaded.app_id]
        except KeyError:  # not an app this server serves (any more)
            return
        state, degraded = self._apply_changes(store, loaded, 0.0, set())
        if degraded:
            raise StoreUnavailable("Redis is unreachable: the live item changes cannot be replayed")
        if state is not None:
            self.synced_until[loaded.app_id], self.synced_edge[loaded.app_id] = state
        else:
            self.synced_until[loaded.app_id], self.synced_edge[loaded.app_id] = 0.0, set()
        self.synced_version[loaded.app_id] = loaded.version

    def sync_items(self) -> None:
        """Apply item upserts from Redis to each loaded catalog since the last sync."""
        for app_id, store in self.stores.items():
            loaded = self.registry.resident(app_id)  # an app not in memory gets every change when loaded
            if loaded is None:
                continue
            if self.synced_version.get(app_id) != loaded.version:  # loaded without a replay (a test, say)
                self.synced_until[app_id], self.synced_edge[app_id] = 0.0, set()
                self.synced_version[app_id] = loaded.version
            since, edge = self.synced_until.get(app_id, 0.0), self.synced_edge.get(app_id, set())
            state, _ = self._apply_changes(store, loaded, since, edge)
            if state is not None:
                self.synced_until[app_id], self.synced_edge[app_id] = state

    def _apply_changes(self, store: FeatureStore, loaded: LoadedApp, since: float,
                       edge: set[str]) -> tuple[tuple[float, set[str]] | None, bool]:
        """Apply the upserts after `since` (and at it, but those in `edge`); returns the new
        (since, edge) or None when nothing changed, and whether Redis could not be read."""
        changed, degraded = self.gate.try_run(lambda: store.updated_items_with_ts(since))
        # the range includes `since`: drop what was applied there already, or the newest item
        # would be re-applied (vectors, search overlay) every second
        changed = [(i, ts) for i, ts in changed or [] if not (ts == since and i in edge)]
        if degraded or not changed:
            return None, degraded
        ids = [item_id for item_id, _ in changed]
        rows, degraded = self.gate.try_run(lambda: store.items(ids))
        if degraded or rows is None:
            return None, True
        # each row is tagged with the update time listed before it was read: the row is at least
        # that new (a PUT writes the fields, then the time), so it never passes for newer than it is
        versions: dict[str, float] = {}
        for item_id, ts in changed:
            versions[item_id] = max(ts, versions.get(item_id, 0.0))
        loaded.catalog.apply_updates({i: r for i, r in zip(ids, rows) if r is not None}, versions)
        newest = max(ts for _, ts in changed)
        at_newest = {i for i, ts in changed if ts == newest}
        return (newest, (at_newest | edge if newest == since else at_newest)), False
