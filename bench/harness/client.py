"""HTTP to a server on this machine: one-shot JSON requests (standard library, no proxies from the
environment) and a raw HTTP/1.1 keep-alive connection on asyncio for load phases.

The raw connection sends pre-encoded bytes and parses only status, length and body, so it costs far
less CPU per request than httpx or locust; that matters when the load generator shares the cores
with the server it measures.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
from typing import Any

HOST = "127.0.0.1"
#: What a raw connection may raise when the server closes, resets or garbles a response.
NET_ERRORS = (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError)


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def port_listening(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:`port`."""
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


def request(port: int, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
            timeout: float = 10.0) -> tuple[int, Any]:
    """One request over a new connection: (status, parsed JSON body, or the text when not JSON).

    `body` is sent as JSON. Connection errors (OSError, http.client.HTTPException) propagate."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        data = None if body is None else json.dumps(body).encode()
        conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        raw = response.read().decode(errors="replace")
        try:
            return response.status, json.loads(raw)
        except ValueError:
            return response.status, raw
    finally:
        conn.close()


def encode_get(path: str, port: int, key: str | None) -> bytes:
    """A keep-alive GET request as bytes (with `X-API-Key` when `key` is given)."""
    auth = f"X-API-Key: {key}\r\n" if key else ""
    return f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n{auth}\r\n".encode()


def encode_post_json(path: str, port: int, key: str | None, body: bytes) -> bytes:
    """A keep-alive POST of a JSON body as bytes."""
    auth = f"X-API-Key: {key}\r\n" if key else ""
    return (f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n{auth}"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


class Connection:
    """One keep-alive HTTP/1.1 connection: send pre-encoded requests, read status and body."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        """Send one request and return (status, body); opens the connection on first use."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        assert self.reader is not None
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length, chunked, close = 0, False, False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                close = value.strip().lower() == b"close"
        body = await self._chunked() if chunked else (await self.reader.readexactly(length) if length else b"")
        if close:
            self.close()
        return status, body

    async def _chunked(self) -> bytes:
        assert self.reader is not None
        parts = []
        for _ in range(100_000):  # bounded: a body of at most this many chunks
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")
                break
            parts.append((await self.reader.readexactly(size + 2))[:-2])
        return b"".join(parts)

    def close(self) -> None:
        """Close the socket (the next request reconnects)."""
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None
