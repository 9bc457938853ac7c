"""Checks that run before a route: the rate limit of the request's API key, and — before a body is
read — the API key of write routes and the body size.

FastAPI parses a body before it resolves a route's dependencies, so without this a client with no
key could make the server parse 15 MB of JSON, and a key check could only come after. Here:
- `POST`/`PUT` under `/v1/apps/{app_id}/` without that app's key get 401/403 before any byte of
  the body is read (the platform route needs the platform key the same way);
- a body larger than `max_body_bytes` gets 413: at once when `Content-Length` says so, or as soon
  as a streamed body passes the limit;
- a key over its requests-per-second limit gets 429 with `Retry-After` (`serving/ratelimit.py`).
"""

from __future__ import annotations

import orjson
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.errors import ApiError, error_body
from serving.server_config import key_matches

#: Default body limit: a full batch of 1,000 events is about 300 KB.
MAX_BODY_BYTES = 2 * 1024 * 1024
_WRITES = {"POST", "PUT", "PATCH"}


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class RequestGuard:
    """ASGI middleware: key check and body limit ahead of the routes (see the module docstring)."""

    def __init__(self, app: ASGIApp, owner: object, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.owner = owner
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        ctx = getattr(getattr(self.owner, "state", None), "ctx", None)
        if ctx is not None and not self._within_rate(ctx, scope):
            await _send_error(send, 429, "rate_limited", "too many requests for this API key; retry after a second",
                              [(b"retry-after", b"1")])
            return
        if scope["method"] not in _WRITES:
            await self.app(scope, receive, send)
            return
        limit = ctx.config.max_body_bytes if ctx is not None else self.max_body_bytes
        try:
            if ctx is not None:
                self._check_key(ctx, scope)
            length = _header(scope, b"content-length")
            if length is not None and (not length.isdigit() or int(length) > limit):
                raise ApiError(413, "too_large", f"the body is larger than {limit} bytes")
        except ApiError as exc:
            await _send_error(send, exc.status, exc.code, exc.message)
            return
        await self.app(scope, _limited(receive, limit), send)

    @staticmethod
    def _within_rate(ctx, scope: Scope) -> bool:
        """Count the request against its key's limit (only valid keys: others get 401 anyway)."""
        key = _header(scope, b"x-api-key")
        if not key:
            return True
        app_id = ctx.config.app_for_key(key)
        if app_id is not None:
            return ctx.limiter.allow(app_id, ctx.config.apps[app_id].rate_limit_per_second)
        if ctx.config.platform_key_sha256 and key_matches(key, ctx.config.platform_key_sha256):
            return ctx.limiter.allow("platform", ctx.config.platform_rate_limit_per_second)
        return True

    @staticmethod
    def _check_key(ctx, scope: Scope) -> None:
        from serving.deps import check_app_key  # deps imports the registry; keep this module light

        parts = scope["path"].split("/")
        key = _header(scope, b"x-api-key")
        if len(parts) > 3 and parts[1] == "v1" and parts[2] == "apps" and parts[3]:
            check_app_key(ctx, parts[3], key)
        elif scope["path"].startswith("/v1/platform/"):
            if not key:
                raise ApiError(401, "unauthorized", "missing X-API-Key header")
            digest = ctx.config.platform_key_sha256
            if digest is None or not key_matches(key, digest):
                raise ApiError(403, "forbidden", "platform profile routes need the platform key")


def _limited(receive: Receive, limit: int) -> Receive:
    """`receive` that stops a body growing past `limit` bytes with a 413 (FastAPI re-raises it)."""
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise HTTPException(413, f"the body is larger than {limit} bytes")
        return message

    return wrapped


async def _send_error(send: Send, status: int, code: str, message: str,
                      headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = orjson.dumps(error_body(code, message))
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})
