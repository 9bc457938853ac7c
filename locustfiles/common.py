"""Shared shopper behaviour of the locust profiles: who visits, what they do, what is checked.

A simulated visitor is one of three kinds, drawn when its visit starts:
- known: a user the model was trained on (full personalization),
- cold: a user with a platform profile but no interactions (first visit from the super-app's
  public pages: the hybrid path),
- unknown: an id nobody has seen (segment popularity).
A visit lasts a random number of tasks (15 on average), then a new visitor takes the slot, so
first visits keep arriving during a long run.

Each task sends exactly one request (so requests/s = visitors × tasks per visitor per second). The
mix, in task weights out of 100:

    home feed 26, related shelf after a click 12, exclusive 5,
    search 10 (Chinese, full pinyin or pinyin initials; typed, or picked from suggest / hot /
    shading / discovery), suggest while typing 10, hot 3, shading 4, discover 3,
    events 25 (impressions of what was shown, clicks, carts, purchases with amount, searches with
    query + source + the search response's request_id), bad requests 2.

Responses are checked, not only their status (`catch_response`): the documented fields and types,
no more items than asked, a home feed never empty, every event of a batch accepted. Bad requests
(oversize `n`, empty `q`, no key, a wrong key, another app, malformed events, a body that is not
JSON, an unknown item) are grouped as `bad: …` and succeed only with their documented answer.

Configuration (environment variables; the defaults match the bench mall of bench/harness/mall.py):
- MINIREC_APP (default `bench`), MINIREC_API_KEY (default the bench app's key);
- MINIREC_USERS_FILE: JSON with lists `known`, `cold`, `items` and optionally `queries`
  (`[{"q", "pinyin", "initials", "weight"}]`; bench/load_run.py writes one); without it every
  visitor is unknown, related shelves use items seen in feeds and queries come from a short list;
- MINIREC_MIX: shares of known, cold, unknown visitors (default `0.5,0.3,0.2`);
- MINIREC_TASKS_PER_USER_S: tasks each visitor runs per second (default 1);
- MINIREC_LOAD_BASE_RPS: requests/s at the shape's multiplier 1 (default 10);
- MINIREC_LOAD_DURATION_S: length of the run (default: 300 s; soak 600 s);
- MINIREC_SPIKE_FACTOR (default 30), MINIREC_SPIKE_RAMP_S (default 30, never more);
- MINIREC_LOAD_RECORD: a folder; when set, every request is written to `requests-<pid>.csv` there
  and the shape writes `phases.json` (the plan and when each phase started), for bench/load_run.py.
"""

from __future__ import annotations

import csv
import json
import os
import random
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Any, Callable

from locust import FastHttpUser, LoadTestShape, events, task

from locustfiles.target import BENCH_APP, BENCH_KEY
from vocab.pinyin import pinyin_forms
from locustfiles.shapes import MAX_RAMP_S, SPIKE_FACTOR, Plan, plan_for

APP = os.environ.get("MINIREC_APP", BENCH_APP)
API_KEY = os.environ.get("MINIREC_API_KEY", BENCH_KEY)
PAGE = 20
RELATED_N = 10
#: Queries when no users file gives the app's own (common mall searches).
FALLBACK_QUERIES = ["手机", "连衣裙", "零食", "咖啡", "运动鞋", "面膜", "耳机", "牛奶", "茶叶", "水果"]


def _load_population(path: str | None) -> dict[str, list[Any]]:
    """Known / cold users, items and queries from MINIREC_USERS_FILE (users and items empty without one)."""
    raw: dict[str, Any] = {}
    if path:
        with open(path, encoding="utf-8") as fh:
            raw = json.load(fh)
    out: dict[str, list[Any]] = {name: [str(x) for x in raw.get(name, [])] for name in ("known", "cold", "items")}
    queries = [q for q in raw.get("queries", []) if isinstance(q, dict) and str(q.get("q", "")).strip()]
    out["queries"] = queries or [_query_entry(q) for q in FALLBACK_QUERIES]
    return out


def _query_entry(query: str, weight: float = 1.0) -> dict[str, Any]:
    """A query with its full pinyin and initials, as bench/load_run.py writes them."""
    full, initials = pinyin_forms(query)
    return {"q": query, "pinyin": full, "initials": initials, "weight": weight}


