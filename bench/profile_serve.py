"""`minirec bench profile`: where a request's server CPU goes, by layer, under the serving bench's load.

Starts `minirec serve` on the serving bench's mall (`bench/harness/mall.py` prepares and reuses it),
drives one endpoint at its peak (closed loop) and samples the server's Python stacks with py-spy
(an external sampler: the server runs unmodified). Each sample is charged to the innermost frame that
belongs to a layer below — our models and rules, our route code, the Redis client, FastAPI/Starlette/
pydantic, uvicorn and the event loop — and the table gives each layer's share of the samples and
that share of the server's CPU ms per answered request (measured as `minirec bench serve` does).
It says how much of a request no model work can remove: the layers other than "models and rules".

Needs py-spy (`pip install py-spy`, in the `dev` extra) and permission to attach to a process (root,
or `kernel.yama.ptrace_scope = 0`).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.harness.client import encode_get
from bench.harness.load import closed_loop, measured
from bench.harness.mall import prepare, reset_state
from bench.harness.server import running_server
from bench.harness.traffic import DEFAULT_MIX, home_requests, suggest_requests

#: (layer, pattern of a frame). py-spy names a frame "function (path:line)", the path relative to its
#: sys.path entry. A sample goes to the layer of its innermost frame that matches one; asyncio's own
#: frames are skipped there (Redis replies are read inside them) and count only when nothing else does.
LAYERS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("models and rules",
     re.compile(r"\((serving/(pipeline|catalog|scenes|search_rank|search_state)\.py|(recsys|search)/)")),
    ("route code", re.compile(r"\((serving|features)/")),
    ("redis client", re.compile(r"\((redis|hiredis)/")),
    ("fastapi, starlette, pydantic", re.compile(r"\((fastapi|starlette|pydantic|pydantic_core)/")),
    ("uvicorn, event loop", re.compile(r"\((uvicorn|httptools|uvloop)/")),
)
ASYNCIO = re.compile(r"\(asyncio/")
ENDPOINTS = ("home", "suggest", "bare")


def py_spy() -> str:
    """Path of the py-spy executable (beside this Python first, then on PATH)."""
    beside = Path(sys.executable).parent / "py-spy"
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if not found:
        raise RuntimeError("minirec bench profile needs py-spy: pip install py-spy (or pip install -e '.[dev]')")
    return found


def layer_of(stack: list[str]) -> str:
    """The layer of the innermost frame of `stack` (outermost first) that belongs to one."""
    for frame in reversed(stack):
        for name, pattern in LAYERS:
            if pattern.search(frame):
                return name
    return "uvicorn, event loop" if any(ASYNCIO.search(frame) for frame in stack) else "other"


def summarize(raw: Path, cpu_ms_per_req: float, top: int = 15) -> dict[str, Any]:
    """Layers and leaf frames of py-spy's raw (collapsed) output, as shares and CPU ms per request.

    `cpu_ms_per_req` is the server's measured CPU per answered request; each layer gets its share."""
    layers: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    for line in raw.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        layers[layer_of(frames)] += int(count)
        leaves[frames[-1]] += int(count)
    total = sum(layers.values())
    if not total:
        raise RuntimeError(f"py-spy recorded no samples in {raw}")

    def rows(counter: collections.Counter[str], n: int | None) -> list[dict[str, Any]]:
        return [{"name": name, "share": round(c / total, 4), "cpu_ms_per_req": round(c / total * cpu_ms_per_req, 4)}
                for name, c in counter.most_common(n)]

    return {"samples": total, "cpu_ms_per_req": cpu_ms_per_req, "layers": rows(layers, None),
            "top_frames": rows(leaves, top)}


def run_profile(endpoint: str, *, workdir: Path, duration_s: float, rate: int, concurrency: int,
                users: int = 20_000, items: int = 20_000, events: int = 400_000) -> dict[str, Any]:
    """Profile one endpoint at peak load; returns `summarize`'s dict plus the load's figures.

    The mall's size defaults to the serving bench's (whose prepared workdir is then reused)."""
    if endpoint not in ENDPOINTS:
        raise ValueError(f"endpoint {endpoint!r} is not one of {', '.join(ENDPOINTS)}")
    spy = py_spy()
    prep = prepare(workdir, users=users, items=items, events=events)
    reset_state(workdir)
    raw = workdir / "logs" / f"profile-{endpoint}.txt"
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.unlink(missing_ok=True)
    with running_server(prep.config, 1, workdir / "logs" / f"server-profile-{endpoint}.log", None) as (server, _):
        if endpoint == "home":
            requests = home_requests(prep, server.port, dict(DEFAULT_MIX))
        elif endpoint == "suggest":
            requests = suggest_requests(prep, server.port)
        else:
            requests = [("bare", encode_get("/healthz", server.port, None))]
        asyncio.run(closed_loop(server.port, requests, concurrency=concurrency, warmup_s=0.0, duration_s=2.0,
                                max_requests=10**6))  # warm-up, not sampled
        # Sampling runs over the whole load and a little idle time around it (py-spy skips idle threads).
        sampler = subprocess.Popen([spy, "record", "--pid", str(server.proc.pid), "--rate", str(rate),
                                    "--format", "raw", "--output", str(raw), "--nonblocking"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(1.0)  # attaching takes a moment
            if sampler.poll() is not None:
                raise RuntimeError(f"py-spy could not attach (exit {sampler.returncode}): "
                                   f"{sampler.stderr.read().strip()[-500:] if sampler.stderr else ''}")
            phase, cpu = measured(server, closed_loop(server.port, requests, concurrency=concurrency,
                                                      warmup_s=0.0, duration_s=duration_s, max_requests=10**7))
        finally:
            sampler.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl+C
            _, err = sampler.communicate(timeout=60)
        if not raw.exists():
            raise RuntimeError(f"py-spy wrote nothing (exit {sampler.returncode}): {err.strip()[-500:]}")
    result = summarize(raw, cpu["server_cpu_ms_per_req"])
    return {"endpoint": endpoint, "rps": phase.summary()["rps"], "raw": str(raw), **result}


def format_table(result: dict[str, Any]) -> str:
    """A readable table of a `run_profile` result: layers, then the frames with the most samples."""
    lines = [f"{result['endpoint']}: {result['rps']:.0f} req/s at peak, {result['cpu_ms_per_req']:.3f} ms of server "
             f"CPU per request ({result['samples']} samples)",
             f"{'layer':<30} {'share':>7} {'ms/req':>8}"]
    lines += [f"{r['name']:<30} {r['share']:>7.1%} {r['cpu_ms_per_req']:>8.3f}" for r in result["layers"]]
    lines.append("top frames (where the samples were):")
    lines += [f"  {r['share']:>6.1%} {r['cpu_ms_per_req']:>7.3f}  {r['name'][:100]}" for r in result["top_frames"]]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `minirec bench profile`."""
    parser.add_argument("--endpoint", choices=ENDPOINTS, default="home", help="what to drive (default home)")
    parser.add_argument("--workdir", default="bench-work/serve",
                        help="the serving bench's folder; its mall and bundle are reused (default bench-work/serve)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds sampled at peak load (default 20)")
    parser.add_argument("--rate", type=int, default=500, help="py-spy samples per second (default 500)")
    parser.add_argument("--concurrency", type=int, default=32, help="connections of the load (default 32)")


def run_from_args(args: argparse.Namespace) -> int:
    """Run with parsed `add_arguments` options; prints the table on stdout."""
    result = run_profile(args.endpoint, workdir=Path(args.workdir), duration_s=args.duration, rate=args.rate,
                         concurrency=args.concurrency)
    print(format_table(result))
    return 0

