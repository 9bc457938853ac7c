"""Prometheus metrics: requests and latency per route and app, model versions, degraded state.

With several uvicorn workers each worker counts its own requests; point Prometheus at each worker
or set PROMETHEUS_MULTIPROC_DIR (prometheus_client's multiprocess mode) for one combined view.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """The server's metrics, in a registry of its own (so several apps in one test process don't clash)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("minirec_requests_total", "HTTP requests", ["route", "app", "status"],
                                registry=self.registry)
        self.latency = Histogram("minirec_request_seconds", "Request latency", ["route", "app"],
                                 buckets=BUCKETS, registry=self.registry)
        self.model_version = Gauge("minirec_model_info", "Loaded model version (value 1)", ["app", "version"],
                                   registry=self.registry)
        self.degraded = Gauge("minirec_degraded", "1 while Redis is unreachable and requests are degraded",
                              registry=self.registry)
        self.events = Counter("minirec_events_total", "Events received", ["app", "outcome"], registry=self.registry)

    def set_versions(self, versions: dict[str, str]) -> None:
        self.model_version.clear()
        for app, version in versions.items():
            self.model_version.labels(app=app, version=version).set(1)
