"""`minirec simulate`: simulated shoppers of the synthetic mall drive a running server over HTTP,
then the server's own analytics give each experiment's lifts.

Each simulated user is a known user of the mall's `ground_truth.parquet` (optionally mixed with
first-time visitors known only to the platform) who acts on their ground-truth interests, and only
on what the service shows them. An item *matches* a user when its top category (the part of its
category path before '/') is one of the user's interests. Per session the user:

1. opens the home feed (20 items), sees them all (impressions) and clicks each with a probability
   that is higher for matching items and falls with the position; a clicked item opens its detail
   page (the related shelf, same click model) and may be bought (likelier when it matches);
2. sees the shading word in the search box (a query impression) and searches it, likely when it
   matches their interests; otherwise looks at the discovery chips and may search the first one
   that matches; otherwise may type a query of their own (the leaf name of an interest category).
   A search page gets the same click and purchase model.

Whether a *query* matches a user is decided by the service's own search: a query matches when at
least half of the top 10 results of an anonymous search for it are matching items (one cached
request per distinct query; anonymous, so the user's personalization does not tilt the check).

Every event goes to `POST events` with the `request_id` of the response that showed what was acted
on, one batch per page; ids are uuid4. All randomness comes from `--seed`: one child generator per
user, so a user's choices do not depend on thread timing (the server's answers still may: hot lists
move with other users' searches). Afterwards `GET analytics` over the simulation's own time window
(start − 1 s .. end + 1 s; events carry the server's receive time) gives the lifts reported.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import numpy as np
import pandas as pd
from tqdm import tqdm

HOME_N = 20          # items on a home feed page
RELATED_N = 10       # items on the detail page's related shelf
SEARCH_N = 10        # results on a search page
DISCOVER_N = 8       # discovery chips
CHECK_N = 10         # results looked at to decide whether a query matches a user's interests
MAX_EVENTS_PER_POST = 1000
#: Anything else going wrong on the wire (refused, reset, timed out, garbled): the server is not there.
CONNECT_ERRORS = (OSError, http.client.HTTPException)
#: Errors of a kept-alive connection the server closed meanwhile: reconnect and send again.
STALE_CONNECTION = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


# --------------------------------------------------------------------------------------------------
# The behaviour model


@dataclass(frozen=True)
class Behaviour:
    """Probabilities of the simulated shopper (the defaults are the documented model)."""

    click_match: float = 0.30       # click on a matching item at the top of a page
    click_other: float = 0.04       # … on an item outside the user's interests
    position_decay: float = 0.15    # p / (1 + decay * position): lower items get fewer clicks
    buy_match: float = 0.25         # a clicked matching item is bought
    buy_other: float = 0.05
    search_shading_match: float = 0.6   # the user searches the shading word when it matches …
    search_shading_other: float = 0.05  # … and when it does not
    search_chip: float = 0.3        # a matching discovery chip is searched (chips are less salient)
    search_typed: float = 0.1       # nothing fitting was offered: the user types a query of their own

    def click_probability(self, match: bool, position: int) -> float:
        """Chance that an item shown at 0-based `position` is clicked."""
        return (self.click_match if match else self.click_other) / (1.0 + self.position_decay * position)

    def buy_probability(self, match: bool) -> float:
        """Chance that a clicked item is bought."""
        return self.buy_match if match else self.buy_other


def top_category(path: str | None) -> str:
    """The top level of a category path (`数码/手机` → `数码`); '' for no category."""
    return (path or "").split("/", 1)[0].strip()


def matches(category: str | None, interests: frozenset[str]) -> bool:
    """Whether an item of this category path is one of the user's interest top categories."""
    return top_category(category) in interests


def query_matches(result_categories: list[str], interests: frozenset[str]) -> bool:
    """A query matches when at least half of its top results (categories given) are matching items;
    a query with no results matches nobody."""
    hits = sum(matches(c, interests) for c in result_categories)
    return bool(result_categories) and 2 * hits >= len(result_categories)


# --------------------------------------------------------------------------------------------------
# The mall's users


@dataclass(frozen=True)
class SimUser:
    user_id: str
    interests: frozenset[str]
    known: bool  # has interactions in the training data (else: a first visit, known to the platform)


