"""Scale-out on real parts: `minirec serve` replicas behind HAProxy (Debian's package), sharing a
Redis Cluster of 3 masters started from the redis-server binary; one replica killed under load."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from bench.harness.client import free_port, request
from bench.harness.server import ServerProcess
from tests.serving_fixtures import APP_KEY, build_app, server_config

H = {"X-API-Key": APP_KEY}
HAPROXY_CFG = """global
    maxconn 2000
defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 10s
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response response-timeout 502 503 504
    option http-buffer-request
frontend api
    bind 127.0.0.1:{port}
    default_backend minirec
backend minirec
    balance roundrobin
    option httpchk GET /readyz
    default-server inter 500ms fall 2 rise 2
{servers}
"""


def haproxy_binary() -> str:
    """Debian's haproxy; the test set-up installs it (`make test`), CI must not skip."""
    found = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("haproxy is missing: `apt-get install haproxy` (make test does it)")
        pytest.skip("haproxy not installed (apt-get install haproxy)")
    return found


class Balancer:
    """HAProxy in the foreground with a config naming the replicas."""

    def __init__(self, workdir: Path, backends: list[int]) -> None:
        self.port = free_port()
        servers = "\n".join(f"    server r{i} 127.0.0.1:{p} check" for i, p in enumerate(backends))
        self.config = workdir / "haproxy.cfg"
        self.config.write_text(HAPROXY_CFG.format(port=self.port, servers=servers))
        with open(workdir / "haproxy.log", "wb") as log:
            self.proc = subprocess.Popen([haproxy_binary(), "-db", "-f", str(self.config)], stdout=subprocess.DEVNULL,
                                         stderr=log, start_new_session=True)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> Path:
    return build_app(tmp_path_factory.mktemp("scale-shop"))


def _cluster_url(handle) -> str:
    node = handle.client.get_nodes()[0]
    return f"redis+cluster://{node.host}:{node.port}"


@pytest.mark.slow
def test_replicas_behind_haproxy_on_a_redis_cluster_survive_losing_one(shop: Path, redis_cluster, tmp_path) -> None:
    """Home, search and events through the balancer from 16 clients for 24 s; replica 0 is killed
    (SIGKILL) at 8 s. No request fails: the balancer retries what the dead replica refused."""
    haproxy_binary()  # skips (or fails in CI) before any replica is started
    replicas = []
    for i in range(3):
        workdir = tmp_path / f"replica{i}"
        workdir.mkdir()
        server_config(shop, workdir, None)
        replicas.append(ServerProcess(workdir / "minirec.toml", _cluster_url(redis_cluster)).start())
    balancer = Balancer(tmp_path, [r.port for r in replicas])

    def front(method: str, path: str, body: object = None,
              headers: dict[str, str] | None = None) -> tuple[int, object]:
        """A request through the balancer."""
        return request(balancer.port, method, path, body, headers)

    deadline = time.monotonic() + 60  # generous: haproxy's first health checks on a busy machine
    while True:
        try:
            if front("GET", "/readyz")[0] == 200:
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, (tmp_path / "haproxy.log").read_text()
        time.sleep(0.2)

    stop = threading.Event()
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()

    def client(k: int) -> None:
        rng = np.random.default_rng(k)
        while not stop.is_set():
            user = f"u{int(rng.integers(600)):06d}"
            kind = rng.choice(["home", "search", "events"], p=[0.6, 0.2, 0.2])
            started = time.perf_counter()
            try:
                if kind == "home":
                    status, body = front("GET", f"/v1/apps/shop/recommend/home?user_id={user}&n=10", headers=H)
                elif kind == "search":
                    status, body = front("GET", "/v1/apps/shop/search?q=%E6%89%8B%E6%9C%BA", headers=H)
                else:
                    status, body = front("POST", "/v1/apps/shop/events", {"events": [
                        {"event_id": uuid.uuid4().hex, "user_id": user, "type": "view", "item_id": "i000001"}]},
                        headers=H)
                ok = status == 200
            except OSError as exc:
                ok, status, body = False, None, repr(exc)
            with lock:
                latencies.append(time.perf_counter() - started)
                if not ok:
                    failures.append(f"{kind}: {status} {str(body)[:200]}")

    try:
        with ThreadPoolExecutor(16) as pool:
            for k in range(16):
                pool.submit(client, k)
            time.sleep(8)
            before_kill = len(latencies)
            os.killpg(replicas[0].proc.pid, signal.SIGKILL)
            replicas[0].proc.wait(timeout=30)
            replicas[0].proc = None
            time.sleep(16)
            stop.set()
    finally:
        stop.set()
        balancer.stop()
        for replica in replicas:
            replica.stop()
    p99_ms = float(np.percentile(latencies, 99) * 1000)
    print(f"scale-out: {len(latencies)} requests, {len(failures)} failed, p99 {p99_ms:.1f} ms")
    # behaviour, not speed: traffic flowed before and after the kill (however fast this machine is) …
    assert before_kill > 0 and len(latencies) - before_kill >= 50
    assert failures == []  # … and no request failed
