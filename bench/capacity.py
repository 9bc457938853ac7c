"""`minirec bench capacity`: the highest rate per route at which p99 stays within a budget, on this
machine, and the sizing rule it gives for a deployment.

For each route (bare /healthz, home at full quality, home degraded, related, search, suggest,
events): the saturation throughput in a closed loop, then open-loop phases at rising shares of it
(latency from each request's scheduled send time: a stalled server is charged for the queue). A
rate counts when p99 ≤ budget, nothing failed and at least 95% of it was achieved; `max_rps` is
the highest such rate. "home degraded" is the cheap path an overloaded worker takes
(serving/overload.py), measured on a server whose `[server.overload] degrade_in_flight = 1` and
`degrade_wait_ms = 0` make every request take it.

The load generator (the harness's raw asyncio client, bench/harness/load.py) runs on the same
machine and takes CPU from the server: rates are lower bounds for a server with the machine to
itself. Writes a Markdown report with a latency-vs-throughput plot and `--json` (docs/load.md
explains the fields).
"""

from __future__ import annotations

import argparse
import json
import math
import time
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.harness import progress
from bench.harness.client import encode_get
from bench.harness.load import Requests, at_rate, saturation
from bench.harness.mall import APP, prepare, reset_state
from bench.harness.server import ServerProcess, running_server
from bench.harness.traffic import (DEFAULT_MIX, event_requests, home_requests, related_requests, search_requests,
                                   suggest_requests)

#: Share of each route in the traffic mix the sizing rule is for (the locust mix's routes; the
#: search box's hot / shading / discover calls are counted as suggest-like cheap reads).
SIZING_MIX = {"home": 0.30, "related": 0.15, "search": 0.12, "suggest": 0.18, "events": 0.25}
#: Shares of the saturation throughput tried in the open loop, in order.
STEPS = (0.3, 0.5, 0.7, 0.85, 1.0, 1.15)
TARGET_QPS = 5000
#: Keep each worker at this share of its measured capacity (spikes, GC, a noisy neighbour).
HEADROOM = 0.7



def route_capacity(server: ServerProcess, make: Callable[[int], Requests], *, budget_ms: float, duration_s: float,
                   concurrency: int) -> dict[str, Any]:
    """Saturation throughput, then the open-loop curve; `make(k)` gives the k-th phase's requests
    (fresh ones for routes whose requests must not repeat, such as events)."""
    peak = saturation(server, make(0), duration_s=duration_s, concurrency=concurrency).summary()
    if not peak["requests"]:
        raise RuntimeError(f"no request succeeded at saturation ({peak['errors']} errors):\n{server.log_tail()}")
    curve, best = [], None
    for k, share in enumerate(STEPS, start=1):
        rate = peak["rps"] * share
        found = at_rate(server, make(k), rate=rate, duration_s=duration_s, concurrency=max(concurrency, 16))
        point = {"offered_rps": round(rate, 1), "achieved_rps": found["achieved_rps"], "p50_ms": found["p50_ms"],
                 "p99_ms": found["p99_ms"], "errors": found["errors"] + found["unfinished"]}
        curve.append(point)
        ok = (point["errors"] == 0 and math.isfinite(found["p99_ms"]) and found["p99_ms"] <= budget_ms
              and found["achieved_rps"] >= 0.95 * rate)
        if ok:
            best = point
        elif best is not None:
            break  # past the knee: higher rates only queue more
    return {"saturation_rps": peak["rps"], "max_rps": best["offered_rps"] if best else 0.0,
            "p99_ms": best["p99_ms"] if best else None, "p50_ms": best["p50_ms"] if best else None,
            "curve": curve}


def sizing(routes: dict[str, dict[str, Any]], workers: int) -> dict[str, Any]:
    """Workers (one per core) and replicas for TARGET_QPS of SIZING_MIX from the measured capacities:
    a worker's capacity for the mix is the harmonic combination of its per-route capacities."""
    per_worker = {r: routes[r]["max_rps"] / workers for r in SIZING_MIX if routes.get(r, {}).get("max_rps")}
    if len(per_worker) != len(SIZING_MIX):
        return {"note": "not every route of the mix has a capacity"}
    mix_rps = 1.0 / sum(share / per_worker[r] for r, share in SIZING_MIX.items())
    cores = math.ceil(TARGET_QPS / (mix_rps * HEADROOM))
    degraded = {**per_worker, "home": routes["home_degraded"]["max_rps"] / workers} \
        if routes.get("home_degraded", {}).get("max_rps") else None
    out = {"mix": SIZING_MIX, "target_qps": TARGET_QPS, "headroom": HEADROOM,
           "mix_rps_per_worker": round(mix_rps, 1), "worker_cores": cores,
           "replicas_of_4_cores": math.ceil(cores / 4), "replicas_of_8_cores": math.ceil(cores / 8)}
    if degraded:
        out["mix_rps_per_worker_home_degraded"] = round(1.0 / sum(s / degraded[r] for r, s in SIZING_MIX.items()), 1)
    return out


