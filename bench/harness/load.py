"""Load phases of pre-encoded requests against a running server, on asyncio in this process.

- `closed_loop`: each connection sends its next request when the previous one answers (saturation
  throughput).
- `open_loop`: requests on a fixed schedule at a constant rate whatever the server does; latency
  counts from each request's *scheduled* send time, so a stalled server is charged for the requests
  queued behind it (no coordinated omission).
- `drive`: peak (closed loop), then half of that rate (open loop), with CPU per request of server,
  Redis and load generator; `at_rate`: one open-loop phase at a given rate.

Every loop is bounded by a request count and a deadline.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.harness.client import NET_ERRORS, Connection
from bench.harness.server import ServerProcess

#: (kind, raw request bytes): the kind names the latency bucket a request is counted in.
Requests = Sequence[tuple[str, bytes]]


@dataclass
class Phase:
    """Latencies (seconds) per request kind, and counts, of one load phase."""

    latencies: dict[str, list[float]]
    seconds: float
    errors: int = 0
    unfinished: int = 0
    sent: int = 0
    #: Answers counted for the rate; None: every recorded latency (see `closed_loop`).
    completed: int | None = None

    def summary(self) -> dict[str, Any]:
        """rps, p50/p99/mean in ms over all kinds, and p50/p99 per kind."""
        everything = np.array([x for xs in self.latencies.values() for x in xs])
        done = len(everything) if self.completed is None else self.completed
        out: dict[str, Any] = {"rps": round(done / self.seconds, 1) if self.seconds > 0 else 0.0,
                               **percentiles(everything), "requests": int(len(everything)),
                               "errors": self.errors, "unfinished": self.unfinished,
                               "seconds": round(self.seconds, 2)}
        if len(self.latencies) > 1:
            out["by_kind"] = {k: {**percentiles(np.array(v)), "requests": len(v)} for k, v in self.latencies.items()}
        return out


def percentiles(seconds: np.ndarray) -> dict[str, float]:
    """p50, p99 and mean in ms of latencies in seconds (NaN when there are none)."""
    if not len(seconds):
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "mean_ms": float("nan")}
    p50, p99 = np.percentile(seconds, [50, 99]) * 1000
    return {"p50_ms": round(float(p50), 2), "p99_ms": round(float(p99), 2),
            "mean_ms": round(float(seconds.mean() * 1000), 2)}


class RequestCycle:
    """Requests in a fixed (pre-shuffled) order, repeated."""

    def __init__(self, requests: Requests) -> None:
        self.requests, self.i = requests, 0

    def next(self) -> tuple[str, bytes]:
        """The next request, wrapping around."""
        request = self.requests[self.i % len(self.requests)]
        self.i += 1
        return request


async def closed_loop(port: int, requests: Requests, *, concurrency: int, warmup_s: float, duration_s: float,
                      max_requests: int) -> Phase:
    """Each of `concurrency` connections sends its next request when the previous one answers.

    The rate counts answers that arrive inside the measured window; latencies are those of requests
    sent and answered inside it (so warm-up and the tail after the deadline count for neither).
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    measure_from, stop_at = start + warmup_s, start + warmup_s + duration_s
    cycle = RequestCycle(requests)
    phase = Phase({kind: [] for kind, _ in requests}, duration_s, completed=0)

    async def worker() -> None:
        conn = Connection(port)
        try:
            while phase.sent < max_requests:
                t0 = loop.time()
                if t0 >= stop_at:
                    break
                kind, raw = cycle.next()
                phase.sent += 1
                try:
                    status, _ = await conn.request(raw)
                except NET_ERRORS:
                    phase.errors += 1
                    conn.close()
                    continue
                t1 = loop.time()
                if status != 200:
                    phase.errors += 1
                    continue
                if measure_from <= t1 <= stop_at:
                    phase.completed += 1  # type: ignore[operator]
                    if t0 >= measure_from:
                        phase.latencies[kind].append(t1 - t0)
        finally:
            conn.close()

    tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
    _, pending = await asyncio.wait(tasks, timeout=warmup_s + duration_s + 10.0)
    for task in pending:  # a request stuck past the deadline: give up on it
        task.cancel()
    phase.unfinished = len(pending)
    await asyncio.gather(*pending, return_exceptions=True)
    return phase


