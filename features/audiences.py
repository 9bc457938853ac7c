"""Audiences on the platform side of Redis: membership, the per-user campaign index, the summary.

Layout (`X` = audience id, `U` = user id, `A` = app id):

    mr:platform:aud:{X}:members   set     the audience's user ids (never read through an app key)
    mr:platform:aud:{X}:summary   string  JSON: app_id, size, lift, insight, created / expires
    mr:platform:{U}:campaigns     zset    "A␟X" -> expiry (Unix s): what the placements route reads

Why Redis and not the app store's database: an audience holds up to hundreds of thousands of ids,
read one user at a time on the super-app's hot path (`GET /v1/platform/placements`), and expires;
Redis sets with a TTL and one sorted set per user answer a placement in one round trip and forget an
expired audience by themselves. The per-user key shares the platform profile's hash slot (Redis
Cluster), and every command touches one key. Expired entries of a user's index are skipped on read
and dropped on the next write; the index itself expires MAX_TTL_S after its last write.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from features.keys import FIELD_SEP, PREFIX
from features.store import _guard

#: Longest life of an audience (and of a user's campaign index after its last write).
MAX_TTL_S = 90 * 86400
_BATCH = 2000


def members_key(audience_id: str) -> str:
    return f"{PREFIX}:platform:aud:{{{audience_id}}}:members"


def summary_key(audience_id: str) -> str:
    return f"{PREFIX}:platform:aud:{{{audience_id}}}:summary"


def campaigns_key(user_id: str) -> str:
    return f"{PREFIX}:platform:{{{user_id}}}:campaigns"


class AudienceStore:
    """Audiences in Redis (`client` decodes responses, as `open_redis` makes them)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def save(self, audience_id: str, app_id: str, members: Sequence[str], summary: dict[str, Any],
             ttl_s: int, now: float | None = None) -> None:
        """Store the members and the summary for `ttl_s` seconds (at most MAX_TTL_S)."""
        if not 0 < ttl_s <= MAX_TTL_S:
            raise ValueError(f"ttl must be 1..{MAX_TTL_S} seconds")
        now = time.time() if now is None else now
        expires = now + ttl_s
        entry = f"{app_id}{FIELD_SEP}{audience_id}"
        with _guard("save audience"):
            for start in range(0, len(members), _BATCH):
                chunk = list(members[start:start + _BATCH])
                pipe = self.client.pipeline(transaction=False)
                pipe.sadd(members_key(audience_id), *chunk)
                for user in chunk:
                    key = campaigns_key(user)
                    pipe.zremrangebyscore(key, "-inf", now)
                    pipe.zadd(key, {entry: expires})
                    pipe.expire(key, MAX_TTL_S)
                pipe.execute()
            pipe = self.client.pipeline(transaction=False)
            if members:
                pipe.expire(members_key(audience_id), ttl_s)
            pipe.set(summary_key(audience_id), json.dumps({**summary, "app_id": app_id}, ensure_ascii=False),
                     ex=ttl_s)
            pipe.execute()

    def summary(self, audience_id: str) -> dict[str, Any] | None:
        """The stored summary (with its `app_id`), or None when unknown or expired."""
        with _guard("read audience"):
            raw = self.client.get(summary_key(audience_id))
        return None if raw is None else json.loads(raw)

    def placements(self, user_id: str, now: float | None = None) -> list[tuple[str, str]]:
        """(app_id, audience_id) of the live audiences holding `user_id`, latest expiry first."""
        now = time.time() if now is None else now
        with _guard("placements"):
            entries = self.client.zrevrangebyscore(campaigns_key(user_id), "+inf", f"({now}")
        out = []
        for entry in entries:
            app, _, audience = entry.partition(FIELD_SEP)
            if audience:
                out.append((app, audience))
        return out

    def size(self, audience_id: str) -> int:
        """Members stored (for the platform's own checks; no route returns it to a merchant)."""
        with _guard("audience size"):
            return int(self.client.scard(members_key(audience_id)))

    def platform_profiles(self, batch: int = 1000) -> list[dict[str, str]]:
        """Every platform profile in Redis, each with its `user_id` (SCAN, then HGETALL in batches)."""
        pattern = f"{PREFIX}:platform:{{*}}:profile"
        out: list[dict[str, str]] = []
        with _guard("read platform profiles"):
            keys = list(self.client.scan_iter(match=pattern, count=1000))
            for start in range(0, len(keys), batch):
                chunk = keys[start:start + batch]
                pipe = self.client.pipeline(transaction=False)
                for key in chunk:
                    pipe.hgetall(key)
                for key, fields in zip(chunk, pipe.execute()):
                    user = key[len(f"{PREFIX}:platform:{{"):-len("}:profile")]
                    if fields:
                        out.append({**fields, "user_id": user})
        return out
