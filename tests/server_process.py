"""A real `minirec serve` process for tests that need one (uvicorn, its own event loop and Redis)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`python -m minirec.cli serve --config CONFIG` on a free port; `request()` talks HTTP to it."""

    def __init__(self, config: Path, redis_url: str | None = None, workers: int = 1) -> None:
        self.config = config
        self.redis_url = redis_url
        self.workers = workers
        self.port = free_port()
        self.log = config.parent / f"serve-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 90.0) -> "ServerProcess":
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("REDIS_URL", None)
        if self.redis_url:
            env["REDIS_URL"] = self.redis_url
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "minirec.cli", "serve", "--config", str(self.config), "--port", str(self.port),
                 "--workers", str(self.workers)], cwd=self.config.parent, env=env, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if self.request("GET", "/readyz")[0] == 200:
                    return self
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not become ready: {self.log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM (a graceful stop: requests in flight finish) and wait."""
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=60)
            self.proc = None

    def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
                timeout: float = 10.0) -> tuple[int, Any]:
        """(status, parsed JSON body or text) over a new connection."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            data = None if body is None else json.dumps(body).encode()
            all_headers = {"Content-Type": "application/json", **(headers or {})}
            conn.request(method, path, body=data, headers=all_headers)
            response = conn.getresponse()
            raw = response.read().decode()
            try:
                return response.status, json.loads(raw)
            except ValueError:
                return response.status, raw
        finally:
            conn.close()
