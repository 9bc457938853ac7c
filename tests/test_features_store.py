"""The feature store against real Redis: the embedded server, an external one and a 3-node cluster (one battery)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import redis
from redis.crc import key_slot

from features import keys
from features.decay import reference_decayed
from features.redis_conn import RedisHandle, open_redis, redact_url
from features.store import EventRecord, FeatureStore, StoreUnavailable
from vocab.queries import normalize_query

T0 = 1_800_000_000.0  # a fixed "now" for tests that inject time
DAY = 86400.0


class Clock:
    """A settable clock passed to the store (time is an input here, not something we fake in Redis)."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def ev(event_id: str, user: str, kind: str, ts: float, item: str | None = None, **extra) -> EventRecord:
    return EventRecord(event_id=event_id, user_id=user, type=kind, ts=ts, item_id=item, **extra)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(redis_backend: RedisHandle, clock: Clock) -> FeatureStore:
    return FeatureStore(redis_backend.client, "shop", clock=clock, recent_max=5)


# --- keys -----------------------------------------------------------------------------------------

def test_key_strings_are_exact() -> None:
    assert keys.recent("shop", "u1") == "mr:{shop:u:u1}:recent"
    assert keys.purchased("shop", "u1") == "mr:{shop:u:u1}:purchased"
    assert keys.shown("shop", "u1") == "mr:{shop:u:u1}:shown"
    assert keys.clicked("shop", "u1") == "mr:{shop:u:u1}:clicked"
    assert keys.user_queries("shop", "u1") == "mr:{shop:u:u1}:queries"
    assert keys.merchant_profile("shop", "u1") == "mr:{shop:u:u1}:profile"
    assert keys.platform_profile("u1") == "mr:platform:{u1}:profile"
    assert keys.event_seen("shop", "e-9") == "mr:shop:ev:e-9"
    assert keys.item("shop", "i1") == "mr:shop:item:i1"
    assert keys.items_updated("shop") == "mr:shop:items:updated"
    assert keys.pop_items("shop") == "mr:{shop:pop}:items"
    assert keys.pop_categories("shop") == "mr:{shop:pop}:categories"
    assert keys.pop_queries("shop") == "mr:{shop:pop}:queries"
    assert keys.pop_t0("shop") == "mr:{shop:pop}:t0"
    assert keys.recent("shop", "用户").encode() == b"mr:{shop:u:\xe7\x94\xa8\xe6\x88\xb7}:recent"


def test_keys_of_one_user_share_a_cluster_slot() -> None:
    user_keys = [f("shop", "u:1}x") for f in (keys.recent, keys.purchased, keys.shown, keys.clicked,
                                               keys.user_queries, keys.merchant_profile)]
    assert {keys.hash_tag(k) for k in user_keys} == {"shop:u:u:1"}
    assert len({key_slot(k.encode()) for k in user_keys}) == 1
    pop = [keys.pop_items("shop"), keys.pop_categories("shop"), keys.pop_queries("shop"), keys.pop_t0("shop")]
    assert len({key_slot(k.encode()) for k in pop}) == 1
    # No tag on per-event and per-item keys: they spread over the cluster.
    assert keys.hash_tag(keys.event_seen("shop", "e1")) == "mr:shop:ev:e1"


@pytest.mark.parametrize("app", ["", "a b", "a:b", "x{y}", "platform", "../etc", "a" * 65])
def test_bad_app_ids_are_refused(app: str) -> None:
    with pytest.raises(ValueError, match="app id"):
        keys.check_app(app)


# --- events -----------------------------------------------------------------------------------------

def test_an_event_id_is_applied_once(store: FeatureStore) -> None:
    click = ev("e1", "u1", "click", T0, "i1")
    assert store.record([click, click]) == [True, False]
    assert store.record([click, ev("e2", "u1", "click", T0, "i2")]) == [False, True]
    state = store.user_state("u1")
    assert [item for item, _, _ in state.recent] == ["i2", "i1"]
    assert dict(store.top_items(10, now=T0)) == pytest.approx({"i1": 2.0, "i2": 2.0})
    assert store.record([]) == []