@dataclass
class Mall:
    """What the simulation needs from the data folder: users' true interests, who is known, and the
    leaf category names a user would type for each top category."""

    interests: dict[str, frozenset[str]]
    known: set[str]
    leaves: dict[str, list[str]]

    def user(self, user_id: str) -> SimUser:
        return SimUser(user_id, self.interests[user_id], user_id in self.known)


def _read_table(folder: Path, name: str, columns: list[str]) -> pd.DataFrame:
    """Columns of `folder/name.parquet` (or .csv); FileNotFoundError naming the file when absent."""
    from offline_training.datafolder import find_table_file
    path = find_table_file(folder, name)
    if path is None:
        raise FileNotFoundError(f"{folder / (name + '.parquet')} not found: --data must be a synthetic mall's "
                                "data folder (`minirec data synth` or `minirec demo` write one)")
    if path.suffix == ".csv":
        return pd.read_csv(path, usecols=columns, dtype=str, keep_default_na=False)
    return pd.read_parquet(path, columns=columns)


def load_mall(data: Path) -> Mall:
    """Read ground truth, the known users and the catalog's category leaves from a mall data folder."""
    truth = _read_table(data, "ground_truth", ["user_id", "interests"])
    interests = {str(u): frozenset(t for t in str(i).split("|") if t)
                 for u, i in zip(truth["user_id"], truth["interests"].fillna(""))}
    known = set(_read_table(data, "interactions", ["user_id"])["user_id"].astype(str).unique())
    categories = _read_table(data, "items", ["category"])["category"].dropna().astype(str).unique()
    leaves: dict[str, list[str]] = {}
    for path in sorted(categories):
        top, _, leaf = path.partition("/")
        if leaf:
            leaves.setdefault(top, []).append(leaf.rsplit("/", 1)[-1])
    return Mall(interests, known, leaves)


def sample_users(mall: Mall, n: int, first_visit_share: float, rng: np.random.Generator) -> list[SimUser]:
    """`n` users with ground-truth interests: known users, plus a `first_visit_share` of users the
    merchant has never seen (in the ground truth, not in interactions). ValueError if too few."""
    with_interests = sorted(u for u, i in mall.interests.items() if i)
    known = [u for u in with_interests if u in mall.known]
    fresh = [u for u in with_interests if u not in mall.known]
    n_fresh = int(round(n * first_visit_share))
    if n - n_fresh > len(known) or n_fresh > len(fresh):
        raise ValueError(f"--users {n} with --first-visit-share {first_visit_share}: the mall has only "
                         f"{len(known)} known and {len(fresh)} first-visit users with interests")
    picked = list(rng.choice(known, n - n_fresh, replace=False)) if n > n_fresh else []
    if n_fresh:
        picked += list(rng.choice(fresh, n_fresh, replace=False))
    return [mall.user(str(u)) for u in picked]


# --------------------------------------------------------------------------------------------------
# HTTP


class ApiError(Exception):
    """The API answered with an error status (message from its `{"error": {"code", "message"}}`)."""

    def __init__(self, method: str, path: str, status: int, body: Any) -> None:
        error = body.get("error") if isinstance(body, dict) else None
        self.status = status
        self.code = error.get("code", "") if isinstance(error, dict) else ""
        message = error.get("message", "") if isinstance(error, dict) else str(body)[:300]
        super().__init__(f"{method} {path} answered {status}{' ' + self.code if self.code else ''}: {message}")


class ServerUnreachable(Exception):
    """No server answers at the base URL."""


