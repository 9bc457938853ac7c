"""What every request shares: config, model registry, Redis-backed stores, event log, metrics."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from features.eventlog import EventLog
from features.redis_conn import RedisHandle
from features.store import FeatureStore, StoreError, StoreUnavailable
from serving.metrics import Metrics
from serving.registry import ModelRegistry
from serving.tenancy import ServerConfig

T = TypeVar("T")
log = logging.getLogger("minirec.serving")


class RedisGate:
    """A circuit breaker: after a Redis failure, skip Redis for `cooldown` seconds.

    While Redis is down every request would otherwise wait for a socket timeout; with the gate
    open they answer degraded at once, and the first call after the cooldown probes Redis again,
    so service recovers by itself when Redis returns.
    """

    def __init__(self, cooldown: float = 1.0) -> None:
        self.cooldown = cooldown
        self._open_until = 0.0
        self.last_error: str | None = None

    @property
    def degraded(self) -> bool:
        return time.monotonic() < self._open_until

    def run(self, call: Callable[[], T]) -> T:
        """Run a store call; raises StoreUnavailable at once while the gate is open."""
        if self.degraded:
            raise StoreUnavailable(self.last_error or "redis unavailable")
        try:
            return call()
        except StoreUnavailable as exc:
            self.last_error = str(exc)
            self._open_until = time.monotonic() + self.cooldown
            raise

    def try_run(self, call: Callable[[], T]) -> tuple[T | None, bool]:
        """(result, degraded): None and True instead of raising.

        Other store errors (a bug or a misconfigured Redis) are logged and also answered degraded:
        a read that fails must not take the request down with it."""
        try:
            return self.run(call), False
        except StoreUnavailable:
            return None, True
        except StoreError:
            log.exception("redis call failed")
            return None, True


@dataclass
class ServingContext:
    config: ServerConfig
    registry: ModelRegistry
    redis: RedisHandle
    stores: dict[str, FeatureStore]
    eventlog: EventLog
    metrics: Metrics
    gate: RedisGate = field(default_factory=RedisGate)
    #: Per app, the newest item-update time already applied to the loaded catalog.
    synced_until: dict[str, float] = field(default_factory=dict)
    #: Per app, the items already applied at exactly `synced_until` (Redis ranges are inclusive).
    synced_edge: dict[str, set[str]] = field(default_factory=dict)
    synced_version: dict[str, str] = field(default_factory=dict)

    def sync_items(self) -> None:
        """Apply item upserts from Redis to each loaded catalog (a fresh bundle replays them all)."""
        for app_id, store in self.stores.items():
            loaded = self.registry.get(app_id)
            if loaded is None:
                continue
            if self.synced_version.get(app_id) != loaded.version:
                self.synced_until[app_id] = 0.0
                self.synced_edge[app_id] = set()
                self.synced_version[app_id] = loaded.version
            since, edge = self.synced_until.get(app_id, 0.0), self.synced_edge.get(app_id, set())
            changed, degraded = self.gate.try_run(lambda: store.updated_items_with_ts(since))
            # the range includes `since`: drop what was applied there already, or the newest item
            # would be re-applied (vectors, search overlay) every second
            changed = [(i, ts) for i, ts in changed or [] if not (ts == since and i in edge)]
            if degraded or not changed:
                continue
            ids = [item_id for item_id, _ in changed]
            rows, degraded = self.gate.try_run(lambda: store.items(ids))
            if degraded or rows is None:
                continue
            loaded.catalog.apply_updates({i: r for i, r in zip(ids, rows) if r is not None})
            newest = max(ts for _, ts in changed)
            at_newest = {i for i, ts in changed if ts == newest}
            self.synced_edge[app_id] = at_newest | edge if newest == since else at_newest
            self.synced_until[app_id] = newest