def test_user_state_semantics(store: FeatureStore, clock: Clock) -> None:
    store.record([
        ev("a1", "u1", "impression", T0 - 50, "i1"),
        ev("a2", "u1", "impression", T0 - 40, "i1"),
        ev("a3", "u1", "impression", T0 - 40, "i2"),
        ev("a4", "u1", "click", T0 - 30, "i2"),   # a click ends i2's exposure fatigue
        ev("a5", "u1", "purchase", T0 - 20, "i3"),
        ev("a6", "u1", "search", T0 - 10, query="  Huawei   Mate "),
        ev("a7", "u2", "view", T0, "i9"),
    ])
    state = store.user_state("u1")
    assert state.shown == {"i1": 2}
    assert state.clicked == {"i2", "i3"}
    assert state.purchased == {"i3"}
    assert state.recent == [("i3", "purchase", T0 - 20), ("i2", "click", T0 - 30)]  # no impressions
    assert state.recent_queries == ["huawei mate"]
    store.record([ev("a8", "u1", "impression", T0 + 1, "i2")])  # shown again after the click: counts anew
    assert store.user_state("u1").shown == {"i1": 2, "i2": 1}
    # Within one batch too, in time order (listed out of order here): only impressions after the view count.
    store.record([ev("b3", "u3", "impression", T0 + 3, "i5"), ev("b1", "u3", "impression", T0 + 1, "i5"),
                  ev("b2", "u3", "view", T0 + 2, "i5"), ev("b4", "u3", "impression", T0 + 4, "i6")])
    assert store.user_state("u3").shown == {"i5": 1, "i6": 1}

    empty = store.user_state("nobody")
    assert (empty.recent, empty.purchased, empty.shown, empty.clicked) == ([], set(), {}, set())
    assert (empty.merchant_profile, empty.platform_profile, empty.recent_queries) == ({}, {}, [])


def test_search_box_state_reads_the_signals_of_the_full_state(store: FeatureStore) -> None:
    store.record([ev("s1", "u1", "impression", T0 - 5, "i1"), ev("s2", "u1", "view", T0 - 4, "i2"),
                  ev("s3", "u1", "purchase", T0 - 3, "i3"), ev("s4", "u1", "search", T0 - 2, query="手机")])
    store.put_merchant_profile("u1", {"member_level": "gold"})
    store.put_platform_profile("u1", {"age_band": "25-34", "consent": "personalization"})
    full, box = store.user_state("u1"), store.search_box_state("u1")
    assert (box.recent, box.merchant_profile, box.platform_profile, box.recent_queries) == \
        (full.recent, full.merchant_profile, full.platform_profile, full.recent_queries)
    assert full.shown and full.purchased and full.clicked  # read by the full state only
    assert (box.shown, box.purchased, box.clicked) == ({}, set(), set())


def test_recent_is_newest_first_and_capped(store: FeatureStore) -> None:
    # Out-of-order timestamps inside a batch are applied in time order.
    store.record([ev(f"v{i}", "u1", "view", T0 + (7 - i), f"i{7 - i}") for i in range(8)])
    assert [item for item, _, _ in store.user_state("u1").recent] == ["i7", "i6", "i5", "i4", "i3"]


def test_purchases_hide_items_only_within_their_ttl(store: FeatureStore, clock: Clock,
                                                    redis_backend: RedisHandle) -> None:
    store.record([ev("p1", "u1", "purchase", T0, "i1")])
    assert store.user_state("u1").purchased == {"i1"}
    ttl = redis_backend.client.ttl(keys.purchased("shop", "u1"))
    assert 29 * DAY < ttl <= 30 * DAY
    clock.now = T0 + 31 * DAY
    assert store.user_state("u1").purchased == set()