def _mix(text: str) -> tuple[float, float, float]:
    shares = tuple(float(x) for x in text.split(","))
    if len(shares) != 3 or min(shares) < 0 or sum(shares) <= 0:
        raise ValueError(f"MINIREC_MIX={text!r}: expected three non-negative shares (known,cold,unknown)")
    return shares  # type: ignore[return-value]


def _env_float(name: str, default: float) -> float:
    value = float(os.environ.get(name, default))
    if not value > 0:
        raise ValueError(f"{name} must be positive, not {value}")
    return value


POPULATION = _load_population(os.environ.get("MINIREC_USERS_FILE"))
QUERY_WEIGHTS = [float(q.get("weight", 1.0)) for q in POPULATION["queries"]]
MIX = _mix(os.environ.get("MINIREC_MIX", "0.5,0.3,0.2"))
TASKS_PER_USER_S = _env_float("MINIREC_TASKS_PER_USER_S", 1.0)
BASE_RPS = _env_float("MINIREC_LOAD_BASE_RPS", 10.0)
RECORD_DIR = os.environ.get("MINIREC_LOAD_RECORD") or None
#: Query forms, their share among fresh searches and typing, and their name in the statistics.
FORMS = (("q", 0.6, "zh"), ("pinyin", 0.25, "pinyin"), ("initials", 0.15, "initials"))


