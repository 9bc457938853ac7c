"""Requests per second per API key, enforced across every worker and replica through Redis.

A Redis round trip per request would cost as much as the rest of a cheap request, so each worker
counts locally and, every `SYNC_S`, adds its counts to a per-key, per-second counter in Redis
(INCRBY, one pipeline) and reads back the total of all workers. A request is refused with 429 when
the last known total plus what this worker counted since exceeds the key's limit; the window is
one second, so the answer says `Retry-After: 1`. Between two syncs the workers together may let
through up to `SYNC_S` × their request rate more than the limit: with 50 ms, a 5% overshoot at
most. When Redis is unreachable each worker enforces the limit on its own counts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from typing import Any

log = logging.getLogger("minirec.ratelimit")

SYNC_S = 0.05


def _redis_key(key_id: str, window: int) -> str:
    return f"mr:ratelimit:{key_id}:{window}"


class RateLimiter:
    """Per-key request counts in one-second windows, shared through Redis (see the module docstring)."""

    def __init__(self, client: Any, clock=time.time) -> None:
        self.client = client
        self.clock = clock
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, int], int] = defaultdict(int)  # counted here, not yet in Redis
        self._total: dict[tuple[str, int], int] = {}  # the last total read back from Redis

    def allow(self, key_id: str, limit: int) -> bool:
        """Count one request of `key_id`; False if it would exceed `limit` per second (0 = no limit)."""
        if limit <= 0:
            return True
        slot = (key_id, int(self.clock()))
        with self._lock:
            if self._total.get(slot, 0) + self._pending[slot] >= limit:
                return False
            self._pending[slot] += 1
            return True

    def sync(self, redis_up: bool = True) -> None:
        """Add this worker's counts to Redis and read back every worker's totals (one round trip);
        with `redis_up` False (or if the round trip fails) the counts stay this worker's own."""
        with self._lock:
            pending, self._pending = self._pending, defaultdict(int)
            now = int(self.clock())
            self._total = {s: n for s, n in self._total.items() if s[1] >= now - 1}
        pending = {s: n for s, n in pending.items() if s[1] >= now - 1}  # older windows are over
        if not pending:
            return
        try:
            if not redis_up:
                raise ConnectionError("Redis is unreachable")
            pipe = self.client.pipeline(transaction=False)
            for (key_id, window), n in pending.items():
                pipe.incrby(_redis_key(key_id, window), n)
                pipe.expire(_redis_key(key_id, window), 5)
            replies = pipe.execute()
        except Exception as exc:  # noqa: BLE001 - Redis down: keep counting locally
            log.debug("rate limit sync failed: %s", exc)
            with self._lock:  # what Redis did not get stays counted here
                for slot, n in pending.items():
                    self._total[slot] = self._total.get(slot, 0) + n
            return
        with self._lock:
            for slot, total in zip(pending, replies[0::2]):
                self._total[slot] = int(total)
