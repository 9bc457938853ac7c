"""User insight (docs/insight.md): who an app's users are, as k-anonymous aggregates only.

Two steps, so a request never walks the whole log:

1. `build_user_table` turns the app's training data, its event log and its users' profiles into one
   row per user (RFM, segment, lifecycle, engaged categories) plus the user's profile keys — the
   merchant's fields, and the platform's fields *only where that user's consent covers them*
   (`recsys.profiles.profile_key_table`, the rule ranking uses). `InsightCache` keeps it per app and
   data version.
2. `insight_document` aggregates that table (optionally narrowed by a segment and a merchant field)
   into counts that are each >= `k_min` or suppressed, rounded to `round_to` (see `Suppressor`).

Nothing here returns a user id or a single user's value.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import redis.exceptions as rex

from analytics.disclosure import Suppressor
from features import keys as rkeys
from features.eventlog import iter_events
from features.eventstream import is_stream_url, iter_stream_events
from features.store import StoreUnavailable
from recsys.catalog import CatalogState
from recsys.profiles import MERCHANT_NS, PLATFORM_NS, profile_key_table
from recsys.schema import CATEGORY_SEP

DAY_S = 86400.0
#: A buyer whose last purchase is at most this many days before `as_of` is "recent".
RECENT_DAYS = 30
#: A buyer with at least this many purchases (orders) is "frequent".
FREQUENT_ORDERS = 3
#: A user whose first event is at most this many days before `as_of` is "new"; one active in that
#: window with an earlier first event is "returning"; the rest are "inactive".
NEW_DAYS = 30
#: Events that show interest in an item's category (an impression is the app's choice, not the user's).
ENGAGEMENTS = ("view", "click", "favorite", "cart", "purchase", "rating")
#: Top categories listed per segment.
TOP_CATEGORIES = 5
#: Segments in the document's order; they partition the app's users.
SEGMENTS: dict[str, str] = {
    "champions": f"bought in the last {RECENT_DAYS} days, {FREQUENT_ORDERS}+ orders",
    "at_risk": f"{FREQUENT_ORDERS}+ orders, none in the last {RECENT_DAYS} days",
    "promising": f"bought in the last {RECENT_DAYS} days, fewer than {FREQUENT_ORDERS} orders",
    "lapsed": f"fewer than {FREQUENT_ORDERS} orders, none in the last {RECENT_DAYS} days",
    "browsers": "events but no purchase",
    "profile_only": "a merchant profile but no events",
}
LIFECYCLE = ("new", "returning", "inactive")
#: How long a cached insight is served after new events arrived (a new model or data folder
#: recomputes at once).
REFRESH_S = 300.0


class InsightFilterError(ValueError):
    """A filter the document cannot apply (unknown segment, malformed field filter)."""


# --- step 1: one row per user -----------------------------------------------------------------------

@dataclass(frozen=True)
class UserTable:
    """Per-user facts behind the insight document (never returned as such)."""

    #: One row per user: segment, lifecycle, orders, spend, recency_days.
    users: pd.DataFrame
    #: (user_id, key) rows: `m.<field>=<value>` and consented `p.<field>=<value>`.
    keys: pd.DataFrame
    #: (user_id, category) rows: top-level categories the user engaged with.
    categories: pd.DataFrame
    #: The time RFM and lifecycle are measured at: the latest event seen.
    as_of: float


def _events_frame(training: pd.DataFrame | None, logged: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """(user_id, item_id, event, ts, value, amount) of the training interactions and the logged events
    (the first of each event_id)."""
    parts = []
    if training is not None and len(training):
        frame = training[["user_id", "item_id", "event", "ts"]].copy()
        frame["value"] = training["value"].to_numpy(dtype=float) if "value" in training else 1.0
        frame["amount"] = np.nan
        parts.append(frame)
    rows, seen = [], set()
    for ev in logged:
        event_id, user = ev.get("event_id"), ev.get("user_id")
        if not user or event_id in seen:
            continue
        seen.add(event_id)
        amount, value = ev.get("amount"), ev.get("value")
        rows.append((str(user), ev.get("item_id") or "", str(ev.get("type") or ""), float(ev.get("ts") or 0.0),
                     1.0 if value is None else float(value), np.nan if amount is None else float(amount)))
    if rows:
        parts.append(pd.DataFrame(rows, columns=["user_id", "item_id", "event", "ts", "value", "amount"]))
    if not parts:
        return pd.DataFrame({"user_id": pd.Series([], dtype=object), "item_id": pd.Series([], dtype=object),
                             "event": pd.Series([], dtype=object), "ts": pd.Series([], dtype=float),
                             "value": pd.Series([], dtype=float), "amount": pd.Series([], dtype=float)})
    events = pd.concat(parts, ignore_index=True)
    events["ts"] = events["ts"].astype(float)
    return events


def _segments(orders: np.ndarray, recency: np.ndarray, active: np.ndarray) -> np.ndarray:
    recent, frequent = recency <= RECENT_DAYS, orders >= FREQUENT_ORDERS
    return np.select([(orders > 0) & recent & frequent, (orders > 0) & frequent, (orders > 0) & recent, orders > 0,
                      active], ["champions", "at_risk", "promising", "lapsed", "browsers"], "profile_only")


def build_user_table(training: pd.DataFrame | None, logged: Iterable[Mapping[str, Any]], items: pd.DataFrame,
                     merchant_profiles: pd.DataFrame, platform_profiles: pd.DataFrame,
                     scopes: Mapping[str, tuple[str, ...]]) -> UserTable:
    """The per-user table of an app.

    `training`: the data folder's interactions (user_id, item_id, event, ts, value); `logged`: the
    event log's events; `items`: (item_id, category, price) of the live catalog; the profiles are
    the app's users' current merchant profiles and platform profiles (with `consent`). The app's
    users are those with an event or a merchant profile: a platform profile of anyone else is
    ignored, so no aggregate ever covers people who are not this merchant's users.

    Monetary value of a purchase: its `amount` when the event carries one, else quantity (`value`)
    × the item's catalog price."""
    events = _events_frame(training, logged)
    as_of = float(events["ts"].max()) if len(events) else time.time()
    price = pd.Series(items["price"].to_numpy(dtype=float), index=items["item_id"].astype(str))
    top = pd.Series([str(c).split(CATEGORY_SEP)[0].strip() for c in items["category"]],
                    index=items["item_id"].astype(str))
    price, top = price[~price.index.duplicated()], top[~top.index.duplicated()]

    buys = events[events["event"] == "purchase"]
    paid = buys["amount"].to_numpy()
    listed = buys["value"].to_numpy() * buys["item_id"].map(price).fillna(0.0).to_numpy()
    buys = buys.assign(spend=np.where(np.isnan(paid), listed, paid))
    per_buyer = buys.groupby("user_id").agg(orders=("ts", "size"), last_buy=("ts", "max"), spend=("spend", "sum"))
    activity = events.groupby("user_id")["ts"].agg(["min", "max"])

    ids = pd.Index(sorted(set(activity.index) | set(merchant_profiles["user_id"].astype(str))), name="user_id")
    users = pd.DataFrame(index=ids)
    users["orders"] = per_buyer["orders"].reindex(ids).fillna(0).astype(int)
    users["spend"] = per_buyer["spend"].reindex(ids).fillna(0.0)
    users["recency_days"] = (as_of - per_buyer["last_buy"].reindex(ids)) / DAY_S
    first, last = activity["min"].reindex(ids), activity["max"].reindex(ids)
    active = first.notna().to_numpy()
    users["segment"] = _segments(users["orders"].to_numpy(), users["recency_days"].fillna(np.inf).to_numpy(), active)
    window = as_of - NEW_DAYS * DAY_S
    users["lifecycle"] = np.select([(first >= window).to_numpy(), (last >= window).to_numpy()],
                                   ["new", "returning"], "inactive")

    engaged = events[events["event"].isin(ENGAGEMENTS)]
    categories = pd.DataFrame({"user_id": engaged["user_id"].to_numpy(),
                               "category": engaged["item_id"].map(top).to_numpy()})
    categories = categories[categories["category"].notna() & (categories["category"] != "")].drop_duplicates()

    mine = platform_profiles[platform_profiles["user_id"].astype(str).isin(ids)]
    keys = profile_key_table(merchant_profiles, mine, scopes)
    keys = keys[keys["user_id"].astype(str).isin(ids)]
    return UserTable(users.reset_index(), keys.reset_index(drop=True), categories.reset_index(drop=True), as_of)


