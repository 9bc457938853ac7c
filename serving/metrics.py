"""Prometheus metrics: requests and latency per route and app, model versions, degraded state.

With several uvicorn workers, `minirec serve` sets PROMETHEUS_MULTIPROC_DIR (prometheus_client's
multiprocess mode, in the state folder, emptied at start): every worker writes its values there and
`GET /metrics`, whichever worker answers it, reports the sum over workers (gauges: the maximum).
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """The server's metrics, in a registry of its own (so several apps in one test process don't clash)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("minirec_requests_total", "HTTP requests", ["route", "app", "status"],
                                registry=self.registry)
        self.latency = Histogram("minirec_request_seconds", "Request latency", ["route", "app"],
                                 buckets=BUCKETS, registry=self.registry)
        self.model_version = Gauge("minirec_model_info", "Loaded model version (value 1; 0 once replaced)",
                                   ["app", "version"], registry=self.registry, multiprocess_mode="max")
        self.degraded = Gauge("minirec_degraded", "1 while Redis is unreachable and requests are degraded",
                              registry=self.registry, multiprocess_mode="max")
        self.events = Counter("minirec_events_total", "Events received", ["app", "outcome"], registry=self.registry)
        self.overload = Counter("minirec_overload_total", "Requests answered by a cheap path (degraded) or refused "
                                "with 503 (shed) because the worker was overloaded", ["action", "route"],
                                registry=self.registry)
        self._versions: set[tuple[str, str]] = set()

    def set_versions(self, versions: dict[str, str]) -> None:
        """Mark the loaded version of each app 1 and versions loaded before 0 (a value in another
        worker's file cannot be removed, so replaced versions stay visible as 0)."""
        current = set(versions.items())
        for app, version in self._versions - current:
            self.model_version.labels(app=app, version=version).set(0)
        for app, version in current:
            self.model_version.labels(app=app, version=version).set(1)
        self._versions |= current

    def exposition(self) -> bytes:
        """The text format of every metric: this process's, or all workers' in multiprocess mode."""
        if os.environ.get(MULTIPROC_ENV):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


__all__ = ["BUCKETS", "CONTENT_TYPE_LATEST", "MULTIPROC_ENV", "Metrics"]
