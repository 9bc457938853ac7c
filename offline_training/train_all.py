"""`minirec train-all`: train every app whose data changed, each as a Ray task, through `train()`.

Each app runs `offline_training.train.train` (tuning, evaluation, the publish gate, the atomic bundle
write and publish: the one training path) in a Ray task that asks for `num_cpus` CPUs and `memory`
bytes, so Ray runs as many apps at once as the machine or cluster holds. Limits are enforced in the
task by a watchdog thread: past its time limit or over its memory limit the training is stopped (an
exception raised in it, so `BundleWriter` removes its staging folder and `current` never moves); a
task that does not stop within `STOP_GRACE_SECONDS` is killed (the watchdog kills its own process,
and the driver cancels the task with `force=True` as a last resort), and the driver then removes
the dead worker's staging folder (`recsys.bundle.remove_abandoned_staging`). One app failing never
stops the others; every app gets a row in the summary.

Which apps train: those whose data folder's fingerprint (`AppData.fingerprint`, recorded in every
bundle's manifest as `data_fingerprint`) differs from their published bundle's. An app whose newest,
unpublished bundle was held by the publish gate on the same data is not retrained either: the same
data would give the same verdict. `force` trains them all.

Ray is imported only inside `run_train_all`: the server never imports this module, and nothing else
of minirec needs Ray.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import os
import resource
import threading
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recsys import bundle

DEFAULT_TIMEOUT_S = 3600.0
DEFAULT_MEMORY_MB = 4096
#: How long a stopped training may take to unwind before its process is killed.
STOP_GRACE_SECONDS = 15.0
#: Rows with these statuses make `minirec train-all` exit non-zero.
FAILED = ("failed", "out of time", "out of memory", "crashed")
_LIMIT_KEYS = {"timeout_seconds": float, "memory_mb": int, "cpus": float}


@dataclass(frozen=True)
class AppJob:
    """One app to consider: its data folder, training config and the limits of its task."""

    app: str
    data_dir: Path
    config: Path | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    memory_mb: int = DEFAULT_MEMORY_MB
    num_cpus: float = 1.0


@dataclass
class AppRow:
    """One line of the summary table (and of `--json`)."""

    app: str
    #: published | held (by the publish gate) | unchanged | failed | out of time | out of memory | crashed
    status: str
    detail: str = ""
    family: str | None = None
    ndcg: float | None = None
    popularity: float | None = None
    version: str | None = None
    seconds: float | None = None
    peak_rss_mb: float | None = None
    events: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --- which apps -----------------------------------------------------------------------------------

def discover_apps(apps_root: str | os.PathLike, *, config: str | os.PathLike | None = None,
                  timeout_s: float = DEFAULT_TIMEOUT_S, memory_mb: int = DEFAULT_MEMORY_MB,
                  num_cpus: float = 1.0) -> list[AppJob]:
    """The apps of an apps root: every `ROOT/<app>/data/` folder is an app's data folder.

    `ROOT/<app>/train.toml`, if present, is that app's training config (else `config`), and
    `ROOT/<app>/limits.toml` may set its `timeout_seconds`, `memory_mb` and `cpus` (else the given
    defaults). Raises ValueError for a malformed limits file or an invalid app id."""
    root = Path(apps_root)
    if not root.is_dir():
        raise FileNotFoundError(f"apps root {root} is not a directory")
    jobs = []
    for folder in sorted(p for p in root.iterdir() if (p / "data").is_dir()):
        bundle.check_app_name(folder.name)
        limits = _read_limits(folder / "limits.toml")
        own_config = folder / "train.toml"
        jobs.append(AppJob(folder.name, folder / "data", own_config if own_config.is_file() else
                           (Path(config) if config else None),
                           timeout_s=limits.get("timeout_seconds", timeout_s),
                           memory_mb=limits.get("memory_mb", memory_mb), num_cpus=limits.get("cpus", num_cpus)))
    return jobs


def _read_limits(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path}: {exc}") from exc
    out = {}
    for key, value in raw.items():
        kind = _LIMIT_KEYS.get(key)
        if kind is None:
            raise ValueError(f"{path}: unknown key '{key}' (known: {', '.join(_LIMIT_KEYS)})")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ValueError(f"{path}: '{key}' must be a number > 0, got {value!r}")
        out[key] = kind(value)
    return out


def training_reason(job: AppJob, artifacts: str | os.PathLike, platform_dir: str | os.PathLike | None = None,
                    force: bool = False) -> tuple[bool, str]:
    """Whether `job`'s app needs training, and why (or why not)."""
    from offline_training.event_merge import folder_fingerprint

    if force:
        return True, "forced"
    try:
        fingerprint = folder_fingerprint(job.data_dir, platform_dir)
    except (ValueError, OSError):
        return True, "data folder unreadable"  # training reports what is wrong with it
    current = bundle.current_version(artifacts, job.app)
    if current is not None:
        recorded = _manifest(artifacts, job.app, current).get("data_fingerprint")
        if recorded != fingerprint:
            return True, f"data changed since {current}"
    newest = (bundle.versions(artifacts, job.app) or [None])[-1]
    if newest is not None and newest != current:
        manifest = _manifest(artifacts, job.app, newest)
        gate = manifest.get("gate") or {}
        if manifest.get("data_fingerprint") == fingerprint and gate.get("passed") is False:
            return False, f"held by the publish gate on this data ({newest}); --force retrains"
    if current is None:
        return True, "never published"
    return False, f"unchanged since {current}"