# --- the sources: catalog, event log, profiles in Redis -------------------------------------------

#: Users whose profiles are read per Redis round trip.
PROFILE_BATCH = 2000


def catalog_items(state: CatalogState) -> pd.DataFrame:
    """(item_id, category, price) of every item of a live catalog snapshot, trained and new."""
    n = len(state)
    return pd.DataFrame({"item_id": [state.item_id(p) for p in range(n)],
                         "category": [state.category(p) for p in range(n)],
                         "price": state.all_prices()[:n].astype(float)})


def logged_events(source: str | Path, app: str, stream: str = "MINIREC_EVENTS") -> Iterable[Mapping[str, Any]]:
    """The app's events from the durable log folder `source`, or from the event stream at a nats:// URL."""
    if is_stream_url(str(source)):
        return iter_stream_events(str(source), app, stream)
    return iter_events(source, app)


def log_version(source: str | Path, app: str) -> Any:
    """What changes when the app's log grows: its daily files' names and sizes (for a stream, the
    current REFRESH_S period, since a stream cannot be sized cheaply)."""
    if is_stream_url(str(source)):
        return int(time.time() // REFRESH_S)
    folder = Path(source) / rkeys.check_app(app)
    if not folder.is_dir():
        return ()
    return tuple((p.name, p.stat().st_size) for p in sorted(folder.glob("events-*.jsonl")))


def read_profiles(client: Any, app: str, user_ids: Iterable[str],
                  batch: int = PROFILE_BATCH) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The current (merchant, platform) profiles of `user_ids` from Redis, as data-folder tables
    (user_id + fields; the platform's with `consent`, "" when the user granted nothing).
    Raises StoreUnavailable when Redis cannot be read."""
    merchant: list[dict[str, str]] = []
    platform: list[dict[str, str]] = []
    ids = list(user_ids)
    try:
        for lo in range(0, len(ids), batch):
            chunk = ids[lo:lo + batch]
            pipe = client.pipeline(transaction=False)
            for user in chunk:
                pipe.hgetall(rkeys.merchant_profile(app, user))
                pipe.hgetall(rkeys.platform_profile(user))
            found = pipe.execute()
            for i, user in enumerate(chunk):
                if found[2 * i]:
                    merchant.append({**found[2 * i], "user_id": user})
                if found[2 * i + 1]:
                    platform.append({"consent": "", **found[2 * i + 1], "user_id": user})
    except (rex.RedisError, rex.RedisClusterException, OSError) as exc:
        raise StoreUnavailable(f"redis unavailable while reading profiles for insight: {exc}") from exc
    m = pd.DataFrame(merchant).fillna("") if merchant else pd.DataFrame({"user_id": pd.Series([], dtype=object)})
    p = pd.DataFrame(platform).fillna("") if platform else pd.DataFrame(
        {"user_id": pd.Series([], dtype=object), "consent": pd.Series([], dtype=object)})
    return m, p


def compute_user_table(client: Any, app: str, training: pd.DataFrame | None, known: Iterable[str],
                       logged: Iterable[Mapping[str, Any]], items: pd.DataFrame,
                       scopes: Mapping[str, tuple[str, ...]]) -> UserTable:
    """`build_user_table` with the current profiles from Redis of every user of the app: those of
    the training interactions, of the log, and `known` (the training data's merchant profiles)."""
    events = list(logged)
    ids = set(known) | {str(e["user_id"]) for e in events if e.get("user_id")}
    if training is not None:
        ids |= set(training["user_id"].astype(str))
    merchant, platform = read_profiles(client, app, sorted(ids))
    return build_user_table(training, events, items, merchant, platform, scopes)


# --- step 2: suppression ----------------------------------------------------------------------------

def _cell_list(shown: Mapping[str, int | None], named: bool, label: str = "value") -> list[dict[str, Any]]:
    """Cells largest first; suppressed ones last — by name when `named`, else merged into one row."""
    cells = [{label: name, "users": n, "suppressed": False}
             for name, n in sorted(shown.items(), key=lambda kv: (-(kv[1] or 0), kv[0])) if n is not None]
    hidden = sorted(name for name, n in shown.items() if n is None)
    if named:
        cells += [{label: name, "users": None, "suppressed": True} for name in hidden]
    elif hidden:
        cells.append({label: None, "users": None, "suppressed": True})
    return cells


def _distributions(keys: pd.DataFrame, namespace: str, rule: Suppressor) -> dict[str, Any]:
    """Per field of `namespace`: users with the field, and users per value (suppressed as `rule` says).
    Platform values under k are merged into one suppressed row, so not even their names are shown."""
    prefix = namespace + "."
    mine = keys[keys["key"].str.startswith(prefix)]
    split = mine["key"].str.slice(len(prefix)).str.split("=", n=1, expand=True)
    if split.empty:
        return {}
    rows = pd.DataFrame({"user_id": mine["user_id"].to_numpy(), "field": split[0].to_numpy(),
                         "value": split[1].to_numpy()})
    out: dict[str, Any] = {}
    for name, group in rows.groupby("field", sort=True):
        base = int(group["user_id"].nunique())
        multi = base < len(group)  # a user holds several values (e.g. interests): cells overlap
        if base < rule.k_min:
            out[str(name)] = {"users": None, "suppressed": True, "multi_valued": multi, "values": []}
            continue
        counts = group.groupby("value")["user_id"].nunique().astype(int).to_dict()
        # overlapping cells (multi-valued) still bound each other through the field's total: the
        # complementary rule applies to them too
        shown = rule.cells(counts, partition=True)
        out[str(name)] = {"users": rule.shown(base), "suppressed": False, "multi_valued": multi,
                          "values": _cell_list(shown, named=namespace == MERCHANT_NS)}
    return out


# --- step 2: the document ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Filters:
    """Optional narrowing: a segment, and one merchant-profile field = value."""

    segment: str | None = None
    field: tuple[str, str] | None = None

    @classmethod
    def parse(cls, segment: str | None, field: str | None) -> "Filters":
        """From the query parameters; InsightFilterError names what is wrong."""
        if segment is not None and segment not in SEGMENTS:
            raise InsightFilterError(f"segment: unknown {segment!r}; known: {', '.join(SEGMENTS)}")
        pair = None
        if field is not None:
            name, sep, value = field.partition("=")
            if not sep or not name.strip() or not value.strip():
                raise InsightFilterError(f"field: expected <merchant profile field>=<value>, got {field!r}")
            pair = (name.strip(), value.strip())
        return cls(segment, pair)

    def as_dict(self) -> dict[str, Any]:
        return {"segment": self.segment, "field": "=".join(self.field) if self.field else None}


def _members(table: UserTable, segment: str | None, pair: tuple[str, str] | None) -> pd.Index:
    """User ids matching the filters (all users without any)."""
    users = table.users
    ids = pd.Index(users["user_id"] if segment is None else users.loc[users["segment"] == segment, "user_id"])
    if pair is not None:
        key = f"{MERCHANT_NS}.{pair[0]}={pair[1]}"
        ids = ids.intersection(pd.Index(table.keys.loc[table.keys["key"] == key, "user_id"]))
    return ids


def _narrowing_allowed(table: UserTable, filters: Filters, k_min: int) -> bool:
    """A filtered group is shown only if it holds >= k_min users and so does what it leaves out of
    every broader group (the same query without one of the filters): otherwise the broader answer
    minus this one would describe fewer than k users."""
    chosen = _members(table, filters.segment, filters.field)
    if len(chosen) < k_min:
        return False
    parents = {(None, None), (filters.segment, None), (None, filters.field)}
    parents.discard((filters.segment, filters.field))
    return all(len(_members(table, *p)) - len(chosen) >= k_min for p in parents)


def _segment_doc(users: pd.DataFrame, categories: pd.DataFrame, shown: Mapping[str, int | None],
                 rule: Suppressor) -> list[dict[str, Any]]:
    out = []
    for name, what in SEGMENTS.items():
        n = shown.get(name)
        doc: dict[str, Any] = {"segment": name, "definition": what, "users": n, "suppressed": n is None}
        if n is not None:  # only for >= k users: means over a k-group, categories >= k each
            group = users[users["segment"] == name]
            buyers = group[group["orders"] > 0]
            if len(buyers):
                doc["avg_orders"] = round(float(buyers["orders"].mean()), 2)
                doc["avg_spend"] = round(float(buyers["spend"].mean()), 2)
                doc["avg_recency_days"] = round(float(buyers["recency_days"].mean()), 1)
            cats = categories[categories["user_id"].isin(group["user_id"])]
            per = cats.groupby("category")["user_id"].nunique().sort_values(ascending=False, kind="stable")
            doc["top_categories"] = [{"category": str(c), "users": rule.shown(int(v))}
                                     for c, v in per.items() if v >= rule.k_min][:TOP_CATEGORIES]
        out.append(doc)
    return out


def insight_document(table: UserTable, rule: Suppressor, filters: Filters = Filters()) -> dict[str, Any]:
    """The insight aggregates of `table`'s users (narrowed by `filters`): every count >= k_min or
    suppressed, rounded as `rule` says. A narrowing that `_narrowing_allowed` refuses answers with
    `suppressed: true` and no counts at all."""
    head: dict[str, Any] = {"as_of": table.as_of, "k_min": rule.k_min, "round_to": rule.round_to,
                            "filters": filters.as_dict(),
                            "windows": {"recent_days": RECENT_DAYS, "frequent_orders": FREQUENT_ORDERS,
                                        "new_days": NEW_DAYS}}
    filtered = filters.segment is not None or filters.field is not None
    members = _members(table, filters.segment, filters.field)
    if (filtered and not _narrowing_allowed(table, filters, rule.k_min)) or len(members) < rule.k_min:
        return {**head, "suppressed": True, "users": None, "segments": [], "lifecycle": [],
                "merchant_profile": {}, "platform_profile": {},
                "note": f"fewer than {rule.k_min} users here, or a narrowing that would isolate fewer "
                        f"than {rule.k_min}: nothing is shown"}
    users = table.users[table.users["user_id"].isin(members)]
    keys = table.keys[table.keys["user_id"].isin(members)]
    categories = table.categories[table.categories["user_id"].isin(members)]
    seg_counts = {name: int((users["segment"] == name).sum()) for name in SEGMENTS}
    life_counts = {name: int((users["lifecycle"] == name).sum()) for name in LIFECYCLE}
    life = rule.cells(life_counts, partition=True)
    return {**head, "suppressed": False, "users": rule.shown(len(users)),
            "segments": _segment_doc(users, categories, rule.cells(seg_counts, partition=True), rule),
            "lifecycle": [{"value": name, "users": life[name], "suppressed": life[name] is None}
                          for name in LIFECYCLE],
            "merchant_profile": _distributions(keys, MERCHANT_NS, rule),
            "platform_profile": _distributions(keys, PLATFORM_NS, rule)}


# --- the cache ----------------------------------------------------------------------------------------

@dataclass
class _Entry:
    version: tuple[Any, ...]
    events_version: Any
    table: UserTable
    computed_at: float
    docs: dict[tuple[Any, ...], dict[str, Any]] = field(default_factory=dict)


class InsightCache:
    """Per app: the user table of its current data version, and the documents built from it.

    The data version is (model version, training data, …) — a change recomputes at once — plus the
    event log's state, which changes with every event: new events recompute only once the cached
    table is `refresh_s` old. One computation per app at a time (others wait for it)."""

    def __init__(self, refresh_s: float = REFRESH_S, max_docs: int = 256) -> None:
        self.refresh_s = refresh_s
        self.max_docs = max_docs
        self._entries: dict[Any, _Entry] = {}
        self._locks: dict[Any, threading.Lock] = {}
        self._guard = threading.Lock()

    def _lock(self, app: Any) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(app, threading.Lock())

    def table(self, app: Any, version: tuple[Any, ...], events_version: Any,
              compute: Callable[[], UserTable]) -> tuple[_Entry, bool]:
        """The app's entry for this data version, computing it if needed; (entry, computed now)."""
        with self._lock(app):
            entry = self._entries.get(app)
            fresh = entry is not None and entry.version == version and (
                entry.events_version == events_version or time.time() - entry.computed_at < self.refresh_s)
            if fresh:
                assert entry is not None
                return entry, False
            entry = _Entry(version, events_version, compute(), time.time())
            self._entries[app] = entry
            return entry, True

    def document(self, app: Any, version: tuple[Any, ...], events_version: Any, compute: Callable[[], UserTable],
                 rule: Suppressor, filters: Filters) -> dict[str, Any]:
        """The insight document for `filters`, from the cached table (built once per filter set)."""
        entry, _ = self.table(app, version, events_version, compute)
        key = (rule, filters)
        with self._lock(app):  # requests of one app run in several threads: one changes `docs` at a time
            doc = entry.docs.get(key)
            if doc is None:
                doc = insight_document(entry.table, rule, filters)
                doc["computed_at"] = entry.computed_at
                if len(entry.docs) >= self.max_docs:
                    entry.docs.pop(next(iter(entry.docs)))
                entry.docs[key] = doc
        return doc