# ------------------------------------------------------------------------------------ the visitor
class MallUser(FastHttpUser):
    """One slot of the mini-program's traffic: a visitor (known, cold or unknown) at a time."""

    def wait_time(self) -> float:
        """Exponential pauses (mean 1 / TASKS_PER_USER_S): the visitors' requests together arrive as a
        Poisson stream, as independent shoppers do. A constant pace would phase-lock the visitors
        spawned together, so that each second's requests arrived in one burst of a few milliseconds."""
        return random.expovariate(TASKS_PER_USER_S)
    # Fail fast rather than pile up when the server is saturated (it counts as a failure).
    network_timeout = 10.0
    connection_timeout = 5.0

    def on_start(self) -> None:
        self.headers = {"X-API-Key": API_KEY}
        self._new_visit()

    def _new_visit(self) -> None:
        """A new visitor in this slot: kind, id, and an empty session."""
        pools = (("known", POPULATION["known"]), ("cold", POPULATION["cold"]), ("unknown", [""]))
        kinds = [(kind, share) for (kind, pool), share in zip(pools, MIX) if pool and share > 0]
        self.kind = random.choices([k for k, _ in kinds], weights=[s for _, s in kinds])[0] if kinds else "unknown"
        pool = POPULATION.get(self.kind, [])
        self.user_id = random.choice(pool) if self.kind != "unknown" and pool else f"visitor-{uuid.uuid4().hex[:12]}"
        self.tasks_left = 1 + int(random.expovariate(1 / 14))
        # the last page shown: [(item_id, price)], its request_id and route, for clicks and events
        self.page: list[tuple[str, float]] = []
        self.page_request_id: str | None = None
        self.pending: list[dict[str, Any]] = []  # events not sent yet (sent by the events task)
        self.next_query: tuple[str, str] | None = None  # (query, source) the next search will send
        self.typing: tuple[dict[str, Any], str, str, int] | None = None  # query, form key, form name, typed

    def _end_task(self) -> None:
        self.tasks_left -= 1
        if self.tasks_left <= 0:
            self._new_visit()

    # ------------------------------------------------------------------ requests and checks
    def _get(self, path: str, name: str, check: Callable[[dict[str, Any]], str | None]) -> dict[str, Any] | None:
        """GET `path` with the app's key; the response must be 200, JSON and pass `check`."""
        with self.client.get(path, headers=self.headers, name=name, catch_response=True) as response:
            body = _json_body(response)
            problem = (f"HTTP {response.status_code}" if response.status_code != 200
                       else "not a JSON object" if body is None else check(body))
            if problem:
                response.failure(f"{problem}: {(response.text or '')[:200]}")
                return None
            context = response.request_meta["context"]  # recorded by _record_request
            context["degraded"] = body.get("degraded")
            context["strategy"] = body.get("strategy")
            response.success()
            return body

    def _shelf(self, path: str, name: str, n: int, *, non_empty: bool) -> dict[str, Any] | None:
        body = self._get(path, name, lambda b: _check_page(b, n, non_empty))
        if body is not None and body["items"]:
            self.page = [(i["item_id"], float(i.get("price") or 0.0)) for i in body["items"]]
            self.page_request_id = body["request_id"]
            self._impressions(body["items"][:10], body["request_id"])
        return body

    def _impressions(self, items: list[dict[str, Any]], request_id: str) -> None:
        self.pending += [self._event("impression", item_id=i["item_id"], request_id=request_id) for i in items]

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        return {"event_id": uuid.uuid4().hex, "user_id": self.user_id, "type": kind, **fields}

    def _user_param(self) -> str:
        return f"user_id={urllib.parse.quote(self.user_id)}"

    # ------------------------------------------------------------------ shelves
    @task(26)
    def home(self) -> None:
        """The home feed, grouped per visitor kind (the three scoring paths)."""
        self._shelf(f"/v1/apps/{APP}/recommend/home?{self._user_param()}&n={PAGE}", f"home [{self.kind}]", PAGE,
                    non_empty=True)
        self._end_task()

    @task(12)
    def related(self) -> None:
        """A click on an item of the last page, then its detail page's related shelf (sometimes a cart
        or a purchase of the clicked item)."""
        if self.page:
            item, price = random.choice(self.page)
            self.pending.append(self._event("click", item_id=item, request_id=self.page_request_id))
            roll = random.random()
            if roll < 0.04:
                self.pending.append(self._event("purchase", item_id=item, request_id=self.page_request_id,
                                                amount=round(price * random.choice([1.0, 1.0, 0.9]), 2)))
            elif roll < 0.12:
                self.pending.append(self._event(random.choice(["cart", "favorite"]), item_id=item,
                                                request_id=self.page_request_id))
        elif POPULATION["items"]:
            item = random.choice(POPULATION["items"])  # a detail page opened from outside (a shared link)
        else:
            return self.home()
        self._shelf(f"/v1/apps/{APP}/recommend/related/{urllib.parse.quote(item)}?{self._user_param()}"
                    f"&n={RELATED_N}", "related", RELATED_N, non_empty=False)
        self._end_task()

    @task(5)
    def exclusive(self) -> None:
        """Member-only items the visitor may see (often empty: most visitors are not members)."""
        self._shelf(f"/v1/apps/{APP}/recommend/exclusive?{self._user_param()}&n={PAGE}", "exclusive", PAGE,
                    non_empty=False)
        self._end_task()

    # ------------------------------------------------------------------ search box
    @task(10)
    def search(self) -> None:
        """A result page: the query picked from suggest / hot / shading / discovery, else typed."""
        if self.next_query is not None:
            query, source = self.next_query
            name = f"search [{source}]"
        else:
            entry, key, form = self._pick_query()
            query, source, name = entry[key], "typed", f"search [{form}]"
        self.next_query = None
        path = f"/v1/apps/{APP}/search?q={urllib.parse.quote(query)}&n={PAGE}&{self._user_param()}"
        body = self._get(path, name, _check_search)
        if body is not None:
            self.pending.append(self._event("search", query=query[:100], source=source,
                                            request_id=body["request_id"]))
            if body["items"]:
                self.page = [(i["item_id"], float(i.get("price") or 0.0)) for i in body["items"]]
                self.page_request_id = body["request_id"]
                self._impressions(body["items"][:10], body["request_id"])
        self._end_task()

    @task(10)
    def suggest(self) -> None:
        """One more character typed in the search box (Chinese, pinyin or initials) and its
        suggestions; sometimes a suggestion is picked for the next search."""
        if self.typing is None:
            entry, key, form = self._pick_query()
            self.typing = (entry, key, form, 0)
        entry, key, form, typed = self.typing
        text = str(entry[key])
        typed = min(len(text), typed + random.choice([1, 1, 2]))
        prefix = text[:typed]
        path = f"/v1/apps/{APP}/search/suggest?prefix={urllib.parse.quote(prefix)}&{self._user_param()}"
        body = self._get(path, f"suggest [{form}]", _check_suggest)
        self.typing = (entry, key, form, typed)
        if typed >= len(text) or (body and body["suggestions"] and typed >= 2 and random.random() < 0.35):
            picked = body["suggestions"][0]["text"] if body and body["suggestions"] else entry["q"]
            self.next_query, self.typing = (picked, "suggest"), None
        self._end_task()

    @task(3)
    def hot(self) -> None:
        """The hot-search list; sometimes one is tapped (the next search)."""
        body = self._get(f"/v1/apps/{APP}/search/hot", "hot", _check_hot)
        if body and body["items"] and random.random() < 0.5:
            self.next_query = (random.choice(body["items"])["query"], "hot")
        self._end_task()

    @task(4)
    def shading(self) -> None:
        """The grey default query of the empty box (an impression of it; sometimes searched)."""
        body = self._get(f"/v1/apps/{APP}/search/shading?{self._user_param()}", "shading", _check_shading)
        if body and body.get("query"):
            self.pending.append(self._event("impression", query=body["query"][:100], request_id=body["request_id"]))
            if random.random() < 0.3:
                self.next_query = (body["query"], "shading")
        self._end_task()

    @task(3)
    def discover(self) -> None:
        """Search discovery chips (impressions of them; sometimes one is tapped)."""
        body = self._get(f"/v1/apps/{APP}/search/discover?{self._user_param()}", "discover", _check_discover)
        if body and body["items"]:
            self.pending += [self._event("impression", query=c["query"][:100], request_id=body["request_id"])
                             for c in body["items"][:4]]
            if random.random() < 0.4:
                self.next_query = (random.choice(body["items"])["query"], "discovery")
        self._end_task()

    def _pick_query(self) -> tuple[dict[str, Any], str, str]:
        """A logged query (by how often it was searched) and the form it is typed in."""
        entry = random.choices(POPULATION["queries"], weights=QUERY_WEIGHTS)[0]
        key, _, form = random.choices(FORMS, weights=[share for _, share, _ in FORMS])[0]
        if not entry.get(key):  # an ASCII query has no pinyin of its own
            key, form = "q", "zh"
        return entry, key, form

    # ------------------------------------------------------------------ events
    @task(25)
    def send_events(self) -> None:
        """What the visitor saw and did since the last batch, as the mini-program would send it."""
        batch, self.pending = self.pending[:100], self.pending[100:]
        if not batch:  # nothing shown yet: a view of a catalog item
            item = random.choice(POPULATION["items"] or [p for p, _ in self.page] or ["unknown-item"])
            batch = [self._event("view", item_id=item)]
        with self.client.post(f"/v1/apps/{APP}/events", json={"events": batch}, headers=self.headers,
                              name="events", catch_response=True) as response:
            body = _json_body(response)
            if response.status_code != 200 or body is None:
                response.failure(f"HTTP {response.status_code}: {(response.text or '')[:200]}")
            elif body.get("rejected"):
                response.failure(f"rejected: {body['rejected'][:2]}")
            elif body.get("accepted", 0) + body.get("duplicates", 0) != len(batch):
                response.failure(f"{len(batch)} events sent, answer {body}")
            else:
                response.request_meta["context"]["degraded"] = body.get("degraded")
                response.success()
        self._end_task()

    # ------------------------------------------------------------------ bad requests
    @task(2)
    def bad_request(self) -> None:
        """A request a buggy or hostile client sends; it must get its documented answer."""
        name, method, path, headers, body, status, code = random.choice(BAD_REQUESTS)(self)
        kwargs: dict[str, Any] = {"headers": headers, "name": name, "catch_response": True}
        if body is not None:
            kwargs["data"] = body
            kwargs["headers"] = {**headers, "Content-Type": "application/json"}
        with self.client.request(method, path, **kwargs) as response:
            got = _json_body(response)
            if response.status_code != status:
                response.failure(f"expected HTTP {status}, got {response.status_code}: {(response.text or '')[:200]}")
            elif status >= 400 and (got is None or (got.get("error") or {}).get("code") != code):
                response.failure(f"expected error code {code!r}: {(response.text or '')[:200]}")
            elif status == 200 and (got is None or not got.get("note")):
                response.failure(f"expected 200 with a note: {(response.text or '')[:200]}")
            else:
                response.success()
        self._end_task()


