"""An ordered push consumer, written here rather than taken from nats-py, for the store's reads and tails.

Why not ``js.subscribe(ordered_consumer=True)``: nats-py's version does not reset when heartbeats stop
(nats.py #510, e.g. after a server restart drops its memory consumer), recreates consumers from
background tasks we cannot bound or await, and has no notion of "stop at the end of a range". This one
is a plain loop in the caller's task (no helper tasks, nothing to leak):

- one ephemeral R1 memory consumer, ack none, flow control and idle heartbeats, delivering to a fresh
  inbox; a reset makes a new inbox, so stale deliveries from an old consumer are never mistaken for
  new ones;
- it resets (a new consumer from the last stream sequence seen + 1) when the consumer sequence skips,
  when a heartbeat reports deliveries we did not get, or when nothing, not even a heartbeat, arrived for
  three heartbeat intervals (docs/jetstream.md §4.5);
- while the server is away, consumer creation is retried with capped backoff; a bounded read gives up
  after ``stall_timeout`` without progress (TransientError), a tail never gives up;
- a bounded read ends at ``stop_at`` or as soon as a delivery reports nothing pending, i.e. at the last
  matching message that existed when the read began;
- a stream that vanishes under the reader (a consumer re-created after a reset finds "stream not found"
  for ``GONE_GRACE`` seconds) raises ``LogIntegrityError``, never waits forever; and a reader given
  ``check_on_reset`` (the event store's identity check) runs it before each new consumer, so it never
  reads on from another stream made under the same name (docs/design.md, "Tamper evidence").
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import TypeVar

import msgspec
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from engine.store.jetstream_api import api_request
from engine.store.port import LogIntegrityError
from events.errors import DsctlError, NotFound, TransientError

log = structlog.get_logger()

_NS = 1_000_000_000
T = TypeVar("T")

#: how long a stream the reader was reading may answer "not found" before it counts as deleted (a
#: moment's grace for a cluster whose meta layer is still settling)
GONE_GRACE = 2.0


class RawMessage(msgspec.Struct, frozen=True, gc=False):
    seq: int
    subject: str
    time_ns: int
    data: bytes


class _Meta(msgspec.Struct, frozen=True, gc=False):
    seq: int
    cseq: int
    time_ns: int
    pending: int


def parse_ack_subject(reply: str) -> _Meta:
    """Metadata from ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>`` (v1) or
    its v2 form with domain and account hash in front and a random token at the end."""
    tokens = reply.split(".")
    if len(tokens) == 9:
        return _Meta(int(tokens[5]), int(tokens[6]), int(tokens[7]), int(tokens[8]))
    if len(tokens) >= 11:
        return _Meta(int(tokens[7]), int(tokens[8]), int(tokens[9]), int(tokens[10]))
    raise ValueError(f"not a JetStream delivery subject: {reply!r}")


def rfc3339(t: datetime) -> str:
    if t.tzinfo is None:
        raise ValueError("start_time must be timezone-aware")
    return t.isoformat()


def raw_message(seq: int, subject: str, time_ns: int, data: bytes) -> RawMessage:
    return RawMessage(seq, subject, time_ns, data)


async def ordered_messages(
    nc: Client,
    stream: str,
    *,
    start_seq: int = 1,
    start_time: datetime | None = None,
    filters: Sequence[str] = (),
    stop_at: int | None = None,
    heartbeat: float = 2.0,
    stall_timeout: float | None = 30.0,
    api_timeout: float = 5.0,
    convert: Callable[[int, str, int, bytes], T] = raw_message,  # type: ignore[assignment]
    convert_headers: Callable[[int, str, int, bytes, Mapping[str, str] | None], T] | None = None,
    check_on_reset: Callable[[], Awaitable[None]] | None = None,
) -> AsyncGenerator[T, None]:
    """Messages of ``stream`` in sequence order from ``start_seq`` (or ``start_time``) matching ``filters``.

    With ``stop_at`` the iteration ends at the end of the range (see module docstring); without it, it
    tails forever. Close it (``contextlib.aclosing``) when breaking out early. ``convert`` builds what is
    yielded (seq, subject, time in ns, payload); passing the decoder here instead of wrapping this
    generator in another one saves a generator hop per message. ``convert_headers``, when given, is
    used instead and also gets the message's headers. ``check_on_reset`` runs before every consumer
    after the first (its errors end the read, but transient ones, which are retried).
    """
    # a deque plus one waiter future: cheaper per message than asyncio.Queue, which matters at ~100k/s
    buffer: deque[Msg] = deque()
    waiter: list[asyncio.Future[None]] = []
    loop = asyncio.get_running_loop()

    async def on_msg(msg: Msg) -> None:
        buffer.append(msg)
        if waiter and not waiter[0].done():
            waiter[0].set_result(None)

    last_seq = start_seq - 1
    by_time = start_time
    sub: Subscription | None = None
    consumer: str | None = None
    idle_limit = heartbeat * 3
    backoff = 0.05
    progress_at = time.monotonic()
    created_once = False
    missing_since: float | None = None

    async def drop_consumer(delete: bool) -> None:
        nonlocal sub, consumer
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            sub = None
        if delete and consumer is not None:
            # best effort: its inactive_threshold removes it anyway
            with contextlib.suppress(DsctlError):
                await api_request(nc, f"CONSUMER.DELETE.{stream}.{consumer}", timeout=min(api_timeout, 1.0))
        consumer = None
        buffer.clear()

    async def create() -> int:
        """Create consumer + subscription; return its num_pending. Retries while the server is away."""
        nonlocal sub, consumer, backoff, created_once, missing_since
        while True:
            if nc.is_closed:
                raise TransientError(f"reading {stream}: the NATS connection is closed")
            if created_once and check_on_reset is not None:
                try:
                    await check_on_reset()
                except TransientError as err:
                    if stall_timeout is not None and time.monotonic() - progress_at > stall_timeout:
                        raise TransientError(
                            f"reading {stream}: no progress for {stall_timeout:g}s "
                            f"(last seq {last_seq}): {err}"
                        ) from err
                    log.debug("ordered.check_retry", stream=stream, error=str(err))
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 1.0)
                    continue
            inbox = nc.new_inbox()
            config: dict[str, object] = {
                "deliver_subject": inbox,
                "ack_policy": "none",
                "max_deliver": 1,
                "flow_control": True,
                "idle_heartbeat": int(heartbeat * _NS),
                "inactive_threshold": int(max(5.0, heartbeat * 5) * _NS),
                "mem_storage": True,
                "num_replicas": 1,
                "replay_policy": "instant",
            }
            if by_time is not None:
                config["deliver_policy"] = "by_start_time"
                config["opt_start_time"] = rfc3339(by_time)
            else:
                config["deliver_policy"] = "by_start_sequence"
                config["opt_start_seq"] = last_seq + 1
            if len(filters) == 1:
                config["filter_subject"] = filters[0]
            elif filters:
                config["filter_subjects"] = list(filters)
            try:
                sub = await nc.subscribe(inbox, cb=on_msg)
                info = await api_request(
                    nc,
                    f"CONSUMER.CREATE.{stream}",
                    {"stream_name": stream, "config": config},
                    timeout=api_timeout,
                )
            except NotFound as err:
                with contextlib.suppress(Exception):
                    if sub is not None:
                        await sub.unsubscribe()
                sub = None
                if not created_once:
                    raise  # never there: the caller's error to report, as before
                now = time.monotonic()
                missing_since = missing_since if missing_since is not None else now
                if now - missing_since >= GONE_GRACE:
                    raise LogIntegrityError(
                        f"the stream {stream} was deleted while it was being read "
                        f"(last sequence read {last_seq}): {err}",
                        "stream_deleted",
                    ) from err
                await asyncio.sleep(0.2)
                continue
            except (TimeoutError, TransientError, OSError) as err:
                with contextlib.suppress(Exception):
                    if sub is not None:
                        await sub.unsubscribe()
                sub = None
                if stall_timeout is not None and time.monotonic() - progress_at > stall_timeout:
                    raise TransientError(
                        f"reading {stream}: no progress for {stall_timeout:g}s (last seq {last_seq}): {err}"
                    ) from err
                log.debug("ordered.create_retry", stream=stream, from_seq=last_seq + 1, error=str(err))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
                continue
            except BaseException:
                if sub is not None:
                    with contextlib.suppress(Exception):
                        await sub.unsubscribe()
                    sub = None
                raise
            backoff = 0.05
            created_once = True
            missing_since = None
            consumer = str(info["name"])
            pending: int = info.get("num_pending", 0)
            return pending

    async def restart(delete: bool) -> bool:
        """A new consumer from the last sequence seen + 1; True when a bounded read has nothing left."""
        await drop_consumer(delete=delete)
        pending = await create()
        return stop_at is not None and pending == 0

    try:
        if stop_at is not None and stop_at <= last_seq:
            return
        if await restart(delete=False):
            return
        expected_cseq = 1
        while True:
            if not buffer:
                waiter[:] = [loop.create_future()]
                try:
                    async with asyncio.timeout(idle_limit):
                        await waiter[0]
                except TimeoutError:
                    log.info("ordered.idle_reset", stream=stream, from_seq=last_seq + 1)
                    if (
                        stop_at is not None
                        and stall_timeout is not None
                        and time.monotonic() - progress_at > stall_timeout
                    ):
                        # a bounded read whose consumer keeps being recreated yet delivers nothing
                        # (seen once right after a cluster server restarted): say so, never spin
                        raise TransientError(
                            f"reading {stream}: no message for {stall_timeout:g}s although "
                            f"the range is not done (last seq {last_seq}, reading to {stop_at})"
                        ) from None
                    if await restart(delete=False):
                        return
                    expected_cseq = 1
                    continue
                finally:
                    waiter.clear()
                continue
            msg = buffer.popleft()
            headers = msg.headers
            if headers is not None and "Status" in headers:
                status = headers["Status"]
                if status == "100":
                    if msg.reply:  # flow control request: we have consumed everything before it
                        await nc.publish(msg.reply, b"")
                        continue
                    stalled = headers.get("Nats-Consumer-Stalled")
                    if stalled:
                        await nc.publish(stalled, b"")
                    last_c = headers.get("Nats-Last-Consumer")
                    if last_c is not None and int(last_c) != expected_cseq - 1:
                        log.info("ordered.gap_reset", stream=stream, from_seq=last_seq + 1, via="heartbeat")
                        if await restart(delete=True):
                            return
                        expected_cseq = 1
                    continue
                # 409 consumer deleted, leadership change, ...: start over from where we are
                log.info("ordered.status_reset", stream=stream, status=status, from_seq=last_seq + 1)
                if await restart(delete=True):
                    return
                expected_cseq = 1
                continue
            meta = parse_ack_subject(msg.reply)
            if meta.cseq != expected_cseq:
                log.info("ordered.gap_reset", stream=stream, from_seq=last_seq + 1, via="sequence")
                if await restart(delete=True):
                    return
                expected_cseq = 1
                continue
            expected_cseq += 1
            if meta.seq <= last_seq:
                continue
            by_time = None  # after the first message, resume by sequence
            last_seq = meta.seq
            progress_at = time.monotonic()
            if stop_at is not None and meta.seq > stop_at:
                return
            if convert_headers is not None:
                yield convert_headers(meta.seq, msg.subject, meta.time_ns, msg.data, headers)
            else:
                yield convert(meta.seq, msg.subject, meta.time_ns, msg.data)
            if stop_at is not None and (meta.seq >= stop_at or meta.pending == 0):
                return
    finally:
        await drop_consumer(delete=consumer is not None and not nc.is_closed)
