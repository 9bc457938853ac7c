"""Shared shopper behaviour of the locust profiles: who visits and what they do.

A simulated visitor is one of three kinds, drawn when it starts:
- known: a user the ALS model was trained on (browses with full personalization),
- cold: a user with a platform profile but no interactions (the hybrid path: first visit from the
  super-app's public pages),
- unknown: an id nobody has seen (segment popularity).
It then loops over: open the home feed, open an item's related shelf, and send events about what
it saw (impressions, a click, now and then a cart or purchase), with the request ids of the
responses that showed the items, as a mini-program would.

Configuration (environment variables; the defaults match `minirec bench serve`'s mall):
- MINIREC_APP (default `bench`), MINIREC_API_KEY (default the bench app's key);
- MINIREC_USERS_FILE: JSON with lists `known`, `cold` and `items` (the bench writes
  `WORKDIR/users.json`); without it every visitor is unknown and related shelves use items seen
  in earlier feeds;
- MINIREC_MIX: shares of known, cold, unknown visitors, e.g. `0.5,0.3,0.2` (the default);
- MINIREC_TASKS_PER_USER_S: tasks each visitor runs per second (default 1), so requests/s follow
  the number of users: the profiles set the load by setting the user count.
"""

from __future__ import annotations

import json
import os
import random
import uuid
from typing import Any

from locust import FastHttpUser, constant_throughput, task

APP = os.environ.get("MINIREC_APP", "bench")
API_KEY = os.environ.get("MINIREC_API_KEY", "bench-key-0123456789")
PAGE = 20


def _load_users(path: str | None) -> dict[str, list[str]]:
    """Known / cold user ids and item ids from MINIREC_USERS_FILE (empty lists without one)."""
    if not path:
        return {"known": [], "cold": [], "items": []}
    with open(path, encoding="utf-8") as fh:
        raw = json.load(fh)
    return {name: [str(x) for x in raw.get(name, [])] for name in ("known", "cold", "items")}


def _mix(text: str) -> tuple[float, float, float]:
    shares = tuple(float(x) for x in text.split(","))
    if len(shares) != 3 or min(shares) < 0 or sum(shares) <= 0:
        raise ValueError(f"MINIREC_MIX={text!r}: expected three non-negative shares (known,cold,unknown)")
    return shares  # type: ignore[return-value]


POPULATION = _load_users(os.environ.get("MINIREC_USERS_FILE"))
MIX = _mix(os.environ.get("MINIREC_MIX", "0.5,0.3,0.2"))
TASKS_PER_USER_S = float(os.environ.get("MINIREC_TASKS_PER_USER_S", "1"))


class MallUser(FastHttpUser):
    """One visitor of the mini-program (known, cold or unknown), paced at TASKS_PER_USER_S."""

    wait_time = constant_throughput(TASKS_PER_USER_S)
    # Fail fast rather than pile up when the server is saturated (it counts as a failure).
    network_timeout = 10.0
    connection_timeout = 5.0

    def on_start(self) -> None:
        kinds = [k for k, pool in (("known", POPULATION["known"]), ("cold", POPULATION["cold"]),
                                   ("unknown", [""])) if pool]
        weights = [MIX[("known", "cold", "unknown").index(k)] for k in kinds]
        self.kind = random.choices(kinds, weights=weights)[0] if sum(weights) > 0 else "unknown"
        pool = POPULATION.get(self.kind, [])
        self.user_id = random.choice(pool) if pool else f"visitor-{uuid.uuid4().hex[:12]}"
        self.headers = {"X-API-Key": API_KEY}
        self.feed: list[str] = []
        self.request_id: str | None = None

    def _get(self, path: str, name: str) -> dict[str, Any] | None:
        with self.client.get(path, headers=self.headers, name=name, catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}")
                return None
            try:
                body = response.json()
            except ValueError:
                response.failure("not JSON")
                return None
            if not isinstance(body.get("items"), list):
                response.failure("no items in the response")
                return None
            return body

    @task(6)
    def home(self) -> None:
        """The home feed (grouped per visitor kind in the statistics)."""
        body = self._get(f"/v1/apps/{APP}/recommend/home?user_id={self.user_id}&n={PAGE}",
                         f"home [{self.kind}]")
        if body is not None:
            self.feed = [item["item_id"] for item in body["items"]]
            self.request_id = body.get("request_id")

    @task(3)
    def related(self) -> None:
        """The related shelf of an item from the last feed (or of a random catalog item)."""
        choices = self.feed or POPULATION["items"]
        if not choices:
            return self.home()
        item = random.choice(choices)
        self._get(f"/v1/apps/{APP}/recommend/related/{item}?user_id={self.user_id}&n=10", "related")

    @task(2)
    def events(self) -> None:
        """Impressions of the last feed, a click on one item, sometimes a cart or a purchase."""
        if not self.feed:
            return self.home()
        batch = [{"event_id": uuid.uuid4().hex, "user_id": self.user_id, "type": "impression", "item_id": item,
                  "request_id": self.request_id} for item in self.feed[:10]]
        clicked = random.choice(self.feed[:10])
        batch.append({"event_id": uuid.uuid4().hex, "user_id": self.user_id, "type": "click", "item_id": clicked,
                      "request_id": self.request_id})
        if random.random() < 0.1:
            batch.append({"event_id": uuid.uuid4().hex, "user_id": self.user_id,
                          "type": random.choice(["cart", "purchase"]), "item_id": clicked,
                          "request_id": self.request_id})
        with self.client.post(f"/v1/apps/{APP}/events", json={"events": batch}, headers=self.headers,
                              name="events", catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}")
            elif response.json().get("rejected"):
                response.failure(f"rejected: {response.json()['rejected'][:2]}")