def _json_body(response: Any) -> dict[str, Any] | None:
    try:
        body = response.json()
    except Exception:  # noqa: BLE001 - any undecodable body is "not JSON"
        return None
    return body if isinstance(body, dict) else None


# ------------------------------------------------------------------------------------ checks
def _check_page(body: dict[str, Any], n: int, non_empty: bool) -> str | None:
    """A recommendation (or search) page: request_id, model_version, items with id, score and reason."""
    items = body.get("items")
    if not isinstance(items, list):
        return "no items list"
    if not isinstance(body.get("request_id"), str) or not body.get("model_version"):
        return "no request_id / model_version"
    if len(items) > n:
        return f"{len(items)} items for n={n}"
    if non_empty and not items:
        return "empty page"
    ids = [i.get("item_id") for i in items if isinstance(i, dict)]
    if len(ids) != len(items) or len(set(ids)) != len(ids):
        return "items without ids or repeated"
    if any(not isinstance(i.get("score"), (int, float)) or not isinstance(i.get("reason"), str) for i in items):
        return "an item without score or reason"
    return None


def _check_search(body: dict[str, Any]) -> str | None:
    problem = _check_page(body, PAGE, non_empty=False)
    if problem:
        return problem
    if not isinstance(body.get("fallback"), bool) or not isinstance(body.get("total"), int):
        return "no fallback flag or total"
    return None