class Api:
    """A minimal client of one app's routes: one kept-alive connection per thread (stdlib only, so
    the command needs nothing beyond minirec's own dependencies), retries where retrying is safe."""

    RETRIES = 5

    def __init__(self, base: str, app: str, key: str, timeout: float = 30.0) -> None:
        parts = urlsplit(base if "://" in base else f"http://{base}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"--base {base!r} is not an http(s) URL like http://127.0.0.1:8000")
        self.base = base
        self.scheme, self.host, self.port = parts.scheme, parts.hostname, parts.port
        self.prefix = parts.path.rstrip("/")
        self.app_path = f"{self.prefix}/v1/apps/{quote(app, safe='')}"
        self.key = key
        self.timeout = timeout
        self.local = threading.local()
        self.lock = threading.Lock()
        self.requests = 0
        self.degraded = 0  # answers with `degraded: true` (server overloaded, or Redis slow or down)

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
            conn = self.local.conn = cls(self.host, self.port, timeout=self.timeout)
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self.local, "conn", None)
        if conn is not None:
            conn.close()
            self.local.conn = None

    def _send(self, method: str, path: str, body: bytes | None) -> tuple[int, dict[str, str], Any]:
        """One exchange: (status, headers, parsed JSON or text); reconnects once on a stale connection."""
        headers = {"X-API-Key": self.key, "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        for attempt in (0, 1):
            try:
                conn = self._connection()
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                raw = response.read()
                break
            except STALE_CONNECTION:
                self._drop_connection()
                if attempt:
                    raise ServerUnreachable(f"the server at {self.base} closed the connection: is it running?")
            except TimeoutError as exc:
                self._drop_connection()
                raise ServerUnreachable(f"{method} {path}: no answer from {self.base} "
                                        f"within {self.timeout:g} s") from exc
            except CONNECT_ERRORS as exc:
                self._drop_connection()
                raise ServerUnreachable(f"cannot reach {self.base} ({exc}): is the server running at {self.base}?") \
                    from exc
        with self.lock:
            self.requests += 1
        try:
            parsed: Any = json.loads(raw)
        except ValueError:
            parsed = raw.decode(errors="replace")
        return response.status, dict(response.getheaders()), parsed

    def request(self, method: str, path: str, body: Any = None, retries: int | None = None) -> Any:
        """The parsed JSON answer of a 2xx; 429 waits `Retry-After` and 503 a moment, then retry
        (events are idempotent by event_id, so a POST may be sent again); other errors raise ApiError."""
        data = None if body is None else json.dumps(body, ensure_ascii=False).encode()
        retries = self.RETRIES if retries is None else retries
        attempt = 0
        while True:
            status, headers, parsed = self._send(method, path, data)
            if 200 <= status < 300:
                return parsed
            if status not in (429, 503) or attempt >= retries:
                raise ApiError(method, path, status, parsed)
            attempt += 1
            retry_after = {k.lower(): v for k, v in headers.items()}.get("retry-after", "0")
            time.sleep(max(float(retry_after) if retry_after.isdigit() else 0.0, 0.2 * attempt))

    def get(self, route: str, **params: Any) -> Any:
        """GET an app route (`route` after /v1/apps/{app}), None-valued params left out."""
        query = urlencode({k: v for k, v in params.items() if v is not None})
        answer = self.request("GET", f"{self.app_path}{route}" + (f"?{query}" if query else ""))
        if isinstance(answer, dict) and answer.get("degraded"):
            with self.lock:
                self.degraded += 1
        return answer

    def post_events(self, events: list[dict]) -> None:
        """POST events in batches of at most 1000; a rejected event is an error of the simulator."""
        for lo in range(0, len(events), MAX_EVENTS_PER_POST):
            answer = self.request("POST", f"{self.app_path}/events", {"events": events[lo:lo + MAX_EVENTS_PER_POST]})
            if answer.get("rejected"):
                raise ApiError("POST", f"{self.app_path}/events", 200,
                               {"error": {"code": "rejected", "message": json.dumps(answer["rejected"][:3])}})

    def healthz(self) -> None:
        """Raise ServerUnreachable unless something answers /healthz."""
        status, _, _ = self._send("GET", f"{self.prefix}/healthz", None)
        if status != 200:
            raise ServerUnreachable(f"{self.base}/healthz answered {status}: is a minirec server running there?")


class QueryJudge:
    """Decides whether a query matches a user's interests by the categories of the top results of an
    anonymous search for it; one request per distinct query, cached (thread-safe)."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.cache: dict[str, list[str]] = {}
        self.lock = threading.Lock()

    def result_categories(self, query: str) -> list[str]:
        with self.lock:
            found = self.cache.get(query)
        if found is None:  # two threads may both ask at first; they get the same answer
            page = self.api.get("/search", q=query, n=CHECK_N)
            found = [str(item.get("category") or "") for item in page.get("items", [])]
            with self.lock:
                self.cache[query] = found
        return found

    def matches(self, query: str, interests: frozenset[str]) -> bool:
        return query_matches(self.result_categories(query), interests)


# --------------------------------------------------------------------------------------------------
# One user's visits


def _event(user_id: str, type_: str, request_id: str, **fields: Any) -> dict:
    """An event with a fresh uuid4 id; fields that are None are left out."""
    return {"event_id": uuid.uuid4().hex, "user_id": user_id, "type": type_, "request_id": request_id,
            **{k: v for k, v in fields.items() if v is not None}}


@dataclass
class Visitor:
    """One simulated user's sessions; `stats` counts what they did (for the run's own summary)."""

    api: Api
    judge: QueryJudge
    mall: Mall
    user: SimUser
    rng: np.random.Generator
    behaviour: Behaviour = field(default_factory=Behaviour)
    stats: Counter = field(default_factory=Counter)
    variants: dict[str, str] = field(default_factory=dict)  # scene → variant seen in responses

    def run(self, sessions: int, stop: threading.Event) -> Counter:
        for _ in range(sessions):
            if stop.is_set():
                break
            self.home()
            self.search_box()
        return self.stats

    def _chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def _note_variant(self, scene: str, response: dict) -> None:
        if response.get("variant"):
            self.variants[scene] = str(response["variant"])

    def _page(self, response: dict, scene: str, first: list[dict] | None = None) -> list[dict]:
        """Impressions of a page's items, the clicks and purchases they get, posted as one batch
        (after `first`, e.g. the search event); returns the clicked items."""
        user, request_id = self.user, response["request_id"]
        events = list(first or [])
        clicked = []
        for position, item in enumerate(response.get("items", [])):
            events.append(_event(user.user_id, "impression", request_id, item_id=item["item_id"]))
            match = matches(item.get("category"), user.interests)
            if not self._chance(self.behaviour.click_probability(match, position)):
                continue
            clicked.append(item)
            events.append(_event(user.user_id, "click", request_id, item_id=item["item_id"]))
            if self._chance(self.behaviour.buy_probability(match)):
                events.append(_event(user.user_id, "purchase", request_id, item_id=item["item_id"],
                                     amount=item.get("price")))
                self.stats[f"{scene}_purchases"] += 1
        self.stats[f"{scene}_impressions"] += len(response.get("items", []))
        self.stats[f"{scene}_clicks"] += len(clicked)
        if events:
            self.api.post_events(events)
        return clicked

    def _detail_pages(self, clicked: list[dict]) -> None:
        """Each clicked item's detail page: its related shelf (whose clicks open no further pages)."""
        for item in clicked:
            shelf = self.api.get(f"/recommend/related/{quote(item['item_id'], safe='')}",
                                 user_id=self.user.user_id, n=RELATED_N)
            self._page(shelf, "related")

    def home(self) -> None:
        feed = self.api.get("/recommend/home", user_id=self.user.user_id, n=HOME_N)
        self._note_variant("home", feed)
        self._detail_pages(self._page(feed, "home"))

    def search_box(self) -> None:
        """At most one search per session: the shading word, else a discovery chip, else a typed
        query. A user who passes on the shading word (matching or not) looks at the chips."""
        if self.shading_word():
            return
        if self.discovery_chip():
            return
        typed = self.typed_query()
        if typed is not None and self._chance(self.behaviour.search_typed):
            self.search(typed, "typed")

    def shading_word(self) -> bool:
        """The grey word in the empty box: an impression, then perhaps a search; True if searched."""
        user, b = self.user, self.behaviour
        shade = self.api.get("/search/shading", user_id=user.user_id)
        self._note_variant("shading", shade)
        word = shade.get("query")
        if not word:
            return False
        self.api.post_events([_event(user.user_id, "impression", shade["request_id"], query=word)])
        fits = self.judge.matches(word, user.interests)
        self.stats["shading_impressions"] += 1
        self.stats["shading_matches"] += fits
        if not self._chance(b.search_shading_match if fits else b.search_shading_other):
            return False
        self.search(word, "shading")
        return True

    def discovery_chip(self) -> bool:
        """The chips: impressions of all, then perhaps a search of the first matching one; True if searched."""
        user = self.user
        chips = self.api.get("/search/discover", user_id=user.user_id, n=DISCOVER_N)
        queries = [c["query"] for c in chips.get("items", []) if c.get("query")]
        if not queries:
            return False
        self.api.post_events([_event(user.user_id, "impression", chips["request_id"], query=q) for q in queries])
        chip = next((q for q in queries if self.judge.matches(q, user.interests)), None)
        if chip is None or not self._chance(self.behaviour.search_chip):
            return False
        self.search(chip, "discovery")
        return True

    def typed_query(self) -> str | None:
        """What the user would type: the leaf name of a subcategory of one of their interests."""
        options = sorted(leaf for top in self.user.interests for leaf in self.mall.leaves.get(top, []))
        return str(options[self.rng.integers(len(options))]) if options else None

    def search(self, query: str, source: str) -> None:
        """A result page: the search event first, then its impressions, clicks and purchases."""
        page = self.api.get("/search", q=query, user_id=self.user.user_id, n=SEARCH_N)
        self._note_variant("search", page)
        self.stats[f"searches_{source}"] += 1
        searched = _event(self.user.user_id, "search", page["request_id"], query=query, source=source)
        self._detail_pages(self._page(page, "search", first=[searched]))


