"""Real-time features of one app in Redis: events, user state, profiles, item upserts, popularity.

Every public method is at most one pipeline round trip (`record`: two), never one per key, and no
command touches two keys, so the same code runs on a single Redis and on Redis Cluster. Redis
failures surface as `StoreUnavailable` (cannot reach Redis: degrade) or `StoreError` (anything
else); redis-py exceptions never leak. Needs Redis >= 6.2 (ZADD GT).
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import redis.exceptions as rex

from features import keys
from features.decay import DROP_BELOW, INCREMENT_SCRIPT, MAX_SKEW_S, REBASE_EXPONENT, decayed
from features.risk import SUBTRACT_SCRIPT, RiskScorer, RiskSettings, ledger, ledger_increment
from recsys.schema import ITEMS
from recsys.user_state import UserState
from vocab.queries import MAX_QUERY_CHARS, RECENT_MAX, normalize_query

#: A claim still pending after this many seconds belongs to a request that died before logging.
PENDING_TAKEOVER_S = 10.0
#: Event types the API accepts: the interaction types of the data contract (but `rating`) + search.
EVENT_TYPES: tuple[str, ...] = ("impression", "view", "click", "favorite", "cart", "purchase", "search")
#: Events that show interest in an item: they end its exposure fatigue and mark it clicked.
ENGAGED: frozenset[str] = frozenset({"view", "click", "favorite", "cart", "purchase"})
#: Popularity weight per event type (the training defaults; a search counts once for its query).
DEFAULT_WEIGHTS: Mapping[str, float] = {"impression": 0.0, "view": 1.0, "click": 2.0, "favorite": 4.0,
                                        "cart": 6.0, "purchase": 10.0, "search": 1.0}

_UNAVAILABLE = (rex.ConnectionError, rex.TimeoutError, rex.ClusterError, rex.TryAgainError,
                rex.ReadOnlyError, rex.SlotNotCoveredError)
_ITEM_KINDS = {c.name: c.kind for c in ITEMS.columns if c.name != "item_id"}
_TRUE = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


class StoreError(Exception):
    """A Redis command failed for a reason other than reachability (a bug or a misconfiguration)."""


class StoreUnavailable(StoreError):
    """Redis cannot be reached (down, timed out, cluster slot down): answer degraded, retry later."""


@contextmanager
def _guard(what: str) -> Iterator[None]:
    """Turn redis-py exceptions into ours, naming the operation."""
    try:
        yield
    except _UNAVAILABLE as exc:
        raise StoreUnavailable(f"redis unavailable during {what}: {exc}") from exc
    except (rex.RedisError, rex.RedisClusterException) as exc:
        raise StoreError(f"redis error during {what}: {exc}") from exc


@dataclass
class EventRecord:
    """One event as the store applies it. Invalid fields raise ValueError naming the field."""

    event_id: str
    user_id: str
    type: str
    ts: float
    item_id: str | None = None
    query: str | None = None
    request_id: str | None = None
    category: str | None = None
    value: float = 1.0
    #: Search events: where the query came from (typed, shading, discovery, hot, suggest).
    source: str | None = None
    #: Purchases: the amount paid (for the analytics' GMV).
    amount: float | None = None
    #: Set by risk scoring (features/risk.py) when the user or source is judged not human, e.g.
    #: "user:rate": the event is logged with it but kept out of shared counters, exports, analytics.
    flag: str | None = None

    @property
    def is_query_impression(self) -> bool:
        """A shading word or discovery chip shown (an impression of a query, not of an item)."""
        return self.type == "impression" and not self.item_id and bool(self.query)

    def __post_init__(self) -> None:
        if not isinstance(self.event_id, str) or not self.event_id:
            raise ValueError("event_id must be a non-empty string")
        if self.type not in EVENT_TYPES:
            raise ValueError(f"type {self.type!r} is not one of {', '.join(EVENT_TYPES)}")
        if not isinstance(self.user_id, str):
            raise ValueError("user_id must be a string ('' only for an anonymous search)")
        if not isinstance(self.ts, (int, float)) or not 0 <= self.ts < 4_102_444_800:
            raise ValueError(f"ts {self.ts!r} must be Unix seconds (not milliseconds)")
        if not isinstance(self.value, (int, float)) or not math.isfinite(self.value) or self.value < 0:
            raise ValueError(f"value {self.value!r} must be a finite number >= 0")
        if self.amount is not None and (not isinstance(self.amount, (int, float)) or not math.isfinite(self.amount)
                                        or self.amount < 0):
            raise ValueError(f"amount {self.amount!r} must be a finite number >= 0")
        if self.type == "search" or self.is_query_impression:
            if not isinstance(self.query, str) or not self.query.strip():
                raise ValueError(f"a {self.type} event needs a non-empty query")
        else:
            if not isinstance(self.item_id, str) or not self.item_id:
                raise ValueError(f"a {self.type} event needs an item_id")
            if not self.user_id:
                raise ValueError(f"a {self.type} event needs a user_id")


def _pending_since(value: str | None) -> float:
    """When a pending claim was made; +inf for a done (or unreadable) one, which is never taken over."""
    if value and value.startswith("pending:"):
        try:
            return float(value.split(":")[1])
        except ValueError:
            return float("inf")
    return float("inf")


#: What `claim_states` finds for each event: claimed by this request; done by an earlier one (a
#: duplicate); claimed by another request that has not logged it yet (it may still fail or die).
NEW, DONE, PENDING = "new", "done", "pending"


def _recent_entries(raw: list[str]) -> list[tuple[str, str, float]]:
    """Entries of a user's recent-items list → (item_id, event type, ts); malformed ones skipped."""
    entries = []
    for entry in raw:
        parts = entry.rsplit(keys.FIELD_SEP, 2)
        if len(parts) == 3:
            entries.append((parts[0], parts[1], float(parts[2])))
    return entries



