"""Risk control: events scored as they arrive, users and sources judged not human flagged in Redis.

`RiskScorer.score` runs once per `POST events` batch, on the fresh (claimed) events, in **one**
pipeline round trip: it reads the flags of the batch's users, client IP and key, and adds the
batch's counts to small windowed counters (INCRBY + EXPIRE; a key per user and window, the window's
index in the key, so every counter expires by itself). Counts are folded per key in Python first, so
a batch of 500 events of one user costs a handful of commands, not 500. The signals:

- ``rate``: a user's actions (every event but impressions) received in one minute, and impressions
  in one minute; a client IP's and an API key's actions in one minute (source signals);
- ``same_second``: a user's actions that carry the same `ts` second (a human cannot click dozens of
  times in one second; a page's impressions come together, so they are not counted);
- ``identical``: the same user repeating the same action on the same item or query in 10 minutes;
- ``orphan_click``: clicks whose `request_id` had no impression from that user (in the batch, or
  in the last hour);
- ``impossible_purchase``: a purchase of an item the user did not view, click or cart in the last
  `session_hours` (read from the user's `clicked` set, plus the batch itself).

An event of a flagged user or source gets `flag` ("user:<reason>", "ip:<reason>" or
"key:<reason>"): it is logged with it, never counted in the shared decayed counters (popularity,
categories, hot searches), and the export and analytics leave out flagged events and every event of
a user with a "user:" flag (see offline_training/export.py, analytics/credit.py). Counts a user added
to those counters before being flagged are subtracted: each user keeps a ledger of what they added
(`risk_ledger`, forward-decayed against its own anchor, so the subtraction is exact), read and
reversed once, when the flag is set.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from features import keys
from vocab.queries import normalize_query

#: Minutes an orphan click's `request_id` impressions are remembered (per user).
REQUEST_MEMORY_S = 3600
#: Reasons a user or source is flagged, in the order they are checked.
REASONS = ("rate", "impressions", "same_second", "identical", "orphan_click", "impossible_purchase")
#: How a flag names its subject in the event log ("user:rate", "ip:rate", "key:rate").
_LABEL = {"u": "user", "ip": "ip", "key": "key"}
#: Item-engaging events that make a later purchase of the item plausible.
_LEADS_TO_PURCHASE = frozenset({"view", "click", "favorite", "cart"})


class _Event(Protocol):
    event_id: str
    user_id: str
    type: str
    ts: float
    item_id: str | None
    query: str | None
    request_id: str | None
    flag: str | None


@dataclass(frozen=True)
class RiskSettings:
    """`[apps.<id>.risk]` thresholds (0 turns a signal off). A user or source is flagged when a
    counter *exceeds* its threshold; the defaults sit far above what a shopper does (docs/risk.md)."""

    enabled: bool = True
    #: Actions (all events but impressions) of one user received in one minute.
    user_actions_per_minute: int = 120
    #: Impressions of one user received in one minute (a page of 20 items is 20).
    user_impressions_per_minute: int = 2000
    #: Actions of one user carrying the same `ts` second.
    same_second_actions: int = 20
    #: The same user, event type and item (or query) in one 10-minute window.
    identical_per_10_minutes: int = 20
    #: Clicks of one user in an hour whose request_id showed them nothing (0 for clients that send
    #: no impressions).
    orphan_clicks_per_hour: int = 10
    #: Purchases of one user in a day with no view, click or cart of the item in `session_hours`.
    impossible_purchases_per_day: int = 3
    session_hours: float = 2.0
    #: Actions from one client IP in one minute (off by default: a merchant server relaying events, or
    #: a carrier NAT, puts many shoppers behind one IP; turn on when clients post directly).
    ip_actions_per_minute: int = 0
    #: Actions made with one API key in one minute (off by default: an app's shoppers share its key).
    key_actions_per_minute: int = 0
    #: Proxies in front of the server that append to X-Forwarded-For (0: the socket's peer is the
    #: client; N: the N-th address from the right of X-Forwarded-For).
    trusted_proxies: int = 0
    #: How long a flag lasts.
    flag_hours: float = 24.0
    #: A user's contributions to the shared counters are remembered this long after their last
    #: event, to be subtracted if they are flagged.
    ledger_hours: float = 6.0


def client_ip(peer: str | None, forwarded_for: str | None, trusted_proxies: int) -> str:
    """The client's IP: the socket peer, or with `trusted_proxies` = N the N-th entry from the right
    of X-Forwarded-For (what the last trusted proxy saw); the peer when the header is shorter."""
    if trusted_proxies > 0 and forwarded_for:
        hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
        if len(hops) >= trusted_proxies:
            return hops[-trusted_proxies][:64]
    return (peer or "unknown")[:64]


def key_tag(api_key: str | None) -> str:
    """A short, non-reversible name of an API key for its counters and flag."""
    return hashlib.sha256((api_key or "").encode()).hexdigest()[:12]


def _target(ev: _Event) -> str:
    if ev.type == "search" or (ev.type == "impression" and not ev.item_id):
        return "q" + keys.FIELD_SEP + normalize_query(ev.query or "")
    return "i" + keys.FIELD_SEP + (ev.item_id or "")


def _risk(app: str, *parts: str) -> str:
    return ":".join((keys.PREFIX, app, "risk", *parts))


def flag_key(app: str, kind: str, name: str) -> str:
    """The flag of a user (`u`), client IP (`ip`) or API key (`key`): JSON {reason, ts, value}."""
    return _risk(app, "flag", kind, name)


def flagged_index(app: str) -> str:
    """Sorted set "kind␟name" -> time flagged, for the dashboard and operators."""
    return _risk(app, "flagged")


def ledger(app: str, user_id: str) -> str:
    """A user's contributions to the decayed counters (same slot as the user's other keys)."""
    return f"{keys.PREFIX}:{{{app}:u:{user_id}}}:risk_ledger"


def _requests(app: str, user_id: str) -> str:
    return f"{keys.PREFIX}:{{{app}:u:{user_id}}}:risk_requests"


@dataclass
class _Counter:
    key: str
    ttl: int
    limit: int
    subject: tuple[str, str]  # ("u" | "ip" | "key", name)
    reason: str
    add: int


class RiskScorer:
    """Scores batches of one app's events against `settings` (see the module docstring)."""

    def __init__(self, app: str, settings: RiskSettings) -> None:
        self.app = app
        self.s = settings

    def _counters(self, events: Sequence[_Event], now: float, ip: str, key: str,
                  stamped_at: float | None) -> list[_Counter]:
        s, app = self.s, self.app
        minute, ten = int(now // 60), int(now // 600)
        found: dict[str, _Counter] = {}

        def count(limit: int, ttl: int, subject: tuple[str, str], reason: str, *parts: str) -> None:
            if limit <= 0:
                return
            k = _risk(app, *parts)
            if k in found:
                found[k].add += 1
            else:
                found[k] = _Counter(k, ttl, limit, subject, reason, 1)

        for ev in events:
            user = ("u", ev.user_id)
            action = ev.type != "impression"
            if action:
                count(s.ip_actions_per_minute, 120, ("ip", ip), "rate", "ip", ip, str(minute))
                count(s.key_actions_per_minute, 120, ("key", key), "rate", "key", key, str(minute))
            if not ev.user_id:
                continue  # an anonymous search: only its source is counted
            if action:
                count(s.user_actions_per_minute, 120, user, "rate", "u", ev.user_id, "m", str(minute))
                if ev.ts != stamped_at:  # only times the client claims: the server's are arrival times
                    count(s.same_second_actions, 120, user, "same_second", "u", ev.user_id, "s", str(int(ev.ts)))
                count(s.identical_per_10_minutes, 1200, user, "identical", "u", ev.user_id, "x", str(ten),
                      ev.type, _target(ev))
            else:
                count(s.user_impressions_per_minute, 120, user, "impressions", "u", ev.user_id, "i", str(minute))
        return list(found.values())

    def score(self, client: Any, events: Sequence[_Event], now: float, ip: str, key: str,
              extra_reads: Sequence[tuple[Any, ...]] = (), extra_out: list[Any] | None = None,
              stamped_at: float | None = None) -> list[tuple[str, str, str, float]]:
        """Set `flag` on the events of flagged users and sources (one round trip through `client`,
        a redis-py client); returns the flags newly raised as (kind, name, reason, value) — the
        caller writes them (`write_flags`) with the batch's other writes. `extra_reads` (method
        name, *args) ride along in the same round trip; their replies are appended to `extra_out`.
        Events whose ts is `stamped_at` got it from the server (the client sent none): the
        same-second signal ignores them."""
        if not self.s.enabled or not events:
            return []
        s, app = self.s, self.app
        counters = self._counters(events, now, ip, key, stamped_at)
        users = sorted({ev.user_id for ev in events if ev.user_id})
        subjects = [("u", u) for u in users] + [("ip", ip)] + ([("key", key)] if s.key_actions_per_minute else [])
        # impressions of this batch, by (user, request_id); clicks checked against them and Redis
        shown = {(ev.user_id, ev.request_id) for ev in events if ev.type == "impression" and ev.request_id}
        clicks = [ev for ev in events if ev.type == "click" and ev.request_id and ev.user_id
                  and (ev.user_id, ev.request_id) not in shown] if s.orphan_clicks_per_hour else []
        engaged: dict[tuple[str, str], float] = {}
        purchases: list[_Event] = []
        for ev in sorted(events, key=lambda e: e.ts):
            if ev.type in _LEADS_TO_PURCHASE and ev.item_id:
                engaged[(ev.user_id, ev.item_id)] = ev.ts
            elif ev.type == "purchase" and s.impossible_purchases_per_day and (ev.user_id, ev.item_id or "") not in engaged:
                purchases.append(ev)
        pipe = client.pipeline(transaction=False)
        for kind, name in subjects:
            pipe.get(flag_key(app, kind, name))
        for c in counters:
            pipe.incrby(c.key, c.add)
            pipe.expire(c.key, c.ttl)
        for user_id, request_id in shown:
            pipe.sadd(_requests(app, user_id), request_id or "")
            pipe.expire(_requests(app, user_id), REQUEST_MEMORY_S)
        for ev in clicks:
            pipe.sismember(_requests(app, ev.user_id), ev.request_id or "")
        for ev in purchases:
            pipe.zscore(keys.clicked(app, ev.user_id), ev.item_id or "")
        for method, *args in extra_reads:
            getattr(pipe, method)(*args)
        replies = pipe.execute()
        if extra_reads and extra_out is not None:
            extra_out.extend(replies[len(replies) - len(extra_reads):])
        flags: dict[tuple[str, str], str] = {}
        for (kind, name), raw in zip(subjects, replies):
            if raw:
                try:
                    flags[(kind, name)] = f"{_LABEL[kind]}:{json.loads(raw).get('reason', 'flagged')}"
                except (ValueError, AttributeError):
                    flags[(kind, name)] = f"{_LABEL[kind]}:flagged"
        at = len(subjects)
        raised: dict[tuple[str, str], tuple[str, float]] = {}

        def exceed(subject: tuple[str, str], reason: str, value: float) -> None:
            if subject not in flags and subject not in raised:
                raised[subject] = (reason, value)

        for c in counters:
            value = int(replies[at])
            if value > c.limit:
                exceed(c.subject, c.reason, value)
            at += 2
        at += 2 * len(shown)
        extra: list[_Counter] = []
        hour, day = int(now // 3600), int(now // 86400)
        orphan_users = Counter(ev.user_id for ev, member in zip(clicks, replies[at:at + len(clicks)]) if not member)
        at += len(clicks)
        for user_id, n in orphan_users.items():
            extra.append(_Counter(_risk(app, "u", user_id, "o", str(hour)), 7200, s.orphan_clicks_per_hour,
                                  ("u", user_id), "orphan_click", n))
        session_s = s.session_hours * 3600
        bad = Counter(ev.user_id for ev, last in zip(purchases, replies[at:at + len(purchases)])
                      if last is None or float(last) < ev.ts - session_s)
        for user_id, n in bad.items():
            extra.append(_Counter(_risk(app, "u", user_id, "p", str(day)), 2 * 86400,
                                  s.impossible_purchases_per_day, ("u", user_id), "impossible_purchase", n))
        if extra:  # rare (a shopper's clicks follow impressions): a second round trip only then
            pipe = client.pipeline(transaction=False)
            for c in extra:
                pipe.incrby(c.key, c.add)
                pipe.expire(c.key, c.ttl)
            for c, value in zip(extra, pipe.execute()[::2]):
                if int(value) > c.limit:
                    exceed(c.subject, c.reason, int(value))
        for subject, (reason, _) in raised.items():
            flags[subject] = f"{_LABEL[subject[0]]}:{reason}"
        for ev in events:
            ev.flag = (flags.get(("u", ev.user_id)) if ev.user_id else None) or flags.get(("ip", ip)) \
                or flags.get(("key", key))
        return [(kind, name, reason, value) for (kind, name), (reason, value) in raised.items()]

    def write_flags(self, pipe: Any, raised: Iterable[tuple[str, str, str, float]], now: float) -> None:
        """Queue the writes of newly raised flags on `pipe`."""
        ttl = max(1, int(self.s.flag_hours * 3600))
        for kind, name, reason, value in raised:
            record = json.dumps({"reason": reason, "ts": round(now, 3), "value": value})
            pipe.set(flag_key(self.app, kind, name), record, ex=ttl)
            pipe.zadd(flagged_index(self.app), {f"{kind}{keys.FIELD_SEP}{name}": now})
        pipe.zremrangebyscore(flagged_index(self.app), "-inf", f"({now - ttl}")  # expired flags


def ledger_increment(weight: float, ts: float, anchor: float, half_life_s: float) -> float:
    """A contribution `weight` at `ts` as stored in a ledger anchored at `anchor` (forward decay)."""
    return weight * math.exp2(min(60.0, (ts - anchor) / half_life_s))


# Subtracts ledger entries from the decayed sorted sets of one app (KEYS as INCREMENT_SCRIPT's).
# ARGV = half_life_s, then (set index, member, ledger value, ledger anchor) quadruples; a member whose
# score falls to ~0 (the user was its only source) is removed.
SUBTRACT_SCRIPT = """
local hl = tonumber(ARGV[1])
local t0 = tonumber(redis.call('GET', KEYS[1]))
if not t0 then return 0 end
local removed = 0
for i = 2, #ARGV, 4 do
  local key = KEYS[tonumber(ARGV[i])]
  local dec = tonumber(ARGV[i + 2]) * 2 ^ ((tonumber(ARGV[i + 3]) - t0) / hl)
  local left = redis.call('ZINCRBY', key, string.format('%.17g', -dec), ARGV[i + 1])
  if tonumber(left) <= dec * 1e-9 then
    redis.call('ZREM', key, ARGV[i + 1])
    removed = removed + 1
  end
end
return removed
"""