def test_exposure_counts_carry_their_ttl(redis_backend: RedisHandle, clock: Clock) -> None:
    store = FeatureStore(redis_backend.client, "shop", clock=clock, shown_ttl_hours=2)
    store.record([ev("s1", "u1", "impression", T0, "i1")])
    assert store.user_state("u1").shown == {"i1": 1}
    assert 7100 < redis_backend.client.ttl(keys.shown("shop", "u1")) <= 7200
    store.record([ev("s2", "u1", "click", T0, "i2")])
    for key in (keys.recent("shop", "u1"), keys.clicked("shop", "u1")):
        assert 29 * DAY < redis_backend.client.ttl(key) <= 30 * DAY


def test_event_records_validate_their_fields() -> None:
    with pytest.raises(ValueError, match="type"):
        ev("e", "u", "like", T0, "i1")
    with pytest.raises(ValueError, match="item_id"):
        ev("e", "u", "click", T0)
    with pytest.raises(ValueError, match="query"):
        ev("e", "u", "search", T0, query="  ")
    with pytest.raises(ValueError, match="milliseconds"):
        ev("e", "u", "click", T0 * 1000, "i1")
    with pytest.raises(ValueError, match="event_id"):
        ev("", "u", "click", T0, "i1")
    with pytest.raises(ValueError, match="user_id"):
        ev("e", "", "click", T0, "i1")
    with pytest.raises(ValueError, match="value"):
        ev("e", "u", "purchase", T0, "i1", value=math.nan)
    assert ev("e", "", "search", T0, query="tea").user_id == ""  # anonymous searches are fine


# --- decayed popularity -------------------------------------------------------------------------------

def test_decayed_counters_rank_by_recent_activity(redis_backend: RedisHandle, clock: Clock) -> None:
    hour = 3600.0
    store = FeatureStore(redis_backend.client, "shop", clock=clock, half_life_hours=1)
    store.put_item("b", {"category": "食品/坚果"})  # its category comes from the item hash
    old = [ev(f"o{i}", f"u{i}", "view", T0 - 10 * hour, "a", category="数码/手机") for i in range(3)]
    new = [ev("n1", "u9", "view", T0, "b")]
    store.record(old)
    clock.now = T0  # the second batch arrives 10 half-lives later
    store.record(new)
    top = store.top_items(5, now=T0)
    assert [item for item, _ in top] == ["b", "a"]  # 1 fresh view beats 3 views 10 half-lives old
    assert dict(top) == pytest.approx({"a": reference_decayed([(1.0, T0 - 10 * hour)] * 3, T0, hour),
                                       "b": reference_decayed([(1.0, T0)], T0, hour)})
    assert [c for c, _ in store.top_categories(5, now=T0)] == ["食品/坚果", "数码/手机"]
    # Six hours later the order is the same (one factor for all) and every score halved six times.
    later = dict(store.top_items(5, now=T0 + 6 * hour))
    assert later["b"] == pytest.approx(dict(top)["b"] / 64)


def test_decay_matches_the_reference_across_rebases(redis_backend: RedisHandle, clock: Clock) -> None:
    half_life = 2.0  # seconds: 600 half-lives of events force rebases (exponent limit 500)
    store = FeatureStore(redis_backend.client, "shop", clock=clock, half_life_hours=half_life / 3600)
    rng = np.random.default_rng(3)
    history: dict[str, list[tuple[float, float]]] = {}
    kinds = {"view": 1.0, "click": 2.0, "purchase": 10.0}
    start = T0
    for step in range(12):
        batch = []
        for j in range(20):
            ts = start + step * 100 + float(rng.uniform(0, 100))
            item, kind = f"i{rng.integers(6)}", str(rng.choice(list(kinds)))
            batch.append(ev(f"e{step}-{j}", "u1", kind, ts, item))
            history.setdefault(item, []).append((kinds[kind], ts))
        clock.now = start + step * 100 + 100
        store.record(batch)
    now = clock.now
    t0 = float(redis_backend.client.get(keys.pop_t0("shop")))
    assert t0 > start + 1000  # rebased at least once
    got = dict(store.top_items(10, now=now))
    want = {item: reference_decayed(events, now, half_life) for item, events in history.items()}
    want = {item: score for item, score in want.items() if score >= 1e-9}
    assert got.keys() == want.keys()
    assert np.allclose([got[i] for i in want], list(want.values()), rtol=1e-9)
    ranked = [item for item, _ in store.top_items(10, now=now)]
    assert ranked == sorted(want, key=want.get, reverse=True)