def _fmt_ts(ts: float) -> str:
    return str(int(ts)) if float(ts).is_integer() else repr(float(ts))


def _encode_item_value(name: str, value: Any) -> str:
    """An item field as stored in its hash; raises ValueError for a value of the wrong kind."""
    kind = _ITEM_KINDS.get(name)
    if kind is None:
        raise ValueError(f"unknown item field {name!r} (known: {', '.join(_ITEM_KINDS)})")
    if kind == "bool":
        if isinstance(value, str) and value.strip().lower() in _TRUE:
            value = _TRUE[value.strip().lower()]
        if not isinstance(value, bool):
            raise ValueError(f"item field {name!r} must be a boolean, got {value!r}")
        return "1" if value else "0"
    if kind in ("int", "float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"item field {name!r} must be a number, got {value!r}")
        if value < 0:
            raise ValueError(f"item field {name!r} must be >= 0, got {value!r}")
        if kind == "int":
            if not float(value).is_integer():
                raise ValueError(f"item field {name!r} must be an integer, got {value!r}")
            return str(int(value))
        return repr(float(value))
    if not isinstance(value, str):
        raise ValueError(f"item field {name!r} must be a string, got {value!r}")
    return value


def _decode_item(raw: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, text in raw.items():
        kind = _ITEM_KINDS.get(name)
        if kind == "bool":
            out[name] = text == "1"
        elif kind == "int":
            out[name] = int(text)
        elif kind == "float":
            out[name] = float(text)
        else:
            out[name] = text
    return out


@dataclass
class RiskVerdict:
    """What `FeatureStore.score` found for a batch: flags newly raised (kind, name, reason, value) and
    the ledger anchor of each user (None: no ledger yet)."""

    raised: list[tuple[str, str, str, float]] = field(default_factory=list)
    anchors: dict[str, float | None] = field(default_factory=dict)
    settings: RiskSettings | None = None


@dataclass
class _UserWrites:
    """One user's share of a batch, folded in time order so that each key gets one or two commands."""

    recent: list[str] = field(default_factory=list)  # encoded entries, oldest first
    queries: list[str] = field(default_factory=list)
    shown: dict[str, int] = field(default_factory=dict)  # impressions after the item's last engagement
    engaged: dict[str, float] = field(default_factory=dict)  # item -> newest engagement ts
    purchased: dict[str, float] = field(default_factory=dict)

    def add(self, item: str, kind: str, ts: float) -> None:
        if kind == "impression":
            self.shown[item] = self.shown.get(item, 0) + 1
            return
        self.recent.append(keys.FIELD_SEP.join((item, kind, _fmt_ts(ts))))
        if kind in ENGAGED:
            self.shown.pop(item, None)
            self.engaged[item] = max(ts, self.engaged.get(item, ts))
        if kind == "purchase":
            self.purchased[item] = max(ts, self.purchased.get(item, ts))


class FeatureStore:
    """Real-time features of app `app` in Redis (see `features.keys` for the layout).

    `client` must decode responses (`open_redis` makes such clients). Durations are configurable:
    `purchased_ttl_days` (a purchase hides the item that long), `shown_ttl_hours` (impression counts
    reset that long after the user's last impression), `history_ttl_days` (recent items, clicks and
    queries of an idle user expire), `half_life_hours` (popularity and hot searches),
    `dedupe_ttl_hours` (how long an event_id is remembered: about 100 bytes of Redis per event).
    """

    def __init__(
        self,
        client: Any,
        app: str,
        *,
        recent_max: int = RECENT_MAX,
        queries_max: int = 20,
        clicked_max: int = 500,
        purchased_ttl_days: float = 30.0,
        shown_ttl_hours: float = 24.0,
        history_ttl_days: float = 30.0,
        half_life_hours: float = 24.0,
        dedupe_ttl_hours: float = 24.0,
        popularity_max: int = 100_000,
        weights: Mapping[str, float] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not client.get_connection_kwargs().get("decode_responses"):
            raise ValueError("FeatureStore needs a Redis client with decode_responses=True (open_redis makes one)")
        if min(recent_max, queries_max, clicked_max, popularity_max) < 1:
            raise ValueError("recent_max, queries_max, clicked_max and popularity_max must be >= 1")
        if min(purchased_ttl_days, shown_ttl_hours, history_ttl_days, half_life_hours, dedupe_ttl_hours) <= 0:
            raise ValueError("TTLs and the half-life must be > 0")
        self._r = client
        self.app = keys.check_app(app)
        self.recent_max = recent_max
        self.queries_max = queries_max
        self.clicked_max = clicked_max
        self.popularity_max = popularity_max
        self.purchased_ttl_s = int(purchased_ttl_days * 86400)
        self.shown_ttl_s = max(1, int(shown_ttl_hours * 3600))
        self.history_ttl_s = int(history_ttl_days * 86400)
        self.half_life_s = half_life_hours * 3600.0
        self.dedupe_ttl_s = max(1, int(dedupe_ttl_hours * 3600))
        self.weights = dict(DEFAULT_WEIGHTS if weights is None else weights)
        self._clock = clock

    def _pipe(self) -> Any:
        return self._r.pipeline(transaction=False)

    # --- events ------------------------------------------------------------------------------

    def record(self, events: Sequence[EventRecord], risk: RiskSettings | None = None, ip: str = "unknown",
               key: str = "") -> list[bool]:
        """Claim, score and apply a batch of events; per event True if newly applied, False if its
        event_id was seen (`claim`, then `score` and `apply` of the claimed ones). With `risk`, events
        of users or sources judged not human get their `flag` (features/risk.py)."""
        claimed = self.claim(events)
        fresh = [ev for ev, new in zip(events, claimed) if new]
        self.apply(fresh, self.score(fresh, risk, ip, key) if risk is not None else None)
        return claimed

    def score(self, events: Sequence[EventRecord], risk: RiskSettings, ip: str, key: str,
              stamped_at: float | None = None) -> RiskVerdict:
        """Risk-score claimed events (one round trip, between `claim` and logging, so that the log
        holds each event's `flag`); pass the verdict to `apply`. `stamped_at`: the ts the server gave
        events sent without one."""
        verdict = RiskVerdict(settings=risk)
        if not risk.enabled or not events:
            return verdict
        users = sorted({ev.user_id for ev in events if ev.user_id})
        with _guard("score"):
            verdict.raised = RiskScorer(self.app, risk).score(
                self._r, events, self._clock(), ip, key,
                extra_reads=[("hget", ledger(self.app, u), "a") for u in users], extra_out=(out := []),
                stamped_at=stamped_at)
        verdict.anchors = {u: (float(a) if a else None) for u, a in zip(users, out)}
        return verdict

    def claim(self, events: Sequence[EventRecord]) -> list[bool]:
        """Claim each event's id for this request (one round trip); per event True if it is new."""
        return [state == NEW for state in self.claim_states(events)]

    def claim_states(self, events: Sequence[EventRecord]) -> list[str]:
        """Claim each event's id for this request (one round trip); per event NEW, DONE or PENDING.

        A claim starts as pending and becomes done when `apply` ran: the server logs the claimed
        events durably between the two, so an event is logged once however often it is retried. A
        claim left pending for `PENDING_TAKEOVER_S` (the process died before logging it) is taken
        over by a retry, so a crash never loses an event (it may, rarely, log it twice: the export
        keeps the first of each event_id); before that, a retry finds it PENDING, not a duplicate:
        the event may not be logged yet. A duplicate inside the batch is caught too (DONE)."""
        if not events:
            return []
        now = self._clock()
        mine = f"pending:{now:.3f}:{uuid.uuid4().hex[:12]}"  # tells this request's claims from others'
        ids = [keys.event_seen(self.app, ev.event_id) for ev in events]
        # the same round trip looks up the categories `apply` needs (the route fills them in for
        # items of the loaded bundle; new items are known only to Redis)
        lookups = [i for i, ev in enumerate(events)
                   if ev.type != "search" and not ev.category and self.weights.get(ev.type, 0.0) > 0]
        with _guard("claim"):
            pipe = self._pipe()
            for key in ids:
                pipe.set(key, mine, nx=True, ex=self.dedupe_ttl_s)
                pipe.get(key)
            for i in lookups:
                pipe.hget(keys.item(self.app, events[i].item_id or ""), "category")
            replies = pipe.execute()
        for i, category in zip(lookups, replies[2 * len(ids):]):
            if category:
                events[i].category = category
        claimed = [bool(r) for r in replies[0:2 * len(ids):2]]
        stale = [i for i, (new, value) in enumerate(zip(claimed, replies[1:2 * len(ids):2]))
                 if not new and _pending_since(value) < now - PENDING_TAKEOVER_S]
        if stale:
            with _guard("claim"):
                pipe = self._pipe()
                for i in stale:
                    pipe.set(ids[i], mine, ex=self.dedupe_ttl_s)
                pipe.execute()
            taken: set[str] = set()
            for i in stale:  # one claim per id, also when the batch repeats it
                if ids[i] not in taken:
                    claimed[i] = True
                    taken.add(ids[i])
        ours = {key for key, new in zip(ids, claimed) if new}
        values = replies[1:2 * len(ids):2]
        return [NEW if new else PENDING if key not in ours and (value or "").startswith("pending:") and value != mine
                else DONE for key, new, value in zip(ids, claimed, values)]

    def release(self, events: Sequence[EventRecord]) -> None:
        """Forget the claims of events that could not be logged, so that a retry is not a duplicate."""
        if events:
            with _guard("release"):
                pipe = self._pipe()
                for ev in events:
                    pipe.delete(keys.event_seen(self.app, ev.event_id))
                pipe.execute()

    def apply(self, events: Sequence[EventRecord], verdict: RiskVerdict | None = None) -> None:
        """Apply claimed events to the real-time features and mark their claims done, in one round
        trip (two when `verdict` raised a user flag: that user's ledger is read to subtract it). If
        Redis dies before, those events stay claimed but unapplied: real-time features are at most
        once, the event log is the durable record."""
        if events:
            with _guard("record"):
                self._apply(list(events), verdict)

    def _apply(self, fresh: list[EventRecord], verdict: RiskVerdict | None = None) -> None:
        app, now = self.app, self._clock()
        users: dict[str, _UserWrites] = {}
        counts: list[Any] = []  # quadruples for the decay script: (set index, member, weight, ts)
        # what each unflagged user adds to the shared counters, kept to be subtracted if flagged later
        ledgers: dict[str, dict[str, float]] = {}
        anchors = verdict.anchors if verdict is not None else {}
        for ev in sorted(fresh, key=lambda e: e.ts):  # time order within the batch
            category = ev.category
            # flagged traffic never reaches the shared counters (popularity, hot searches)
            weight = 0.0 if ev.flag else self.weights.get(ev.type, 0.0) * ev.value
            ts = min(float(ev.ts), now + MAX_SKEW_S)  # a clock far ahead must not dominate the counters
            if ev.is_query_impression:
                continue  # for the analytics only: no real-time feature reads it
            added: list[tuple[int, str]] = []
            if ev.type == "search":
                query = normalize_query(ev.query or "")
                if ev.user_id:
                    users.setdefault(ev.user_id, _UserWrites()).queries.append(query)
                if weight > 0:
                    counts += [4, query, weight, ts]
                    added.append((4, query))
            else:
                item = ev.item_id or ""
                users.setdefault(ev.user_id, _UserWrites()).add(item, ev.type, ev.ts)
                if weight > 0:
                    counts += [2, item, weight, ts]
                    added.append((2, item))
                    if category:
                        counts += [3, category, weight, ts]
                        added.append((3, category))
            if added and ev.user_id and ev.user_id in anchors:
                anchor = anchors[ev.user_id]
                if anchor is None:
                    anchor = anchors[ev.user_id] = ts
                    ledgers.setdefault(ev.user_id, {})["a"] = anchor
                entry = ledgers.setdefault(ev.user_id, {})
                for index, member in added:
                    field_name = f"{index}{keys.FIELD_SEP}{member}"
                    entry[field_name] = entry.get(field_name, 0.0) + ledger_increment(weight, ts, anchor,
                                                                                      self.half_life_s)
        subtract = self._flag_subtractions(verdict)
        pipe = self._pipe()
        if verdict is not None and verdict.raised and verdict.settings is not None:
            RiskScorer(app, verdict.settings).write_flags(pipe, verdict.raised, now)
        ledger_ttl = max(1, int((verdict.settings.ledger_hours if verdict and verdict.settings else 6.0) * 3600))
        for user, entry in ledgers.items():
            key = ledger(app, user)
            if "a" in entry:
                pipe.hsetnx(key, "a", repr(entry.pop("a")))
            for name, value in entry.items():
                pipe.hincrbyfloat(key, name, value)
            pipe.expire(key, ledger_ttl)
        for user, args in subtract.items():
            if args:
                pipe.execute_command("EVAL", SUBTRACT_SCRIPT, 4, keys.pop_t0(app), keys.pop_items(app),
                                     keys.pop_categories(app), keys.pop_queries(app), self.half_life_s, *args)
            pipe.delete(ledger(app, user))
        for ev in fresh:
            pipe.set(keys.event_seen(app, ev.event_id), "done", xx=True, keepttl=True)
        for user, writes in users.items():
            self._write_user(pipe, user, writes, now)
        if counts:
            # execute_command, not pipe.eval(): redis-py's cluster pipeline has no eval() method but
            # routes a raw EVAL by its keys (all in one slot here).
            pipe.execute_command("EVAL", INCREMENT_SCRIPT, 4, keys.pop_t0(app), keys.pop_items(app),
                                 keys.pop_categories(app), keys.pop_queries(app), now, self.half_life_s,
                                 REBASE_EXPONENT, DROP_BELOW, self.popularity_max, *counts)
        pipe.execute()

    def _flag_subtractions(self, verdict: RiskVerdict | None) -> dict[str, list[Any]]:
        """Per newly flagged user, the subtraction script's arguments undoing what their ledger says
        they added to the shared counters (one read round trip, only when a user flag was raised)."""
        flagged = [name for kind, name, _, _ in (verdict.raised if verdict else []) if kind == "u"]
        if not flagged:
            return {}
        pipe = self._pipe()
        for user in flagged:
            pipe.hgetall(ledger(self.app, user))
        out: dict[str, list[Any]] = {}
        for user, entries in zip(flagged, pipe.execute()):
            anchor = entries.pop("a", None)
            args: list[Any] = []
            if anchor is not None:
                for name, value in entries.items():
                    index, _, member = name.partition(keys.FIELD_SEP)
                    if index in ("2", "3", "4") and float(value) > 0:
                        args += [int(index), member, value, anchor]
            out[user] = args
        return out

    def _write_user(self, pipe: Any, user: str, w: "_UserWrites", now: float) -> None:
        """A user's writes of one batch, a few commands per key (then trims and TTLs)."""
        app = self.app
        if w.recent:
            pipe.lpush(keys.recent(app, user), *w.recent)  # oldest first, so the newest ends up in front
            pipe.ltrim(keys.recent(app, user), 0, self.recent_max - 1)
            pipe.expire(keys.recent(app, user), self.history_ttl_s)
        if w.queries:
            pipe.lpush(keys.user_queries(app, user), *w.queries)
            pipe.ltrim(keys.user_queries(app, user), 0, self.queries_max - 1)
            pipe.expire(keys.user_queries(app, user), self.history_ttl_s)
        if w.engaged:
            pipe.hdel(keys.shown(app, user), *w.engaged)  # engagement ends exposure fatigue…
        for item, n in w.shown.items():
            pipe.hincrby(keys.shown(app, user), item, n)  # …and only later impressions count again
        if w.shown:
            pipe.expire(keys.shown(app, user), self.shown_ttl_s)
        if w.engaged:
            pipe.zadd(keys.clicked(app, user), w.engaged, gt=True)
            pipe.zremrangebyrank(keys.clicked(app, user), 0, -(self.clicked_max + 1))
            pipe.expire(keys.clicked(app, user), self.history_ttl_s)
        if w.purchased:
            pipe.zadd(keys.purchased(app, user), w.purchased, gt=True)
            pipe.zremrangebyscore(keys.purchased(app, user), "-inf", f"({now - self.purchased_ttl_s}")
            pipe.expire(keys.purchased(app, user), self.purchased_ttl_s)

    # --- user state and profiles ---------------------------------------------------------------

    def user_state(self, user_id: str) -> UserState:
        """Recent items, purchases, exposure counts, clicks, both profiles and recent queries: one round trip."""
        app, now = self.app, self._clock()
        with _guard("user_state"):
            pipe = self._pipe()
            pipe.lrange(keys.recent(app, user_id), 0, self.recent_max - 1)
            pipe.zrangebyscore(keys.purchased(app, user_id), now - self.purchased_ttl_s, "+inf")
            pipe.hgetall(keys.shown(app, user_id))
            pipe.zrange(keys.clicked(app, user_id), 0, -1)
            pipe.hgetall(keys.merchant_profile(app, user_id))
            pipe.hgetall(keys.platform_profile(user_id))
            pipe.lrange(keys.user_queries(app, user_id), 0, self.queries_max - 1)
            recent, purchased, shown, clicked, merchant, platform, queries = pipe.execute()
        return UserState(
            recent=_recent_entries(recent),
            purchased=set(purchased),
            shown={item: int(n) for item, n in shown.items()},
            clicked=set(clicked),
            merchant_profile=dict(merchant),
            platform_profile=dict(platform),
            recent_queries=list(queries),
        )

    def search_box_state(self, user_id: str) -> UserState:
        """What the search box (suggestions, shading word, discovery) needs of a user: recent items,
        profiles and recent queries, one round trip. Purchases, impressions and clicks stay empty:
        they are not read (the impression hash of an active user is the largest of these keys, and
        suggest runs on every keystroke)."""
        app = self.app
        with _guard("search_box_state"):
            pipe = self._pipe()
            pipe.lrange(keys.recent(app, user_id), 0, self.recent_max - 1)
            pipe.hgetall(keys.merchant_profile(app, user_id))
            pipe.hgetall(keys.platform_profile(user_id))
            pipe.lrange(keys.user_queries(app, user_id), 0, self.queries_max - 1)
            recent, merchant, platform, queries = pipe.execute()
        return UserState(recent=_recent_entries(recent), purchased=set(), shown={}, clicked=set(),
                         merchant_profile=dict(merchant), platform_profile=dict(platform), recent_queries=list(queries))

    def _put_profile(self, key: str, fields: Mapping[str, str], what: str) -> None:
        for name, value in fields.items():
            if not isinstance(name, str) or not name or not isinstance(value, str):
                raise ValueError(f"profile fields must map non-empty names to strings; got {name!r}: {value!r}")
        updates = {name: value for name, value in fields.items() if value != ""}
        removals = [name for name, value in fields.items() if value == ""]
        with _guard(what):
            pipe = self._pipe()
            if updates:
                pipe.hset(key, mapping=updates)
            if removals:
                pipe.hdel(key, *removals)
            pipe.execute()

    def put_merchant_profile(self, user_id: str, fields: Mapping[str, str]) -> None:
        """Upsert this app's profile of a user; an empty string deletes that field."""
        self._put_profile(keys.merchant_profile(self.app, user_id), fields, "put_merchant_profile")

    def put_platform_profile(self, user_id: str, fields: Mapping[str, str]) -> None:
        """Upsert the platform's profile of a user (shared by every app, `consent` included)."""
        self._put_profile(keys.platform_profile(user_id), fields, "put_platform_profile")

    def get_profiles(self, user_id: str) -> tuple[dict[str, str], dict[str, str]]:
        """(merchant profile, platform profile) of a user; empty dicts when unknown."""
        with _guard("get_profiles"):
            pipe = self._pipe()
            pipe.hgetall(keys.merchant_profile(self.app, user_id))
            pipe.hgetall(keys.platform_profile(user_id))
            merchant, platform = pipe.execute()
        return dict(merchant), dict(platform)

    def load_profiles(self, merchant_df: pd.DataFrame | None, platform_df: pd.DataFrame | None,
                      batch: int = 5000) -> tuple[int, int]:
        """Bulk-upsert profiles from data-folder tables (`user_id` + field columns), `batch` users
        per round trip; empty cells are skipped (existing fields stay). Returns rows written per table.
        Platform profiles are shared: loading them from several apps writes the same values."""
        if batch < 1:
            raise ValueError("batch must be >= 1")
        written = []
        for frame, key_of in ((merchant_df, lambda u: keys.merchant_profile(self.app, u)),
                              (platform_df, keys.platform_profile)):
            written.append(0 if frame is None or frame.empty else self._load_table(frame, key_of, batch))
        return written[0], written[1]

    def _load_table(self, frame: pd.DataFrame, key_of: Callable[[str], str], batch: int) -> int:
        if "user_id" not in frame.columns:
            raise ValueError("a profile table needs a user_id column")
        columns = [str(c) for c in frame.columns if c != "user_id"]
        text = {c: frame[c].astype(object).where(frame[c].notna(), "").astype(str).tolist() for c in frame.columns}
        users = text["user_id"]
        written = 0
        for start in range(0, len(users), batch):
            with _guard("load_profiles"):
                pipe = self._pipe()
                for row in range(start, min(start + batch, len(users))):
                    mapping = {c: text[c][row] for c in columns if text[c][row] != ""}
                    if users[row] and mapping:
                        pipe.hset(key_of(users[row]), mapping=mapping)
                        written += 1
                pipe.execute()
        return written

    # --- items ----------------------------------------------------------------------------------

    def put_item(self, item_id: str, fields: Mapping[str, str | float | int | bool]) -> float:
        """Upsert an item's fields (catalog columns: title, category, brand, tags, price, stock,
        visible, audience) and mark it updated now; returns that update time, the version readers
        of `updated_items_with_ts` see (the fields are written first, then the time). Raises
        ValueError for an unknown field or a value of the wrong kind, before writing anything."""
        if not isinstance(item_id, str) or not item_id:
            raise ValueError("item_id must be a non-empty string")
        encoded = {name: _encode_item_value(name, value) for name, value in fields.items()}
        with _guard("put_item"):
            pipe = self._pipe()
            if encoded:
                pipe.hset(keys.item(self.app, item_id), mapping=encoded)
            version = self._clock()
            pipe.zadd(keys.items_updated(self.app), {item_id: version})
            pipe.execute()
        return version

    def items(self, item_ids: Sequence[str]) -> list[dict[str, Any] | None]:
        """Upserted fields per item, aligned with `item_ids` (None for an item never upserted);
        price is a float, stock an int, visible a bool, the rest strings."""
        if not item_ids:
            return []
        with _guard("items"):
            pipe = self._pipe()
            for item_id in item_ids:
                pipe.hgetall(keys.item(self.app, item_id))
            rows = pipe.execute()
        return [_decode_item(row) if row else None for row in rows]

    def updated_items_with_ts(self, since_ts: float) -> list[tuple[str, float]]:
        """(item_id, update ts) of items upserted at or after `since_ts`, oldest first."""
        with _guard("updated_items"):
            rows = self._r.zrangebyscore(keys.items_updated(self.app), since_ts, "+inf", withscores=True)
        return [(item_id, float(ts)) for item_id, ts in rows]

    def updated_items(self, since_ts: float) -> list[str]:
        """Ids of items upserted at or after `since_ts`, oldest first."""
        return [item_id for item_id, _ in self.updated_items_with_ts(since_ts)]

    # --- popularity -------------------------------------------------------------------------------

    def _top(self, key: str, n: int, now: float | None, what: str) -> list[tuple[str, float]]:
        if n < 1:
            return []
        with _guard(what):
            pipe = self._pipe()
            pipe.zrevrange(key, 0, n - 1, withscores=True)
            pipe.get(keys.pop_t0(self.app))
            rows, t0 = pipe.execute()
        if t0 is None:
            return []
        at = self._clock() if now is None else now
        return [(member, decayed(float(score), float(t0), at, self.half_life_s)) for member, score in rows]

    def top_items(self, n: int, now: float | None = None) -> list[tuple[str, float]]:
        """The `n` most popular items with their scores decayed to `now` (default: the clock)."""
        return self._top(keys.pop_items(self.app), n, now, "top_items")

    def top_categories(self, n: int, now: float | None = None) -> list[tuple[str, float]]:
        """The `n` most popular category paths (as the items carry them) with decayed scores."""
        return self._top(keys.pop_categories(self.app), n, now, "top_categories")

    def hot_queries(self, n: int, now: float | None = None) -> list[tuple[str, float]]:
        """The `n` hottest normalized queries with decayed counts (hot-search list)."""
        return self._top(keys.pop_queries(self.app), n, now, "hot_queries")

    def ping(self) -> bool:
        """True if Redis answers (within the client's timeout)."""
        try:
            return bool(self._r.ping())
        except (rex.RedisError, rex.RedisClusterException, OSError):
            return False