def simulate_users(api: Api, mall: Mall, users: list[SimUser], seed: int, sessions: int, concurrency: int,
                   progress: bool = True) -> tuple[Counter, dict[str, Counter]]:
    """Run every user's sessions on a thread pool; returns (totals, users per scene:variant seen).
    The first error stops the run and is raised."""
    judge = QueryJudge(api)
    children = np.random.SeedSequence(seed).spawn(len(users))  # one stream per user: order-independent
    stop = threading.Event()
    totals: Counter = Counter()
    seen: dict[str, Counter] = {}

    def one(i: int) -> Visitor:
        visitor = Visitor(api, judge, mall, users[i], np.random.default_rng(children[i]))
        visitor.run(sessions, stop)
        return visitor

    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="sim") as pool, \
            tqdm(total=len(users), unit="user", desc="simulate", disable=not progress, file=sys.stderr) as bar:
        futures = [pool.submit(one, i) for i in range(len(users))]
        try:
            for future in as_completed(futures):
                visitor = future.result()  # raises the user's error
                totals.update(visitor.stats)
                for scene, variant in visitor.variants.items():
                    seen.setdefault(scene, Counter())[variant] += 1
                bar.update(1)
        except BaseException:  # an error or Ctrl+C: queued users never start, running ones stop after a session
            stop.set()
            for future in futures:
                future.cancel()
            raise
    return totals, seen


