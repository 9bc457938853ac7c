"""A small traffic mix against a real server, in threads: home, related, search and events
requests, every answer recorded (status, degraded, model version, when sent and answered) and every
acknowledged event id kept, so a fault test can count what failed and what was lost."""

from __future__ import annotations

import http.client
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import numpy as np

from bench.harness.client import request


@dataclass
class Answer:
    """One request of the mix and its answer."""

    at: float  # seconds since the load started, when the answer came
    route: str
    sent: float  # … and when the request was sent
    status: int | None  # None: the connection failed
    degraded: bool = False
    version: str | None = None


@dataclass
class MixResult:
    """Every answer, and the event ids the server acknowledged or refused."""

    answers: list[Answer] = field(default_factory=list)
    acknowledged: list[str] = field(default_factory=list)  # event ids of batches answered 200
    refused: list[str] = field(default_factory=list)  # event ids of batches answered 503 (the client keeps them)

    def failed(self, start: float = 0.0, end: float = float("inf")) -> list[Answer]:
        """Answers that are neither 200 nor a documented refusal of a write (503 on events)."""
        return [a for a in self.answers if start <= a.at < end and a.status != 200
                and not (a.route == "events" and a.status == 503)]

    def summary(self) -> dict[str, Any]:
        """Counts for a fault-table row."""
        return {"requests": len(self.answers), "failed": len(self.failed()),
                "degraded": sum(a.degraded for a in self.answers),
                "events_acknowledged": len(self.acknowledged), "events_refused": len(self.refused)}


class TrafficMix:
    """`clients` threads looping over the mix until `stop()`; `port` may change under them."""

    def __init__(self, port: int, key: str, users: list[str], items: list[str], queries: list[str],
                 clients: int = 8, app: str = "shop") -> None:
        self.port, self.key, self.app = port, key, app
        self.users, self.items, self.queries = users, items, queries
        self.result = MixResult()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._threads = [threading.Thread(target=self._client, args=(k,), daemon=True) for k in range(clients)]

    def start(self) -> "TrafficMix":
        """Start the client threads; `elapsed()` counts from here."""
        self._t0 = time.monotonic()
        for thread in self._threads:
            thread.start()
        return self

    def elapsed(self) -> float:
        """Seconds since `start()`."""
        return time.monotonic() - self._t0

    def stop(self) -> MixResult:
        """Stop the threads (each finishes its request in flight) and return the result."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        return self.result

    def answers_since(self, since: float) -> list[Answer]:
        """A copy of the answers that came at or after `since` (safe while the threads run)."""
        with self._lock:
            return [a for a in self.result.answers if a.at >= since]

    def wait_for(self, condition: Callable[[list[Answer]], bool], since: float, timeout_s: float,
                 poll_s: float = 0.25) -> float | None:
        """Poll until `condition(answers since `since`)` holds; the elapsed time then, or None
        when it did not hold within `timeout_s` (a generous deadline, not a measurement)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if condition(self.answers_since(since)):
                return self.elapsed()
            time.sleep(poll_s)
        return None

    def _request(self, method: str, path: str, body: Any = None) -> tuple[int | None, Any]:
        try:
            status, parsed = request(self.port, method, path, body, {"X-API-Key": self.key}, timeout=10)
        except (OSError, http.client.HTTPException):  # refused, reset, or cut mid-body by a killed worker
            return None, None
        return status, parsed if isinstance(parsed, dict) else None

    def _client(self, k: int) -> None:
        rng = np.random.default_rng(k)
        while not self._stop.is_set():
            user = self.users[int(rng.integers(len(self.users)))]
            route = str(rng.choice(["home", "related", "search", "events"], p=[0.45, 0.2, 0.15, 0.2]))
            ids: list[str] = []
            sent = self.elapsed()
            if route == "home":
                status, body = self._request("GET", f"/v1/apps/{self.app}/recommend/home?user_id={user}&n=10")
            elif route == "related":
                item = self.items[int(rng.integers(len(self.items)))]
                status, body = self._request("GET", f"/v1/apps/{self.app}/recommend/related/{item}?user_id={user}")
            elif route == "search":
                q = quote(self.queries[int(rng.integers(len(self.queries)))])
                status, body = self._request("GET", f"/v1/apps/{self.app}/search?q={q}&user_id={user}")
            else:
                ids = [uuid.uuid4().hex for _ in range(3)]
                events = [{"event_id": i, "user_id": user, "type": "view",
                           "item_id": self.items[int(rng.integers(len(self.items)))]} for i in ids]
                status, body = self._request("POST", f"/v1/apps/{self.app}/events", {"events": events})
            answer = Answer(self.elapsed(), route, sent, status, bool(body and body.get("degraded")),
                            body.get("model_version") if body else None)
            with self._lock:
                self.result.answers.append(answer)
                if route == "events" and status == 200:
                    self.result.acknowledged += ids
                elif route == "events" and status == 503:
                    self.result.refused += ids
