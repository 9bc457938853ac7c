"""The production event sink: NATS JetStream, shared by every replica and durable beyond any one machine.

The local log (`features/eventlog.py`) stays the embedded default; with `[server] event_stream =
"nats://host:4222"` every accepted batch is published to the stream `MINIREC_EVENTS` (subject
`MINIREC_EVENTS.<app>`, file storage; `event_stream_name` changes the name) and acknowledged by the NATS server before the API answers;
a failure raises OSError, so the route answers 503 and nothing is acknowledged, as with a full disk.

Exactly once: each message carries `Nats-Msg-Id: <app>/<event_id>`, so JetStream drops a batch
retried within its duplicate window (2 minutes) — on the same replica or, after a replica died, on
another; the export keeps the first of each event_id whatever the window (as the local log's does).
The replicas also share Redis, whose event-id claims catch most retries before they reach the stream.

nats-py is asyncio-only and the events route runs in a thread: the connection lives on its own event
loop in a daemon thread, and `append` waits for that loop's publish acks.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from features.keys import check_app

STREAM = "MINIREC_EVENTS"
#: JetStream's de-duplication window for Nats-Msg-Id (its default, stated here for the docs).
DUPLICATE_WINDOW_S = 120.0


def is_stream_url(value: object) -> bool:
    """Whether a log location names a NATS server rather than a folder."""
    return isinstance(value, str) and value.startswith(("nats://", "tls://"))


class JetStreamLog:
    """Appends event batches to a JetStream stream; one per server process (see the module docstring)."""

    def __init__(self, url: str, stream: str = STREAM, timeout_s: float = 5.0) -> None:
        self.url, self.stream, self.timeout_s = url, stream, timeout_s
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="minirec-nats", daemon=True)
        self._thread.start()
        self._nc: Any = None
        self._js: Any = None
        self._connecting = asyncio.Lock()  # used on the loop's thread only
        self.commits = 0

    def _run(self, coro: Any, timeout: float | None = None) -> Any:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout or self.timeout_s)
        except BaseException:
            future.cancel()  # a late publish must not linger (nor be acknowledged to nobody)
            raise

    async def _connect(self) -> None:
        import nats
        from nats.js.errors import NotFoundError

        if self._nc is not None and self._nc.is_connected:
            return
        if self._nc is None or self._nc.is_closed:
            # after a first connection nats-py reconnects by itself; publishes fail fast meanwhile
            self._nc = await nats.connect(self.url, connect_timeout=self.timeout_s, max_reconnect_attempts=-1,
                                          reconnect_time_wait=0.5, allow_reconnect=True)
            self._js = self._nc.jetstream(timeout=self.timeout_s)
        try:
            await self._js.stream_info(self.stream)
        except NotFoundError:
            await self._js.add_stream(name=self.stream, subjects=[f"{self.stream}.>"], storage="file",
                                      duplicate_window=DUPLICATE_WINDOW_S)

    def append(self, app: str, events: Sequence[Mapping[str, Any]]) -> str:
        """Publish a batch and wait for every ack; returns the subject. Raises ValueError or
        TypeError (before publishing anything) for an event that is not JSON-serializable, and
        OSError when the stream does not acknowledge the whole batch (retry it: ids de-duplicate)."""
        subject = f"{self.stream}.{check_app(app)}"
        if not events:
            return subject
        payloads = [(f"{app}/{ev['event_id']}", json.dumps(dict(ev), ensure_ascii=False, separators=(",", ":"),
                                                            allow_nan=False).encode()) for ev in events]

        async def publish() -> None:
            async with self._connecting:  # one connection attempt at a time; batches publish concurrently
                await self._connect()
            await asyncio.gather(*(self._js.publish(subject, data, headers={"Nats-Msg-Id": msg_id})
                                   for msg_id, data in payloads))

        try:
            self._run(publish(), self.timeout_s * 2)
        except Exception as exc:  # noqa: BLE001 - any failure means: not acknowledged
            raise OSError(f"event stream {self.url} did not acknowledge the batch: {type(exc).__name__}: {exc}") from exc
        self.commits += 1
        return subject

    def close(self) -> None:
        """Close the connection (every append has returned by now) and stop the loop's thread."""
        async def shutdown() -> None:
            if self._nc is not None and not self._nc.is_closed:
                await self._nc.close()
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        try:
            self._run(shutdown(), 5.0)
        except Exception:  # noqa: BLE001 - closing at shutdown: nothing left to protect
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._loop.close()


def iter_stream_events(url: str, app: str, stream: str = STREAM, timeout_s: float = 5.0,
                       idle_s: float = 1.0) -> Iterator[dict[str, Any]]:
    """Every event of `app` in the stream, in stream order, as dicts (the export and the analytics
    read this; the export keeps the first of each event_id)."""
    return iter(asyncio.run(_read_all(url, f"{stream}.{check_app(app)}", stream, timeout_s, idle_s)))


async def _read_all(url: str, subject: str, stream: str, timeout_s: float, idle_s: float) -> list[dict[str, Any]]:
    import nats
    from nats.errors import TimeoutError as NatsTimeout
    from nats.js.api import DeliverPolicy
    from nats.js.errors import NotFoundError

    nc = await nats.connect(url, connect_timeout=timeout_s, max_reconnect_attempts=2)
    try:
        js = nc.jetstream(timeout=timeout_s)
        try:
            info = await js.stream_info(stream, subjects_filter=subject)
        except NotFoundError:
            return []
        wanted = (info.state.subjects or {}).get(subject, 0)
        last = info.state.last_seq
        events: list[dict[str, Any]] = []
        if not wanted:
            return events
        sub = await js.subscribe(subject, stream=stream, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
        try:
            while len(events) < wanted:
                try:
                    msg = await sub.next_msg(timeout=idle_s)
                except NatsTimeout:
                    break  # messages removed meanwhile (limits): what is there has been read
                try:
                    event = json.loads(msg.data)
                except ValueError:
                    continue
                if isinstance(event, dict):
                    events.append(event)
                if msg.metadata.sequence.stream >= last:
                    break
        finally:
            await sub.unsubscribe()
        return events
    finally:
        await nc.close()


def delete_stream(url: str, stream: str) -> None:
    """Remove a stream (tests clean up their own)."""
    async def run() -> None:
        import nats
        from nats.js.errors import NotFoundError

        nc = await nats.connect(url)
        try:
            await nc.jetstream().delete_stream(stream)
        except NotFoundError:
            pass
        finally:
            await nc.close()

    asyncio.run(run())