async def open_loop(port: int, requests: Requests, *, rate: float, duration_s: float, connections: int,
                    max_requests: int, grace_s: float = 10.0) -> Phase:
    """Send at a constant `rate` for `duration_s` over up to `connections` connections; latency
    counts from each request's scheduled time. Requests unanswered `grace_s` after the schedule
    ends count as unfinished."""
    loop = asyncio.get_running_loop()
    total = max(1, min(int(rate * duration_s), max_requests))
    cycle = RequestCycle(requests)
    queue: asyncio.Queue[tuple[float, str, bytes] | None] = asyncio.Queue()
    phase = Phase({kind: [] for kind, _ in requests}, duration_s)
    t0 = loop.time() + 0.05
    last_done = [t0]

    async def dispatcher() -> None:
        for i in range(total):
            at = t0 + i / rate
            delay = at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            kind, raw = cycle.next()
            queue.put_nowait((at, kind, raw))
            phase.sent += 1
        for _ in range(connections):
            queue.put_nowait(None)

    async def worker() -> None:
        conn = Connection(port)
        try:
            while (item := await queue.get()) is not None:
                at, kind, raw = item
                try:
                    status, _ = await conn.request(raw)
                except NET_ERRORS:
                    phase.errors += 1
                    conn.close()
                    continue
                done = loop.time()
                if status == 200:
                    phase.latencies[kind].append(done - at)
                    last_done[0] = max(last_done[0], done)
                else:
                    phase.errors += 1
        finally:
            conn.close()

    tasks = [asyncio.create_task(dispatcher())] + [asyncio.create_task(worker()) for _ in range(connections)]
    _, pending = await asyncio.wait(tasks, timeout=duration_s + grace_s)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    answered = sum(len(v) for v in phase.latencies.values())
    phase.unfinished = phase.sent - answered - phase.errors
    phase.seconds = max(last_done[0] - t0, 1e-9)
    return phase


def measured(server: ServerProcess, run: Coroutine[Any, Any, Phase]) -> tuple[Phase, dict[str, float]]:
    """Run a load phase; also return CPU ms per answered request of server, redis and this process."""
    before, client_before = server.cpu_seconds(), time.process_time()
    phase = asyncio.run(run)
    after, client = server.cpu_seconds(), time.process_time() - client_before
    # every answer the CPU window saw, warm-up included (the latencies count only the measured window)
    n = max(1, phase.sent - phase.errors - phase.unfinished)
    cpu = {f"{k}_cpu_ms_per_req": round((after[k] - before[k]) * 1000 / n, 3) for k in after}
    cpu["loadgen_cpu_ms_per_req"] = round(client * 1000 / n, 3)
    # the machine's 1-minute load average at the end: other work on a shared machine shows here
    cpu["loadavg_1m"] = round(os.getloadavg()[0], 2)
    return phase, cpu


def saturation(server: ServerProcess, requests: Requests, *, duration_s: float, concurrency: int,
               warmup_s: float = 1.0) -> Phase:
    """A closed loop at saturation with a request cap far above any rate this machine reaches."""
    return asyncio.run(closed_loop(server.port, requests, concurrency=concurrency, warmup_s=warmup_s,
                                   duration_s=duration_s, max_requests=int(duration_s * 50_000) + 10_000))


def drive(server: ServerProcess, requests: Requests, *, duration_s: float, concurrency: int,
          half_rate_requests: Requests | None = None) -> dict[str, Any]:
    """Peak (closed loop) then half of that rate (open loop) against a running server.

    Both phases send `requests` from the start, unless `half_rate_requests` is given for the second
    (for requests that must not repeat, such as events with their own ids)."""
    # A full collection of this process's heap (the mall, pandas, pypinyin's dictionaries) stalls the
    # load generator for tens of ms, which the open loop would charge to the server: keep it out.
    gc.collect()
    gc.freeze()
    warmup = min(2.0, 0.25 * duration_s)
    peak, peak_cpu = measured(server, closed_loop(
        server.port, requests, concurrency=concurrency, warmup_s=warmup, duration_s=duration_s,
        max_requests=int(duration_s * 50_000) + 10_000))
    peak_summary = {**peak.summary(), **peak_cpu, "concurrency": concurrency}
    if not peak_summary["requests"]:
        raise RuntimeError(f"no request succeeded at peak ({peak.errors} errors):\n{server.log_tail()}")
    rate = peak_summary["rps"] / 2
    half_summary = at_rate(server, requests if half_rate_requests is None else half_rate_requests, rate=rate,
                           duration_s=duration_s, concurrency=concurrency)
    return {"rps": peak_summary["rps"], "p50_ms": half_summary["p50_ms"], "p99_ms": half_summary["p99_ms"],
            "peak": peak_summary, "half_rate": half_summary}


def at_rate(server: ServerProcess, requests: Requests, *, rate: float, duration_s: float,
            concurrency: int) -> dict[str, Any]:
    """An open-loop phase at a given rate (to compare two endpoints' latency at the same load)."""
    phase, cpu = measured(server, open_loop(server.port, requests, rate=rate, duration_s=duration_s,
                                            connections=max(2 * concurrency, 16),
                                            max_requests=int(rate * duration_s) + 1))
    out = {**phase.summary(), **cpu, "target_rps": round(rate, 1)}
    out["achieved_rps"] = out.pop("rps")
    return out