def _manifest(artifacts: str | os.PathLike, app: str, version: str) -> dict[str, Any]:
    try:
        return json.loads((bundle.app_dir(artifacts, app) / version / bundle.MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


# --- one app, inside its task ---------------------------------------------------------------------

class _Stopped(BaseException):
    """Raised in the training thread by the watchdog (a BaseException: no `except Exception` swallows it)."""


class _Watchdog(threading.Thread):
    """Stops the training of this thread past `deadline` or over `memory_mb`; kills the process if the
    training does not unwind within `STOP_GRACE_SECONDS` (only when `may_kill`: never the driver)."""

    def __init__(self, deadline: float, memory_mb: float, may_kill: bool) -> None:
        super().__init__(name="minirec-train-watchdog", daemon=True)
        self.target = threading.get_ident()
        self.deadline, self.limit_mb, self.may_kill = deadline, memory_mb, may_kill
        self.reason: str | None = None
        self.done = threading.Event()

    def run(self) -> None:
        import psutil

        process = psutil.Process()
        while not self.done.wait(0.2):
            rss_mb = process.memory_info().rss / 2**20
            if rss_mb > self.limit_mb:
                self.reason = f"out of memory: RSS {rss_mb:.0f} MB over the limit of {self.limit_mb:.0f} MB"
            elif time.monotonic() > self.deadline:
                self.reason = "out of time"
            else:
                continue
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.target), ctypes.py_object(_Stopped))
            if not self.done.wait(STOP_GRACE_SECONDS) and self.may_kill:
                os.kill(os.getpid(), 9)  # stuck in native code: the driver reports the dead worker
            return

    def stop(self) -> None:
        """End the watch; a stop it had asked for but not yet delivered is withdrawn."""
        self.done.set()
        if self.is_alive():
            self.join()
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.target), None)


def _remove_own_staging(artifacts: str | os.PathLike, app: str) -> None:
    """Remove this process's staging folders of `app`: a stop may land while `BundleWriter` cleans up.
    One training runs per process at a time, so they are the stopped training's."""
    import shutil
    import socket

    owner = f"-{socket.gethostname()}-{os.getpid()}-"
    for path in bundle.app_dir(artifacts, app).glob(".staging-*"):
        if owner in path.name:
            shutil.rmtree(path, ignore_errors=True)