def test_far_future_timestamps_are_clamped(store: FeatureStore) -> None:
    store.record([ev("f1", "u1", "view", 4_000_000_000, "i1"), ev("f2", "u2", "view", T0, "i2")])
    scores = dict(store.top_items(5, now=T0))
    assert math.isfinite(scores["i1"]) and scores["i1"] <= scores["i2"] * 2 ** (300 / 86400) + 1e-9


def test_hot_queries(store: FeatureStore) -> None:
    store.record([ev("q1", "u1", "search", T0, query="手机"), ev("q2", "", "search", T0, query=" 手机 "),
                  ev("q3", "u2", "search", T0, query="Tea  Pot"), ev("q4", "u3", "search", T0 - DAY, query="耳机")])
    hot = store.hot_queries(10, now=T0)
    assert [q for q, _ in hot] == ["手机", "tea pot", "耳机"]
    assert dict(hot)["手机"] == pytest.approx(2.0) and dict(hot)["耳机"] == pytest.approx(0.5)
    assert normalize_query("  A\tB  ") == "a b"
    assert store.top_items(0) == []


# --- profiles -------------------------------------------------------------------------------------

def test_profiles_upsert_and_delete(redis_backend: RedisHandle, clock: Clock) -> None:
    shop = FeatureStore(redis_backend.client, "shop", clock=clock)
    cafe = FeatureStore(redis_backend.client, "cafe", clock=clock)
    shop.put_merchant_profile("u1", {"member_level": "gold", "store": "sh-01"})
    shop.put_merchant_profile("u1", {"member_level": "platinum", "store": ""})  # "" deletes
    shop.put_platform_profile("u1", {"consent": "basic", "age_band": "25-34"})
    assert shop.get_profiles("u1") == ({"member_level": "platinum"}, {"consent": "basic", "age_band": "25-34"})
    # The platform profile is shared by every app; merchant profiles are not.
    assert cafe.get_profiles("u1") == ({}, {"consent": "basic", "age_band": "25-34"})
    state = shop.user_state("u1")
    assert state.merchant_profile == {"member_level": "platinum"}
    assert state.platform_profile["consent"] == "basic"
    with pytest.raises(ValueError, match="strings"):
        shop.put_merchant_profile("u1", {"level": 3})  # type: ignore[dict-item]


def test_load_profiles_in_batches(store: FeatureStore) -> None:
    merchant = pd.DataFrame({"user_id": ["u1", "u2", "u3"], "member_level": ["gold", None, "silver"],
                             "store": ["s1", "s2", None]})
    platform = pd.DataFrame({"user_id": ["u1", "u4"], "consent": ["basic|location", ""],
                             "city_tier": ["1", np.nan]})
    assert store.load_profiles(merchant, platform, batch=2) == (3, 1)  # u4 has no field: nothing to write
    assert store.get_profiles("u1") == ({"member_level": "gold", "store": "s1"},
                                        {"consent": "basic|location", "city_tier": "1"})
    assert store.get_profiles("u2")[0] == {"store": "s2"}
    assert store.get_profiles("u4") == ({}, {})
    assert store.load_profiles(None, None) == (0, 0)


# --- items ----------------------------------------------------------------------------------------

