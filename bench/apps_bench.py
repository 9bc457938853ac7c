"""`minirec bench apps`: many apps in one server — time to ready, memory per worker, warm latency
and the first request to an evicted app (issue 21).

For each N (default 1, 100, 1000) in one run: the demo-size bundle (bench/harness/apps.py) copied as
N apps, `minirec serve` with `--workers` workers (default 2) and `[server] max_resident_mb`, then
1. ready: seconds from starting the process until `/readyz` answers 200;
2. warm: home requests for the `--hot` most used apps (each loaded first in both workers), open loop
   at `--rate` per second for `--duration` seconds → p50 / p99; N = 1 is the single-app server the
   others are compared with (`warm_p99_vs_single`);
3. evicted: one home request at a time to apps not resident (never asked for, or pushed out by the
   budget) → p50 / p99 of those first requests (N > 1);
4. memory: RSS and USS (private pages) of each worker after the phases (psutil), and the resident
   apps per worker and their estimated MB (`GET /readyz` with the admin key).
Medians over `--repeat` runs of each N (default 1). Writes `--json`.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from bench.harness import progress
from bench.harness.apps import ADMIN_KEY, app_id, app_key, copy_apps, demo_bundle, write_config
from bench.harness.client import encode_get
from bench.harness.load import measured, open_loop, percentiles
from bench.harness.server import ServerProcess


def _home(app: int, user: str) -> str:
    return f"/v1/apps/{app_id(app)}/recommend/home?user_id={user}&n=20"


def _workers(server: ServerProcess) -> list[psutil.Process]:
    """The uvicorn worker processes (children of the server that are not redis)."""
    procs = [p for p in server.processes() if p.pid != server.redis_pid]
    workers = [p for p in procs[1:] if "redis" not in p.name()]
    return workers or procs[:1]


def _memory(server: ServerProcess) -> dict[str, Any]:
    rss, uss = [], []
    for proc in _workers(server):
        try:
            info = proc.memory_full_info()
        except psutil.Error:
            continue
        rss.append(info.rss / 2**20)
        uss.append(info.uss / 2**20)
    return {"rss_mb_per_worker": [round(x, 1) for x in rss], "uss_mb_per_worker": [round(x, 1) for x in uss],
            "rss_mb_max": round(max(rss), 1) if rss else None}


def _first_requests(server: ServerProcess, apps: list[int], users: list[str]) -> list[float]:
    """Latency (s) of one home request to each app in turn (none of them resident)."""
    out = []
    for i, app in enumerate(apps):
        started = time.perf_counter()
        status, _ = server.request("GET", _home(app, users[i % len(users)]), headers={"X-API-Key": app_key(app)},
                                   timeout=30)
        if status == 200:
            out.append(time.perf_counter() - started)
    return out


def run_one(n: int, bundle_dir: Path, workdir: Path, *, workers: int, budget_mb: float, hot: int, rate: float,
            duration_s: float, evicted: int, users: list[str]) -> dict[str, Any]:
    """One server of `n` copies of the bundle: its ready time, warm and evicted latencies, memory."""
    root = workdir / f"n{n}"
    root.mkdir(parents=True, exist_ok=True)
    copy_apps(bundle_dir, root / "artifacts", n)
    config = write_config(root / "minirec.toml", root / "artifacts", n, budget_mb)
    server = ServerProcess(config, None, workers, log_path=root / "serve.log")
    result: dict[str, Any] = {"apps": n, "workers": workers, "max_resident_mb": budget_mb}
    try:
        server.start(timeout_s=600)
        result["ready_s"] = round(server.ready_seconds or 0.0, 2)
        hot_apps = list(range(min(hot, n)))
        for app in hot_apps:  # loaded in both workers: several connections, so each worker gets some
            for k in range(4 * workers):
                server.request("GET", _home(app, users[k % len(users)]), headers={"X-API-Key": app_key(app)}, timeout=30)
        requests = [("home", encode_get(_home(app, users[(app * 7 + k) % len(users)]), server.port, app_key(app)))
                    for k in range(50) for app in hot_apps]
        random.Random(n).shuffle(requests)
        phase, cpu = measured(server, open_loop(server.port, requests, rate=rate, duration_s=duration_s,
                                                connections=16, max_requests=int(rate * duration_s) + 1))
        warm = phase.summary()
        result["warm"] = {k: warm[k] for k in ("p50_ms", "p99_ms", "requests", "errors", "unfinished")}
        result["warm"]["server_cpu_ms_per_req"] = cpu.get("server_cpu_ms_per_req")
        if n > 1:
            cold = list(range(hot, n))
            random.Random(n + 1).shuffle(cold)
            seconds = _first_requests(server, cold[:evicted], users)
            result["evicted_first"] = {**percentiles(np.array(seconds)), "requests": len(seconds)}
        result["memory"] = _memory(server)
        status, body = server.request("GET", "/readyz", headers={"X-API-Key": ADMIN_KEY})
        if status == 200 and isinstance(body, dict):  # one worker's view (the one that answered)
            resident = [a for a in body.get("apps", []) if a.get("resident")]
            result["one_worker"] = {"resident_apps": len(resident),
                                    "resident_mb_estimate": round(sum(a["size_mb"] or 0 for a in resident), 1),
                                    "loads": sum(a.get("loads", 0) for a in body.get("apps", [])),
                                    "evictions": sum(a.get("evictions", 0) for a in body.get("apps", []))}
    finally:
        server.stop()
    return result


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median warm p99 (its other numbers stay consistent with each other)."""
    ordered = sorted(runs, key=lambda r: r.get("warm", {}).get("p99_ms", float("inf")))
    return {**ordered[len(ordered) // 2], "repeats": len(runs),
            "warm_p99_ms_all": [r.get("warm", {}).get("p99_ms") for r in runs]}


def run_apps_bench(workdir: Path, counts: list[int], *, workers: int = 2, budget_mb: float = 512.0, hot: int = 20,
                   rate: float = 50.0, duration_s: float = 10.0, evicted: int = 60, repeat: int = 1) -> dict[str, Any]:
    """Every N of `counts` (1 first: the single-app baseline), `repeat` times; returns the results."""
    bundle_dir = demo_bundle(workdir / "demo")
    users = json.loads((bundle_dir / "users.json").read_text())[:500]
    results = []
    for n in sorted(set(counts)):
        runs = []
        for r in range(repeat):
            progress(f"apps bench: {n} app(s), run {r + 1}/{repeat}")
            runs.append(run_one(n, bundle_dir, workdir, workers=workers, budget_mb=budget_mb, hot=hot, rate=rate,
                                duration_s=duration_s, evicted=evicted, users=users))
        results.append(_median_run(runs))
    single = next((r for r in results if r["apps"] == 1), None)
    for r in results:
        if single is not None and "warm" in r and single.get("warm", {}).get("p99_ms"):
            r["warm_p99_vs_single"] = round(r["warm"]["p99_ms"] / single["warm"]["p99_ms"], 2)
    disk = sum(f.stat().st_size for f in bundle_dir.iterdir())
    return {"bundle_mb_on_disk": round(disk / 2**20, 2), "results": results,
            "settings": {"workers": workers, "max_resident_mb": budget_mb, "hot_apps": hot, "rate": rate,
                         "duration_s": duration_s, "evicted_requests": evicted, "repeat": repeat},
            "targets": {"ready_s_1000": 10, "rss_mb_per_worker": 4096, "warm_p99_vs_single": 1.5,
                        "evicted_first_p99_ms": 300}}


def table(report: dict[str, Any]) -> str:
    """The results as a Markdown table."""
    lines = ["| apps | ready | RSS per worker (max) | USS per worker | warm home p50 / p99 | p99 vs 1 app "
             "| first request to an evicted app p50 / p99 | resident apps (one worker) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        mem, warm, ev = r.get("memory", {}), r.get("warm", {}), r.get("evicted_first")
        first = f"{ev['p50_ms']} / {ev['p99_ms']} ms" if ev else "-"
        lines.append(
            f"| {r['apps']} | {r.get('ready_s', '?')} s | {mem.get('rss_mb_max', '?')} MB "
            f"| {', '.join(f'{x:.0f}' for x in mem.get('uss_mb_per_worker', []))} MB "
            f"| {warm.get('p50_ms', '?')} / {warm.get('p99_ms', '?')} ms | {r.get('warm_p99_vs_single', '-')}× "
            f"| {first} "
            f"| {r.get('one_worker', {}).get('resident_apps', '?')} |")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", default="bench-work/apps", help="where the demo bundle and the copies go "
                                                                      "(default bench-work/apps)")
    parser.add_argument("--apps", default="1,100,1000", help="comma-separated app counts (default 1,100,1000)")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers (default 2)")
    parser.add_argument("--max-resident-mb", type=float, default=512.0,
                        help="[server] max_resident_mb of the servers (default 512)")
    parser.add_argument("--hot", type=int, default=20, help="apps of the warm phase (default 20)")
    parser.add_argument("--rate", type=float, default=50.0, help="requests/s of the warm phase (default 50)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of the warm phase (default 10)")
    parser.add_argument("--evicted", type=int, default=60, help="first requests to non-resident apps (default 60)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per app count; the median is reported")
    parser.add_argument("--json", help="write the results as JSON to this file")


def run_from_args(args: argparse.Namespace) -> int:
    counts = [int(x) for x in args.apps.split(",") if x.strip()]
    if not counts or min(counts) < 1 or args.workers < 1 or args.repeat < 1:
        raise ValueError("--apps, --workers and --repeat must be positive")
    report = run_apps_bench(Path(args.workdir), counts, workers=args.workers, budget_mb=args.max_resident_mb,
                            hot=args.hot, rate=args.rate, duration_s=args.duration, evicted=args.evicted,
                            repeat=args.repeat)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    print(table(report))
    return 0


def main() -> None:  # python -m bench.apps_bench
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    raise SystemExit(run_from_args(parser.parse_args()))


if __name__ == "__main__":
    main()