def _reset_peak_rss() -> None:
    """Let this task's peak RSS start from now in a reused worker process (Linux: VmHWM)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # elsewhere the process's peak so far is reported


def _peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train_app(job: AppJob, artifacts: str | os.PathLike, *, platform_dir: str | os.PathLike | None = None,
              run_evaluation: bool = True, in_worker: bool = True) -> AppRow:
    """Train one app through `offline_training.train.train` under its limits; never raises (except
    KeyboardInterrupt outside a worker): every outcome is a row. `in_worker` allows the watchdog to
    kill the process when a stopped training does not unwind."""
    from threadpoolctl import threadpool_limits

    from offline_training.datafolder import DataError
    from offline_training.fit import known_family
    from offline_training.train import train

    _reset_peak_rss()
    started = time.monotonic()
    watchdog = _Watchdog(started + job.timeout_s, job.memory_mb, may_kill=in_worker)
    row = AppRow(job.app, "failed")
    try:
        try:
            watchdog.start()
            # BLAS and OpenMP pools sized to the CPUs Ray gave this task, not to the whole machine
            with threadpool_limits(max(1, int(job.num_cpus))):
                result = train(job.data_dir, artifacts, job.app, config=job.config, platform_dir=platform_dir,
                               run_evaluation=run_evaluation, progress=False)
        finally:
            watchdog.stop()
        gate, known = result.gate, result.tuning.known
        row.status = "published" if result.published else "held"
        row.version = result.version
        row.family = known_family(result.config) if result.config is not None else None
        if gate is not None and gate.new is not None:
            row.ndcg, row.popularity = gate.new, gate.popularity
        elif known is not None:
            row.ndcg, row.popularity = known.value, known.popularity
        row.detail = "; ".join(gate.reasons) if gate is not None else ""
    except _Stopped:
        row.status = "out of memory" if (watchdog.reason or "").startswith("out of memory") else "out of time"
        row.detail = watchdog.reason if row.status == "out of memory" else \
            f"stopped at its time limit of {job.timeout_s:g} s"
        _remove_own_staging(artifacts, job.app)
    except DataError as exc:
        row.detail = f"bad data: {exc}"
    except MemoryError:
        row.status, row.detail = "out of memory", "MemoryError"
    except Exception as exc:  # noqa: BLE001 - any failure of one app is reported in its row
        row.detail = f"{type(exc).__name__}: {exc}"
    row.seconds = round(time.monotonic() - started, 2)
    row.peak_rss_mb = round(_peak_rss_mb(), 1)
    return row


# --- the driver -----------------------------------------------------------------------------------

def merge_events(jobs: Sequence[AppJob], source: str, *, stream: str, platform_dir: str | os.PathLike | None,
                 progress: bool = True) -> tuple[dict[str, str], dict[str, AppRow]]:
    """Merge each app's new logged events into its data folder (offline_training/event_merge.py).
    Returns a note per app and a failed row for each app whose merge failed."""
    from tqdm import tqdm

    from offline_training.event_merge import merge_new_events

    notes: dict[str, str] = {}
    failed: dict[str, AppRow] = {}
    for job in tqdm(jobs, desc="merge events", unit="app", disable=not progress):
        try:
            notes[job.app] = merge_new_events(source, job.app, job.data_dir, platform_dir=platform_dir,
                                              stream=stream).summary()
        except Exception as exc:  # noqa: BLE001 - that app is not trained; the others go on
            failed[job.app] = AppRow(job.app, "failed", f"event merge: {type(exc).__name__}: {exc}")
    return notes, failed


def _error_row(job: AppJob, exc: BaseException, seconds: float) -> AppRow:
    """The row of a task that returned no row: cancelled, or its worker died."""
    import ray.exceptions as rex

    if isinstance(exc, rex.TaskCancelledError):
        return AppRow(job.app, "out of time", f"killed at its time limit of {job.timeout_s:g} s (+{STOP_GRACE_SECONDS:g} s "
                                              "to stop)", seconds=round(seconds, 2))
    if isinstance(exc, rex.OutOfMemoryError):
        return AppRow(job.app, "out of memory", "killed by Ray's memory monitor (the node ran short of memory)",
                      seconds=round(seconds, 2))
    if isinstance(exc, (rex.WorkerCrashedError, rex.NodeDiedError)):
        return AppRow(job.app, "crashed", f"the worker process died ({type(exc).__name__}); a training that "
                                          f"exceeds its {job.memory_mb} MB and does not stop is killed",
                      seconds=round(seconds, 2))
    cause = getattr(exc, "cause", None) or exc
    return AppRow(job.app, "failed", f"{type(cause).__name__}: {cause}", seconds=round(seconds, 2))


def _remove_dead_staging(artifacts: str | os.PathLike, apps: Sequence[str], wait_s: float = 10.0) -> None:
    """Remove the staging folders that killed workers left (their processes may take a moment to exit)."""
    until = time.monotonic() + wait_s
    for app in apps:
        app_dir = bundle.app_dir(artifacts, app)
        while app_dir.is_dir():
            bundle.remove_abandoned_staging(app_dir)
            if not any(app_dir.glob(".staging-*")) or time.monotonic() > until:
                break
            time.sleep(0.2)


def run_train_all(jobs: Sequence[AppJob], artifacts: str | os.PathLike, *, platform_dir: str | os.PathLike | None = None,
                  force: bool = False, events_source: str | None = None, stream: str = "MINIREC_EVENTS",
                  run_evaluation: bool = True, address: str | None = None, cpus: int | None = None,
                  progress: bool = True, on_row: Callable[[AppRow], None] | None = None) -> list[AppRow]:
    """Merge new events (with `events_source`), then train every changed app (all with `force`) as Ray
    tasks; returns one row per job, in the jobs' order.

    Ray: `address` connects to a cluster (`ray://…` or `auto`); otherwise an already initialized Ray
    is used, or a local one is started with `cpus` CPUs (default: this machine's) and shut down at the end.
    """
    import ray
    from tqdm import tqdm

    artifacts = Path(artifacts)
    rows: dict[str, AppRow] = {}
    notes: dict[str, str] = {}
    if events_source:
        notes, rows = merge_events(jobs, events_source, stream=stream, platform_dir=platform_dir, progress=progress)
    todo: list[AppJob] = []
    for job in jobs:
        if job.app in rows:
            continue
        needed, why = training_reason(job, artifacts, platform_dir, force)
        if needed:
            todo.append(job)
        else:
            rows[job.app] = AppRow(job.app, "unchanged", why)
    started_here = False
    if todo and not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=cpus or os.cpu_count() or 1, include_dashboard=False, log_to_driver=False)
        started_here = True
    try:
        for row in _run_tasks(ray, todo, artifacts, platform_dir, run_evaluation,
                              tqdm(total=len(todo), desc="train-all", unit="app", disable=not progress)):
            rows[row.app] = row
            if on_row is not None:
                on_row(row)
    finally:
        if started_here:
            ray.shutdown()
    for app, note in notes.items():
        rows[app].events = note
    return [rows[job.app] for job in jobs]


def _run_tasks(ray: Any, todo: Sequence[AppJob], artifacts: Path, platform_dir: str | os.PathLike | None,
               run_evaluation: bool, bar: Any):
    """Submit as many tasks as the cluster's CPUs and memory hold (so a task's clock starts when it
    can run), yield rows as they finish, and cancel tasks past their time limit plus the grace."""
    if not todo:
        return
    task = ray.remote(train_app)
    resources = ray.cluster_resources()
    cpu_total, mem_total = resources.get("CPU", 1.0), resources.get("memory", float("inf"))
    queue = list(todo)
    running: dict[Any, tuple[AppJob, float]] = {}
    killed: list[str] = []
    with bar:
        while queue or running:
            while queue:
                job = queue[0]
                if job.num_cpus > cpu_total or job.memory_mb * 2**20 > mem_total:
                    queue.pop(0)
                    bar.update()
                    yield AppRow(job.app, "failed", f"asks for {job.num_cpus:g} CPUs and {job.memory_mb} MB; the Ray "
                                                    f"cluster has {cpu_total:g} CPUs and {mem_total / 2**20:.0f} MB")
                    continue
                cpu_used = sum(j.num_cpus for j, _ in running.values())
                mem_used = sum(j.memory_mb * 2**20 for j, _ in running.values())
                if running and (cpu_used + job.num_cpus > cpu_total or mem_used + job.memory_mb * 2**20 > mem_total):
                    break
                queue.pop(0)
                ref = task.options(num_cpus=job.num_cpus, memory=job.memory_mb * 2**20, max_retries=0,
                                   name=f"train {job.app}").remote(job, artifacts, platform_dir=platform_dir,
                                                                   run_evaluation=run_evaluation)
                running[ref] = (job, time.monotonic())
            ready, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
            now = time.monotonic()
            for ref in ready:
                job, t0 = running.pop(ref)
                try:
                    row = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - cancelled, crashed: a row says which
                    row = _error_row(job, exc, now - t0)
                    killed.append(job.app)
                bar.set_postfix_str(f"{row.app}: {row.status}")
                bar.update()
                yield row
            for ref, (job, t0) in list(running.items()):
                if now - t0 > job.timeout_s + 2 * STOP_GRACE_SECONDS:
                    ray.cancel(ref, force=True)  # the in-task watchdog did not stop it: kill its worker
                    running.pop(ref)
                    killed.append(job.app)
                    row = _error_row(job, ray.exceptions.TaskCancelledError(), now - t0)
                    bar.set_postfix_str(f"{row.app}: {row.status}")
                    bar.update()
                    yield row
    _remove_dead_staging(artifacts, killed)


# --- the summary ----------------------------------------------------------------------------------

def exit_status(rows: Sequence[AppRow]) -> int:
    """1 if any app failed (error, out of time or memory, crashed); 0 otherwise (held by the gate is not a failure)."""
    return 1 if any(r.status in FAILED for r in rows) else 0


def format_table(rows: Sequence[AppRow]) -> str:
    """The summary as a plain-text table, one app per line."""
    header = ("app", "status", "winner", "NDCG@10 val", "popularity", "seconds", "peak MB", "why / detail")
    lines = [header]
    for r in rows:
        detail = "; ".join(x for x in (r.detail, f"events: {r.events}" if r.events else "") if x)
        lines.append((r.app, r.status, r.family or "-", _num(r.ndcg), _num(r.popularity),
                      "-" if r.seconds is None else f"{r.seconds:.1f}",
                      "-" if r.peak_rss_mb is None else f"{r.peak_rss_mb:.0f}",
                      detail.replace("\n", " ")[:160]))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    out = ["  ".join(cell.ljust(w) for cell, w in zip(line[:-1], widths)) + "  " + line[-1] for line in lines]
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.status] = counts.get(r.status, 0) + 1
    out.append(f"{len(rows)} apps: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    return "\n".join(out)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def write_json(rows: Sequence[AppRow], path: str | os.PathLike) -> None:
    """Write the summary rows as JSON (`{"apps": [...], "failed": n}`)."""
    Path(path).write_text(json.dumps({"apps": [r.to_dict() for r in rows],
                                      "failed": sum(r.status in FAILED for r in rows)},
                                     ensure_ascii=False, indent=2), encoding="utf-8")