def _check_suggest(body: dict[str, Any]) -> str | None:
    s = body.get("suggestions")
    if not isinstance(s, list) or any(not isinstance(x, dict) or not x.get("text") for x in s):
        return "no suggestions list of texts"
    return None


def _check_hot(body: dict[str, Any]) -> str | None:
    items = body.get("items")
    if not isinstance(items, list) or any(not isinstance(x, dict) or not x.get("query") for x in items):
        return "no list of hot queries"
    return None if body.get("source") in ("live", "training") else f"unknown source {body.get('source')!r}"


def _check_shading(body: dict[str, Any]) -> str | None:
    if "query" not in body or not isinstance(body.get("request_id"), str):
        return "no query / request_id"
    return None


def _check_discover(body: dict[str, Any]) -> str | None:
    items = body.get("items")
    if not isinstance(items, list) or any(not isinstance(x, dict) or not x.get("query") for x in items):
        return "no list of chips"
    return None


# ------------------------------------------------------------------------------------ bad requests
BadRequest = tuple[str, str, str, dict[str, str], str | None, int, str]


def _bad_oversize_n(user: MallUser) -> BadRequest:
    n = random.choice([101, 500, 10_000])
    return ("bad: oversize n", "GET", f"/v1/apps/{APP}/recommend/home?{user._user_param()}&n={n}", user.headers,
            None, 422, "invalid_request")


def _bad_empty_q(user: MallUser) -> BadRequest:
    return ("bad: empty q", "GET", f"/v1/apps/{APP}/search?q={random.choice(['', '%20%20'])}", user.headers,
            None, 422, "invalid_request")


def _bad_no_key(user: MallUser) -> BadRequest:
    return ("bad: no key", "GET", f"/v1/apps/{APP}/recommend/home?n=5", {}, None, 401, "unauthorized")


def _bad_wrong_key(user: MallUser) -> BadRequest:
    return ("bad: wrong key", "GET", f"/v1/apps/{APP}/search/hot", {"X-API-Key": f"wrong-{uuid.uuid4().hex[:8]}"},
            None, 401, "unauthorized")


def _bad_other_app(user: MallUser) -> BadRequest:
    return ("bad: other app", "GET", "/v1/apps/another-shop/recommend/home?n=5", user.headers, None, 403,
            "forbidden")


def _bad_events(user: MallUser) -> BadRequest:
    # every event invalid (no event_id, an unknown type, a negative amount): the batch is refused
    events_ = [{"user_id": user.user_id, "type": "impression", "item_id": "x"},
               {"event_id": uuid.uuid4().hex, "user_id": user.user_id, "type": "teleport"},
               {"event_id": uuid.uuid4().hex, "user_id": user.user_id, "type": "purchase", "amount": -5}]
    return ("bad: malformed events", "POST", f"/v1/apps/{APP}/events", user.headers,
            json.dumps({"events": events_}), 422, "invalid_request")


def _bad_not_json(user: MallUser) -> BadRequest:
    return ("bad: events not JSON", "POST", f"/v1/apps/{APP}/events", user.headers, "{events: [", 422,
            "invalid_request")


def _unknown_item(user: MallUser) -> BadRequest:
    # documented: an unknown item is not an error but a cold-start answer with a note
    return ("bad: unknown item (200 + note)", "GET",
            f"/v1/apps/{APP}/recommend/related/no-such-{uuid.uuid4().hex[:6]}?n=5", user.headers, None, 200, "")


