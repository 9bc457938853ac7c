"""`minirec serve --workers 2`: one /metrics view over both workers (Prometheus multiprocess mode)."""

from __future__ import annotations

import http.client
import os
import re
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from serving.server_config import write_server_config
from tests.redis_fixtures import EXTERNAL_URL

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(port: int, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)  # a new connection each time
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


@pytest.mark.slow
def test_metrics_add_up_over_workers(tmp_path: Path, external_redis) -> None:
    config = tmp_path / "minirec.toml"
    write_server_config(config, {"shop": "k" * 32}, "a" * 32, None, artifacts=str(tmp_path / "artifacts"))
    port = _free_port()
    env = {**os.environ, "REDIS_URL": EXTERNAL_URL, "PYTHONPATH": str(ROOT)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "minirec.cli", "serve", "--config", str(config), "--port",
                                 str(port), "--workers", "2"], cwd=tmp_path, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while log.read_text(errors="replace").count("Application startup complete") < 2:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.2)
        with ThreadPoolExecutor(8) as pool:  # concurrent connections reach both workers
            statuses = list(pool.map(lambda _: _get(port, "/healthz")[0], range(200)))
        assert statuses == [200] * 200
        sent = len(statuses)
        folder = tmp_path / ".minirec-state" / "prometheus"
        pids = {re.sub(r"\D", "", f.name) for f in folder.glob("counter_*.db")}
        assert len(pids) == 2, "both workers should have counted requests"
        for _ in range(4):  # whichever worker answers, the count is the sum over both
            status, text = _get(port, "/metrics")
            assert status == 200
            found = re.search(r'minirec_requests_total\{app="",route="/healthz",status="200"\} (\S+)', text)
            assert found is not None and float(found.group(1)) == sent
    finally:
        proc.terminate()
        proc.wait(timeout=30)