def plot(routes: dict[str, dict[str, Any]], budget_ms: float, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for name, found in routes.items():
        xs = [p["achieved_rps"] for p in found["curve"]]
        ys = [p["p99_ms"] for p in found["curve"]]
        ax.plot(xs, ys, marker="o", label=name)
    ax.axhline(budget_ms, color="grey", linestyle="--", label=f"budget {budget_ms:g} ms")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("achieved requests/s (open loop)")
    ax.set_ylabel("p99 latency (ms)")
    ax.set_title("Latency vs throughput per route")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(result: dict[str, Any], plot_name: str) -> str:
    lines = [f"# Capacity on this machine ({result['setup']['when']})", "",
             f"Budget: p99 ≤ {result['budget_ms']:g} ms; {result['setup']['workers']} uvicorn worker(s); mall of "
             f"{result['setup']['items']:,} items and {result['setup']['users']:,} users; "
             f"{result['setup']['cpus']} cores shared with the load generator. Command: "
             f"`{result['setup']['command']}`.", "",
             "| route | saturation req/s | max req/s within budget | p50 ms | p99 ms | share of bare |",
             "|---|---:|---:|---:|---:|---:|"]
    bare = result["routes"]["bare"]["max_rps"] or float("nan")
    for name, found in result["routes"].items():
        p50 = "—" if found["p50_ms"] is None else f"{found['p50_ms']:.1f}"
        p99 = "—" if found["p99_ms"] is None else f"{found['p99_ms']:.1f}"
        lines.append(f"| {name} | {found['saturation_rps']:,.0f} | {found['max_rps']:,.0f} | {p50} | {p99} | "
                     f"{found['max_rps'] / bare:.2f} |")
    lines += ["", f"![latency vs throughput]({plot_name})", ""]
    size = result["sizing"]
    if "mix_rps_per_worker" in size:
        mix = ", ".join(f"{r} {s:.0%}" for r, s in size["mix"].items())
        lines += ["## Sizing rule", "",
                  f"Mix: {mix}. One worker (one core) sustains about **{size['mix_rps_per_worker']:,.0f} req/s** "
                  f"of it within the budget; keeping {size['headroom']:.0%} of that as the working point, "
                  f"**{size['target_qps']:,} QPS needs {size['worker_cores']} worker cores**: "
                  f"{size['replicas_of_4_cores']} replicas of 4 cores or {size['replicas_of_8_cores']} of 8 "
                  "(one uvicorn worker per core; Redis on its own cores)."]
        if "mix_rps_per_worker_home_degraded" in size:
            lines.append(f"While overloaded (home on its cheap path) a worker takes about "
                         f"{size['mix_rps_per_worker_home_degraded']:,.0f} req/s of the mix.")
    return "\n".join(lines) + "\n"


def run_capacity(out_dir: Path, *, workdir: Path, budget_ms: float = 50.0, duration_s: float = 6.0,
                 workers: int = 1, concurrency: int = 16, users: int = 20_000, items: int = 20_000,
                 events: int = 400_000, routes: Sequence[str] | None = None, json_path: Path | None = None,
                 command: str = "minirec bench capacity") -> dict[str, Any]:
    """Measure every route (or `routes`), write out_dir/capacity.md + capacity.png (+ json_path)."""
    import os
    wanted = list(routes or ("bare", "home", "home_degraded", "related", "search", "suggest", "events"))
    prep = prepare(workdir, users=users, items=items, events=events)
    out_dir.mkdir(parents=True, exist_ok=True)
    logs = workdir / "logs"
    # no per-key rate limit (it would cap the cheap routes at its 5,000/s default), no shedding
    unlimited = prep.config.read_text(encoding="utf-8").replace(f"[apps.{APP}]\n",
                                                                 f"[apps.{APP}]\nrate_limit_per_second = 0\n")
    full_config, degraded_config = workdir / "minirec-capacity.toml", workdir / "minirec-capacity-degraded.toml"
    full_config.write_text(unlimited + "\n[server.overload]\ndegrade_in_flight = 0\nshed_in_flight = 0\n",
                           encoding="utf-8")  # full quality at any load
    degraded_config.write_text(unlimited + "\n[server.overload]\ndegrade_in_flight = 1\ndegrade_wait_ms = 0\n"
                               "shed_in_flight = 0\n",
                               encoding="utf-8")
    makers: dict[str, Callable[[int, int], Requests]] = {
        "bare": lambda port, k: [("bare", encode_get("/healthz", port, None))],
        "home": lambda port, k: home_requests(prep, port, DEFAULT_MIX),
        "home_degraded": lambda port, k: home_requests(prep, port, DEFAULT_MIX),
        "related": lambda port, k: related_requests(prep, port),
        "search": lambda port, k: search_requests(prep, port),
        "suggest": lambda port, k: suggest_requests(prep, port),
        "events": lambda port, k: event_requests(prep, port, 60_000, seed=100 + k),
    }
    found: dict[str, Any] = {}
    for name in wanted:
        reset_state(workdir)
        config = degraded_config if name == "home_degraded" else full_config
        progress(f"capacity: {name} ({len(STEPS) + 1} phases of {duration_s:g} s) …")
        with running_server(config, workers, logs / f"capacity-{name}.log", None) as (server, _):
            found[name] = route_capacity(server, lambda k, n=name, s=server: makers[n](s.port, k),
                                         budget_ms=budget_ms, duration_s=duration_s, concurrency=concurrency)
        progress(f"capacity: {name}: {found[name]['max_rps']:,.0f} req/s within {budget_ms:g} ms "
                     f"(saturation {found[name]['saturation_rps']:,.0f})")
    result = {"budget_ms": budget_ms, "routes": found, "sizing": sizing(found, workers) if "bare" in found else {},
              "setup": {"workers": workers, "items": items, "users": users, "events": events,
                        "duration_s": duration_s, "cpus": os.cpu_count(), "command": command,
                        "when": time.strftime("%Y-%m-%d", time.gmtime())}}
    if "bare" in found and "home_degraded" in found and found["bare"]["max_rps"]:
        result["ratio_home_degraded_bare"] = round(found["home_degraded"]["max_rps"] / found["bare"]["max_rps"], 3)
    if "bare" in found and "home" in found and found["bare"]["max_rps"]:
        result["ratio_home_bare"] = round(found["home"]["max_rps"] / found["bare"]["max_rps"], 3)
    plot(found, budget_ms, out_dir / "capacity.png")
    (out_dir / "capacity.md").write_text(markdown(result, "capacity.png"), encoding="utf-8")
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=2), encoding="utf-8")
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", default="bench-work", help="where the bench mall is prepared and cached "
                                                                 "(default bench-work, shared with bench serve)")
    parser.add_argument("--out", default="docs/capacity", help="folder for capacity.md and capacity.png "
                                                                "(default docs/capacity)")
    parser.add_argument("--json", help="also write the results as JSON to this file")
    parser.add_argument("--budget-ms", type=float, default=50.0, help="p99 budget in ms (default 50)")
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per phase (default 6; 7 phases a route)")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers of the server (default 1)")
    parser.add_argument("--concurrency", type=int, default=16, help="connections of the saturation phase (default 16)")
    parser.add_argument("--routes", help="comma-separated subset of bare,home,home_degraded,related,search,suggest,"
                                         "events (default all)")
    parser.add_argument("--users", type=int, default=20_000, help="users of the bench mall (default 20000)")
    parser.add_argument("--items", type=int, default=20_000, help="items of the bench mall (default 20000)")
    parser.add_argument("--events", type=int, default=400_000, help="events of the bench mall (default 400000)")


def run_from_args(args: argparse.Namespace) -> int:
    routes = [r.strip() for r in args.routes.split(",")] if args.routes else None
    known = {"bare", "home", "home_degraded", "related", "search", "suggest", "events"}
    if routes and not set(routes) <= known:
        raise ValueError(f"--routes: unknown {', '.join(sorted(set(routes) - known))} (known: {', '.join(sorted(known))})")
    if args.budget_ms <= 0 or args.duration <= 0 or args.workers < 1:
        raise ValueError("--budget-ms, --duration and --workers must be positive")
    command = "minirec bench capacity " + " ".join(
        f"--{k.replace('_', '-')} {urllib.parse.quote(str(v))}" for k, v in vars(args).items()
        if k in ("budget_ms", "duration", "workers", "routes") and v is not None)
    result = run_capacity(Path(args.out), workdir=Path(args.workdir), budget_ms=args.budget_ms,
                          duration_s=args.duration, workers=args.workers, concurrency=args.concurrency,
                          users=args.users, items=args.items, events=args.events, routes=routes,
                          json_path=Path(args.json) if args.json else None, command=command)
    print(markdown(result, str(Path(args.out) / "capacity.png")))
    return 0