# --------------------------------------------------------------------------------------------------
# Analytics → result


LIFT_KEYS = {"ctr_lift": "ctr", "gmv_lift": "gmv_per_user", "exposure_per_user_lift": "exposure_per_user"}
SUMMARY_METRICS = (("ctr", "CTR", 4), ("gmv_per_user", "GMV/user", 2), ("exposure_per_user", "exposure/user", 2),
                   ("search_pv_per_user", "search PV/user", 3))


def find_experiment(doc: dict, name: str | None, scene: str) -> dict | None:
    """The experiment named `name`, else the one on `scene`; ValueError if a named one is missing."""
    experiments = doc.get("experiments") or []
    if name is not None:
        for exp in experiments:
            if exp.get("name") == name:
                return exp
        listed = ", ".join(f"{e.get('name')} ({e.get('scene')})" for e in experiments) or "none"
        raise ValueError(f"experiment {name!r} is not in the analytics of this period; experiments: {listed}")
    return next((exp for exp in experiments if exp.get("scene") == scene), None)


def treatment_of(experiment: dict) -> str | None:
    """The variant compared with control: the first non-control variant that has a lift."""
    control = experiment.get("control")
    for name, variant in (experiment.get("variants") or {}).items():
        if name != control and variant.get("lift"):
            return name
    return next((n for n in experiment.get("variants") or {} if n != control), None)


def _interval(metric: dict | None, shift: float = 0.0) -> dict | None:
    """`{"value", "ci95"}` (plus `significant`) of an analytics metric, shifted (a lift + 1 = a ratio)."""
    if not metric or metric.get("value") is None:
        return None
    ci = metric.get("ci95") or [None, None]
    out = {"value": metric["value"] + shift,
           "ci95": [None if c is None else c + shift for c in ci]}
    if "significant" in metric:
        out["significant"] = metric["significant"]
    return out