def test_item_upserts_read_back_aligned(store: FeatureStore, clock: Clock) -> None:
    store.put_item("i1", {"title": "华为 Mate 60", "category": "数码/手机", "price": 5999, "stock": 3,
                          "visible": True, "audience": "member_level:gold"})
    clock.now = T0 + 10
    store.put_item("i2", {"price": 9.5, "visible": "false"})
    clock.now = T0 + 20
    store.put_item("i1", {"stock": 0})  # partial update keeps the other fields
    rows = store.items(["i2", "missing", "i1"])
    assert rows[0] == {"price": 9.5, "visible": False}
    assert rows[1] is None
    assert rows[2] == {"title": "华为 Mate 60", "category": "数码/手机", "price": 5999.0, "stock": 0,
                       "visible": True, "audience": "member_level:gold"}
    assert store.items([]) == []
    assert store.updated_items(T0) == ["i2", "i1"]
    assert store.updated_items(T0 + 15) == ["i1"]
    assert store.updated_items(T0 + 21) == []
    assert store.updated_items_with_ts(T0 + 10) == [("i2", T0 + 10), ("i1", T0 + 20)]


@pytest.mark.parametrize("fields, message", [
    ({"colour": "red"}, "unknown item field"),
    ({"price": -1}, ">= 0"),
    ({"price": "cheap"}, "number"),
    ({"stock": 1.5}, "integer"),
    ({"visible": "maybe"}, "boolean"),
    ({"title": 3}, "string"),
])
def test_bad_item_fields_are_refused_before_writing(store: FeatureStore, fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        store.put_item("i1", {"title": "ok", **fields})
    assert store.items(["i1"]) == [None]


# --- round trips ----------------------------------------------------------------------------------

def _counting_client(handle: RedisHandle) -> tuple[redis.Redis, type]:
    """A real client on the same server whose connections count what they send (one send = one round trip)."""
    base = handle.client.connection_pool.connection_class

    class Counting(base):  # type: ignore[misc, valid-type]
        sends = 0

        def send_packed_command(self, command, check_health=True):  # noqa: ANN001
            Counting.sends += 1
            return super().send_packed_command(command, check_health)

    kwargs = dict(handle.client.connection_pool.connection_kwargs)
    pool = redis.ConnectionPool(connection_class=Counting, **kwargs)
    client = redis.Redis(connection_pool=pool)
    client.ping()  # connect (handshake commands) before counting
    return client, Counting


def test_each_call_is_one_round_trip_and_record_two(redis_single: RedisHandle, clock: Clock) -> None:
    client, counter = _counting_client(redis_single)
    try:
        store = FeatureStore(client, "shop", clock=clock)
        counter.sends = 0
        assert store.record([ev("r1", "u1", "click", T0, "i1"), ev("r2", "u1", "impression", T0, "i2"),
                             ev("r3", "u2", "search", T0, query="tea")]) == [True, True, True]
        assert counter.sends == 2
        counter.sends = 0
        assert store.record([ev("r1", "u1", "click", T0, "i1")]) == [False]  # nothing new: one trip
        assert counter.sends == 1
        for call in (lambda: store.user_state("u1"), lambda: store.items(["i1", "i2", "i3"]),
                     lambda: store.top_items(5), lambda: store.get_profiles("u1"),
                     lambda: store.put_item("i1", {"price": 2.0}),
                     lambda: store.put_merchant_profile("u1", {"a": "1", "b": ""})):
            counter.sends = 0
            call()
            assert counter.sends == 1
    finally:
        client.close()


# --- connections, outages and recovery -----------------------------------------------------------------
#: A bound that is the behaviour (fail fast, the socket timeout): a call to a dead or stalled Redis
#: raises within this, where a client without the timeout would hang. Several times the 0.2-0.25 s
#: timeouts, so a busy machine's scheduling never decides it.
FAIL_FAST_S = 2.0


def test_store_fails_fast_while_redis_is_down_and_recovers(redis_process, tmp_path: Path) -> None:
    with open_redis(redis_process.url, tmp_path) as handle:
        store = FeatureStore(handle.client, "shop")
        assert store.record([ev("d1", "u1", "click", time.time(), "i1")]) == [True]
        assert store.ping()

        redis_process.kill()
        for call in (lambda: store.user_state("u1"), lambda: store.record([ev("d2", "u1", "click", T0, "i2")]),
                     lambda: store.top_items(3), lambda: store.put_item("i1", {"stock": 1})):
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                call()
            assert time.monotonic() - started < FAIL_FAST_S
        assert not store.ping()

        redis_process.start()  # same port, empty (no persistence): the same client just works again
        assert store.ping()
        assert store.record([ev("d1", "u1", "click", time.time(), "i1")]) == [True]
        assert [i for i, _, _ in store.user_state("u1").recent] == ["i1"]


def test_a_stalled_redis_times_out_quickly(redis_process, tmp_path: Path) -> None:
    with open_redis(redis_process.url, tmp_path, timeout_s=0.2) as handle:
        store = FeatureStore(handle.client, "shop")
        store.put_merchant_profile("u1", {"level": "gold"})
        redis_process.pause()
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="user_state"):
            store.user_state("u1")
        assert time.monotonic() - started < FAIL_FAST_S
        redis_process.resume()
        assert store.user_state("u1").merchant_profile == {"level": "gold"}