BAD_REQUESTS: list[Callable[[MallUser], BadRequest]] = [_bad_oversize_n, _bad_empty_q, _bad_no_key, _bad_wrong_key,
                                                        _bad_other_app, _bad_events, _bad_not_json, _unknown_item]


# ------------------------------------------------------------------------------------ recording
class _Recorder:
    """Every request of this process as a CSV row (send time, name, ms, ok, status, degraded, strategy)."""

    def __init__(self) -> None:
        self.fh: Any = None
        self.writer: Any = None

    def row(self, start_time: float, name: str, ms: float, ok: bool, status: int, context: dict[str, Any]) -> None:
        if RECORD_DIR is None:
            return
        if self.writer is None:
            Path(RECORD_DIR).mkdir(parents=True, exist_ok=True)
            self.fh = open(Path(RECORD_DIR) / f"requests-{os.getpid()}.csv", "w", newline="", encoding="utf-8")
            self.writer = csv.writer(self.fh)
            self.writer.writerow(["start", "name", "ms", "ok", "status", "degraded", "strategy"])
        degraded = context.get("degraded")
        self.writer.writerow([f"{start_time:.4f}", name, f"{ms:.2f}", int(ok), status,
                              "" if degraded is None else int(bool(degraded)), context.get("strategy") or ""])

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = self.writer = None


RECORDER = _Recorder()


@events.request.add_listener
def _record_request(request_type: str, name: str, response_time: float, response_length: int,
                    response: Any = None, context: dict[str, Any] | None = None, exception: Any = None,
                    start_time: float | None = None, **_: Any) -> None:
    status = getattr(response, "status_code", 0) or 0
    RECORDER.row(start_time or time.time() - response_time / 1000, name, response_time, exception is None,
                 int(status), context or {})


@events.quitting.add_listener
def _close_recorder(**_: Any) -> None:
    RECORDER.close()


@events.test_stop.add_listener
def _flush_recorder(**_: Any) -> None:
    if RECORDER.fh is not None:
        RECORDER.fh.flush()


# ------------------------------------------------------------------------------------ shapes
class PlannedShape(LoadTestShape):
    """A LoadTestShape following a `shapes.Plan`: visitors = base visitors × the plan's multiplier.

    Subclasses set `profile`. The plan is built from MINIREC_LOAD_DURATION_S (default
    `default_duration`); base visitors = MINIREC_LOAD_BASE_RPS / MINIREC_TASKS_PER_USER_S. With
    MINIREC_LOAD_RECORD set, `phases.json` there gets the plan and the wall-clock start of each phase.
    """

    abstract = True  # locust must not pick this base up as a shape of its own (the profiles import it)
    profile = "spike"
    default_duration = 300.0

    def __init__(self) -> None:
        super().__init__()
        duration = _env_float("MINIREC_LOAD_DURATION_S", self.default_duration)
        self.plan: Plan = plan_for(self.profile, duration,
                                   factor=_env_float("MINIREC_SPIKE_FACTOR", SPIKE_FACTOR),
                                   ramp_s=min(_env_float("MINIREC_SPIKE_RAMP_S", MAX_RAMP_S), MAX_RAMP_S))
        self.base_users = BASE_RPS / TASKS_PER_USER_S
        # fast enough to follow any ramp between two ticks (and to drop at once after the spike)
        self.spawn_rate = max(1.0, self.base_users * self.plan.peak())
        self.started: dict[str, float] = {}
        self.t0: float | None = None

    def tick(self) -> tuple[int, float] | None:
        run_time = self.get_run_time()
        users = self.plan.users_at(run_time, self.base_users)
        phase = self.plan.phase_at(run_time)
        if self.t0 is None:
            self.t0 = time.time() - run_time
        if phase is not None and phase not in self.started:
            self.started[phase] = time.time()
            self._write_phases()
        if users is None:
            return None
        return users, self.spawn_rate

    def _write_phases(self) -> None:
        if RECORD_DIR is None:
            return
        doc = {"profile": self.profile, "t0": self.t0, "duration_s": self.plan.duration, "base_rps": BASE_RPS,
               "tasks_per_user_s": TASKS_PER_USER_S, "base_users": self.base_users, "stages": self.plan.describe(),
               "phase_started": self.started}
        target = Path(RECORD_DIR) / "phases.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=2), encoding="utf-8")
        tmp.replace(target)  # atomic: a reader never sees half a file