def lift(experiment: dict | None, metric: str, shift: float = 0.0) -> dict | None:
    """The treatment's lift on `metric` over control (shifted by `shift`), or None."""
    if experiment is None:
        return None
    treatment = treatment_of(experiment)
    variant = (experiment.get("variants") or {}).get(treatment) or {}
    return _interval((variant.get("lift") or {}).get(metric), shift)


def build_result(doc: dict, home: dict | None, shading: dict | None) -> dict:
    """The command's JSON: the home experiment's lifts, the shading experiment's search PV ratio,
    both experiments' variants as the analytics give them, and the app's event totals."""
    result: dict[str, Any] = {key: lift(home, metric) for key, metric in LIFT_KEYS.items()}
    result["search_pv_ratio"] = lift(shading, "search_pv_per_user", shift=1.0)
    for key, exp in (("", home), ("shading_", shading)):
        result[f"{key}experiment"] = exp.get("name") if exp else None
        result[f"{key}control"] = exp.get("control") if exp else None
        result[f"{key}treatment"] = treatment_of(exp) if exp else None
        result[f"{key}variants"] = (exp.get("variants") or {}) if exp else {}
    result["events"] = doc.get("events")
    result["scenes"] = doc.get("scenes")
    result["search"] = {k: v for k, v in (doc.get("search") or {}).items() if k == "by_source"}
    return result


def _fmt(metric: dict | None, digits: int) -> str:
    if not metric or metric.get("value") is None:
        return "–"
    lo, hi = (metric.get("ci95") or [None, None])[:2]
    interval = "" if lo is None or hi is None else f" [{lo:.{digits}f}, {hi:.{digits}f}]"
    return f"{metric['value']:.{digits}f}{interval}"


def format_summary(result: dict) -> str:
    """Variants × CTR / GMV / exposure / search PV with intervals (search PV only for the shading
    experiment: its variants change no shelf), then the lifts."""
    lines = []
    for key, title, metrics in (("", "home", SUMMARY_METRICS), ("shading_", "shading", SUMMARY_METRICS[-1:])):
        name = result.get(f"{key}experiment")
        if not name:
            continue
        lines.append(f"experiment {name} ({title}; control {result.get(f'{key}control')}):")
        labels = "  ".join(f"{label:<27}" for _, label, _ in metrics)
        lines.append(f"  {'variant':<14} {'users':>6}  {labels}".rstrip())
        for variant, row in result.get(f"{key}variants", {}).items():
            cells = "  ".join(f"{_fmt(row.get(m), d):<27}" for m, _, d in metrics)
            lines.append(f"  {variant:<14} {row.get('users', 0):>6}  {cells}".rstrip())
    lines.append("")
    for key in (*LIFT_KEYS, "search_pv_ratio"):
        lines.append(f"{key:<24} {_fmt(result.get(key), 3)}")
    return "\n".join(lines)