def test_embedded_server_is_shared_and_keeps_its_data(tmp_path: Path) -> None:
    first = open_redis(None, tmp_path / "redis")
    assert first.embedded and first.description.startswith("embedded redis-server ")
    assert " at unix:/" in first.description and "redis.socket" in first.description
    second = open_redis(None, tmp_path / "redis")  # another worker process would do the same
    assert second.description == first.description
    FeatureStore(first.client, "shop").put_merchant_profile("u1", {"level": "gold"})
    assert FeatureStore(second.client, "shop").get_profiles("u1")[0] == {"level": "gold"}
    second.close()
    assert FeatureStore(first.client, "shop").ping()  # still served for the remaining user
    first.close()
    with open_redis(None, tmp_path / "redis") as again:  # restarted from the RDB in the data folder
        assert FeatureStore(again.client, "shop").get_profiles("u1")[0] == {"level": "gold"}


def test_urls_are_described_without_password(tmp_path: Path) -> None:
    assert redact_url("redis://user:secret@redis.internal:6380/2") == "redis://user@redis.internal:6380/2"
    assert redact_url("redis://:secret@h:6379/0") == "redis://h:6379/0"
    assert redact_url("redis://h:6379/0") == "redis://h:6379/0"
    with open_redis("redis://:secret@127.0.0.1:1/0", tmp_path) as handle:
        assert "secret" not in handle.description
    with pytest.raises(ValueError, match="scheme"):
        open_redis("http://127.0.0.1:6379", tmp_path)


def test_store_needs_a_decoding_client(redis_single: RedisHandle) -> None:
    kwargs = dict(redis_single.client.connection_pool.connection_kwargs, decode_responses=False)
    raw = redis.Redis(connection_pool=redis.ConnectionPool(
        connection_class=redis_single.client.connection_pool.connection_class, **kwargs))
    try:
        with pytest.raises(ValueError, match="decode_responses"):
            FeatureStore(raw, "shop")
    finally:
        raw.close()


def test_a_claim_held_by_another_request_is_pending_not_a_duplicate(store: FeatureStore, clock: Clock) -> None:
    """An event another request claimed but has not logged yet may never be logged (that request
    can die): a retry must not be told it is a duplicate until it is done, or taken over."""
    from features.store import DONE, NEW, PENDING, PENDING_TAKEOVER_S
    first = [ev("e1", "u1", "click", T0, "i1"), ev("e2", "u1", "click", T0, "i2")]
    assert store.claim_states(first) == [NEW, NEW]
    retry = [ev("e1", "u1", "click", T0, "i1"), ev("e2", "u1", "click", T0, "i2"), ev("e2", "u1", "click", T0, "i2")]
    assert store.claim_states(retry) == [PENDING, PENDING, PENDING]
    store.apply(first[:1])  # e1 logged and applied: done
    assert store.claim_states(retry[:2]) == [DONE, PENDING]
    clock.now += PENDING_TAKEOVER_S + 1  # e2's claimer died: a retry takes it over, once per batch
    assert store.claim_states(retry) == [DONE, NEW, DONE]
