"""Every Redis key minirec uses, built by small pure functions (their exact strings are unit-tested).

Layout (`A` = app id, `U` = user id, `I` = item id):

    mr:{A:u:U}:recent       list   newest first, "item␟type␟ts" (LPUSH + LTRIM)
    mr:{A:u:U}:purchased    zset   item -> ts of the last purchase (read back within the TTL window)
    mr:{A:u:U}:shown        hash   item -> impressions since the last engagement (exposure fatigue)
    mr:{A:u:U}:clicked      zset   item -> ts of the last engagement (view/click/favorite/cart/purchase)
    mr:{A:u:U}:queries      list   newest first, the user's recent searches
    mr:{A:u:U}:profile      hash   merchant profile fields
    mr:platform:{U}:profile hash   platform profile fields + `consent`, shared by every app
    mr:A:ev:<event_id>      string idempotency marker (SET NX EX)
    mr:A:seeded:<fp16>      string marker: the profiles of a data folder were loaded at server start
    mr:A:item:I             hash   item fields upserted through the API
    mr:A:items:updated      zset   item -> ts of its last upsert
    mr:{A:pop}:items        zset   forward-decayed item popularity
    mr:{A:pop}:categories   zset   forward-decayed category popularity
    mr:{A:pop}:queries      zset   forward-decayed query counts (hot searches)
    mr:{A:pop}:t0           string reference time t0 of the forward-decayed scores

Redis Cluster hashes only the text between the first `{` and the next `}` (the hash tag), so:
all keys of one user in one app share a slot (one user's reads stay on one node); the decayed
counters and their t0 share a slot so that the Lua script updating them, and rebasing them, is
atomic; idempotency markers and item hashes carry no tag and spread over the cluster.

No two distinct (app, user, suffix) triples build the same key: app ids are restricted to
`[A-Za-z0-9_-]` (and `platform` is reserved), and suffixes never contain `}`, so a user id that
contains `}` or `:` still yields a key no other user can produce.
"""

from __future__ import annotations

import re

from recsys.bundle import RESERVED_APP_IDS

PREFIX = "mr"
#: Separator inside list entries of `recent` (ASCII unit separator: never part of an id in practice).
FIELD_SEP = "\x1f"

_APP_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_RESERVED_APPS = RESERVED_APP_IDS


def check_app(app: str) -> str:
    """Return `app` if it is a valid app id, else raise ValueError saying what is allowed."""
    if not isinstance(app, str) or not _APP_RE.match(app):
        raise ValueError(f"app id {app!r} must be 1-64 characters of letters, digits, '_' or '-'")
    if app in _RESERVED_APPS:
        raise ValueError(f"app id {app!r} is reserved (its keys would clash with shared platform keys)")
    return app


def _user(app: str, user_id: str, suffix: str) -> str:
    return f"{PREFIX}:{{{app}:u:{user_id}}}:{suffix}"


def recent(app: str, user_id: str) -> str:
    return _user(app, user_id, "recent")


def purchased(app: str, user_id: str) -> str:
    return _user(app, user_id, "purchased")


def shown(app: str, user_id: str) -> str:
    return _user(app, user_id, "shown")


def clicked(app: str, user_id: str) -> str:
    return _user(app, user_id, "clicked")


def user_queries(app: str, user_id: str) -> str:
    return _user(app, user_id, "queries")


def merchant_profile(app: str, user_id: str) -> str:
    return _user(app, user_id, "profile")


def platform_profile(user_id: str) -> str:
    """The platform's profile of a user: one key for all apps."""
    return f"{PREFIX}:platform:{{{user_id}}}:profile"


def event_seen(app: str, event_id: str) -> str:
    return f"{PREFIX}:{app}:ev:{event_id}"


def profiles_seeded(app: str, fingerprint: str) -> str:
    """Marker: this data folder's profiles were loaded into Redis (so workers load them once)."""
    return f"{PREFIX}:{app}:seeded:{fingerprint[:16]}"


def item(app: str, item_id: str) -> str:
    return f"{PREFIX}:{app}:item:{item_id}"


def items_updated(app: str) -> str:
    return f"{PREFIX}:{app}:items:updated"


def _pop(app: str, suffix: str) -> str:
    return f"{PREFIX}:{{{app}:pop}}:{suffix}"


def pop_items(app: str) -> str:
    return _pop(app, "items")


def pop_categories(app: str) -> str:
    return _pop(app, "categories")


def pop_queries(app: str) -> str:
    return _pop(app, "queries")


def pop_t0(app: str) -> str:
    return _pop(app, "t0")


def hash_tag(key: str) -> str:
    """The part of `key` Redis Cluster hashes (the whole key when it has no non-empty `{…}`)."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1:end]
    return key