def _finite(value: Any) -> Any:
    """JSON-safe copy: NaN and infinities become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


# --------------------------------------------------------------------------------------------------
# The command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's options."""
    parser.add_argument("--base", default="http://127.0.0.1:8000", metavar="URL",
                        help="base URL of the running minirec server "
                             "(default: %(default)s, where `minirec demo` serves)")
    parser.add_argument("--app", default="demo", help="the app (mini-program) to drive (default: %(default)s)")
    parser.add_argument("--api-key", required=True, metavar="KEY", help="the app's API key (X-API-Key)")
    parser.add_argument("--data", type=Path, default=Path("demo-work/data"), metavar="DIR",
                        help="the synthetic mall's data folder the app was trained on: ground_truth (users' true "
                             "interests), interactions (who is a known user) and items (category names users type) "
                             "(default: %(default)s, what `minirec demo` generates)")
    parser.add_argument("--users", type=int, default=400, metavar="N",
                        help="simulated users, a seeded sample of the mall's users (default: %(default)s)")
    parser.add_argument("--sessions", type=int, default=3, metavar="N",
                        help="visits per user; each opens the home feed and the search box (default: %(default)s)")
    parser.add_argument("--first-visit-share", type=float, default=0.0, metavar="SHARE",
                        help="share of users the merchant has never seen (in the ground truth but without "
                             "interactions; known only by their platform profile) (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, metavar="S",
                        help="seed of the user sample and of every user's choices (default: %(default)s)")
    parser.add_argument("--concurrency", type=int, default=4, metavar="N",
                        help="users simulated at once, each on its own connection (default: %(default)s). Keep the "
                             "server below overload: an overloaded worker ([server.overload] degrade_wait_ms) "
                             "answers degraded pages, which carry no experiment")
    parser.add_argument("--experiment", metavar="NAME",
                        help="the experiment whose lifts are reported as ctr_lift, gmv_lift and "
                             "exposure_per_user_lift (default: the app's experiment on scene home)")
    parser.add_argument("--shading-experiment", metavar="NAME",
                        help="the experiment whose treatment/control search PV per user is reported as "
                             "search_pv_ratio (default: the app's experiment on scene shading, if any)")
    parser.add_argument("--json", type=Path, metavar="FILE",
                        help="write the result here: the lifts with 95%% intervals, each experiment's variants, "
                             "the event totals and what the simulation did")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _check_args(args: argparse.Namespace) -> None:
    for name in ("users", "sessions", "concurrency"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if not 0.0 <= args.first_visit_share <= 1.0:
        raise ValueError(f"--first-visit-share must be in [0, 1], got {args.first_visit_share}")
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")


def _write_json(path: Path | None, result: dict) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(_finite(result), ensure_ascii=False, indent=2) + "\n")


def run(args: argparse.Namespace) -> int:
    """Simulate, read the analytics of the run's window, print the summary, write the JSON.
    Exit 0; 2 for bad options, an unreachable server, an API error in a request (4xx) or no
    experiment on scene home; 1 for a server error (5xx)."""
    _check_args(args)
    api = Api(args.base, args.app, args.api_key)
    try:
        api.healthz()  # before reading the data: a server that is not there is the likeliest mistake
        mall = load_mall(args.data)
        users = sample_users(mall, args.users, args.first_visit_share, np.random.default_rng([args.seed, 0]))
        start = time.time()
        totals, seen = simulate_users(api, mall, users, args.seed, args.sessions, args.concurrency,
                                      progress=not args.quiet)
        end = time.time()
        doc = api.request("GET", f"{api.app_path}/analytics?" + urlencode({"from": start - 1, "to": end + 1}),
                          retries=1)
    except ServerUnreachable as exc:
        print(f"minirec simulate: error: {exc}", file=sys.stderr)
        return 2
    except ApiError as exc:
        print(f"minirec simulate: error: {exc}", file=sys.stderr)
        return 2 if 400 <= exc.status < 500 else 1

    home = find_experiment(doc, args.experiment, "home")
    shading = find_experiment(doc, args.shading_experiment, "shading")
    result = build_result(doc, home, shading)
    result["simulation"] = {
        "base": args.base, "app": args.app, "users": len(users), "sessions": args.sessions, "seed": args.seed,
        "first_visit_share": args.first_visit_share, "from": start - 1, "to": end + 1,
        "seconds": round(end - start, 2), "requests": api.requests, "degraded_responses": api.degraded,
        "actions": dict(sorted(totals.items())),
        "users_by_variant": {scene: dict(sorted(c.items())) for scene, c in sorted(seen.items())}}
    _write_json(args.json, result)
    print(format_summary(result))
    print(f"\n{len(users)} users × {args.sessions} sessions, {api.requests} requests in {end - start:.1f} s"
          + (f"; written to {args.json}" if args.json else ""))
    if api.degraded > 0.01 * api.requests:
        print(f"minirec simulate: warning: {api.degraded} of {api.requests} answers were degraded (the server was "
              "overloaded, or Redis slow or unreachable): they ignored the user's recent events, and an overloaded "
              "server's carry no experiment; lower --concurrency (or raise [server.overload] degrade_wait_ms)",
              file=sys.stderr)
    if home is None:
        print("minirec simulate: error: the analytics of this run have no experiment on scene home; add one "
              f"to minirec.toml ([apps.{args.app}.experiments.NAME] scene = \"home\", docs/experiments.md) or name "
              "one with --experiment; the event totals were written", file=sys.stderr)
        return 2
    return 0
