"""``EventStore`` on the JetStream stream ``DSE_EVENTS`` (the port and its semantics: ``port.py``).

JetStream specifics (``docs/jetstream.md §4``): single appends are requests with a parsed ack; bulk
appends keep a bounded window of un-acked publishes on one reply subscription. nats-py's
``publish_async`` is not used because in 2.16.0 an *error* ack (e.g. wrong last sequence) raises inside
its reply handler and leaves the future pending forever. Header dicts are built fresh per message
(nats-py mutates them). Reads and tails use our own ordered consumer (``ordered.py``).

A store can be *pinned* to the stream incarnation it reads (``pin``, the engine does it at start-up):
from then on a stream that is gone, was made anew under the same name (its ``created`` stamp differs),
lost messages from its front, or went back raises ``LogIntegrityError`` from ``identity``, ``last_seq``,
``read`` and ``follow`` (before each consumer the tail re-creates), instead of answering about, or
reading on from, another stream (docs/design.md, "Tamper evidence"). Unpinned, they behave as before.

While the connection is down (nats-py reconnecting) an append fails at once with ``TransientError``
instead of being parked in nats-py's reconnect buffer: a parked append would be sent whenever the
connection came back, possibly after its caller had been told it failed (a CLI error, an ingest 503),
and a full buffer (2 MiB) makes *every* publish on the connection fail, acks and commands included.
Riding out such a failure within a deadline is the caller's choice (``appending.py``).

Partial failures of ``append_many``: every message is settled; those acknowledged stay stored, and
re-sending the whole batch is safe *within the stream's duplicate window* (2 minutes for DSE_EVENTS),
because every envelope's id is its ``Nats-Msg-Id`` and the server answers a repeat with the original
sequence. ``append_many_settled`` returns each message's own outcome, so a caller that retries for longer
than the window (the executor's report appender) re-sends only what was not acknowledged; the one case
left is a message stored whose ack was lost, re-sent after the window: it is stored twice, which the fold
absorbs for pod reports (they state a level: running, ready, deleted).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections import deque
from collections.abc import AsyncGenerator, Sequence
from datetime import UTC, datetime, timedelta

import msgspec
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from engine.store.jetstream_api import (
    ApiError,
    JetStreamUnavailable,
    api_request,
    error_for,
    stream_info,
    translate,
    translate_errors,
)
from engine.store.ordered import ordered_messages
from engine.store.port import AppendResult, LogIntegrityError, StoredEvent, StreamIdentity, decode_stored
from engine.store.streams import EVENTS_STREAM
from events.codec import encode
from events.envelope import Envelope
from events.errors import DsctlError, NotFound, PermanentError
from events.subjects import subject_for

log = structlog.get_logger("dsctl.store")

_NS = 1_000_000_000


def _decode_delivered(seq: int, subject: str, time_ns: int, data: bytes) -> StoredEvent:
    return decode_stored(seq, subject, time_from_ns(time_ns), data)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def time_from_ns(ns: int) -> datetime:
    # datetime has microseconds; JetStream gives nanoseconds: truncate, never round up past the event.
    # Epoch plus a timedelta is exact integer arithmetic and half the cost of fromtimestamp + replace,
    # which shows in a replay (one call per event)
    return _EPOCH + timedelta(microseconds=ns // 1000)


class _PubAck(msgspec.Struct, frozen=True):
    stream: str = ""
    seq: int = 0
    duplicate: bool = False
    error: ApiError | None = None


_ack_decoder = msgspec.json.Decoder(_PubAck)


def _result_from_ack(context: str, msg: Msg) -> AppendResult:
    if msg.headers and msg.headers.get("Status") == "503":
        raise JetStreamUnavailable(
            f"{context}: no responders: no stream leader took it "
            f"(is the cluster electing one, or is the stream {EVENTS_STREAM} missing?)"
        )
    try:
        ack = _ack_decoder.decode(msg.data)
    except msgspec.DecodeError as err:
        raise PermanentError(f"{context}: unreadable publish ack {msg.data[:200]!r}") from err
    if ack.error is not None:
        raise error_for(context, ack.error)
    return AppendResult(ack.seq, ack.duplicate)


def _headers(
    envelope: Envelope,
    expected_last_subject_seq: int | None,
    expected_last_seq: int | None,
    expected_subject_filter: str | None = None,
) -> dict[str, str]:
    # a fresh dict every time: nats-py adds keys to the dict it is given
    headers = {"Nats-Msg-Id": envelope.id}
    if expected_last_subject_seq is not None:
        headers["Nats-Expected-Last-Subject-Sequence"] = str(expected_last_subject_seq)
        if expected_subject_filter is not None:
            # no nats-py constant for this header (docs/jetstream.md §1.1)
            headers["Nats-Expected-Last-Subject-Sequence-Subject"] = expected_subject_filter
    if expected_last_seq is not None:
        headers["Nats-Expected-Last-Sequence"] = str(expected_last_seq)
    return headers


class JetStreamEventStore:
    """``EventStore`` on the ``DSE_EVENTS`` stream (applied beforehand by ``streams.apply_definitions``)."""

    def __init__(
        self,
        nc: Client,
        *,
        stream: str = EVENTS_STREAM,
        timeout: float = 5.0,
        max_in_flight: int = 1024,
        heartbeat: float = 2.0,
        stall_timeout: float = 30.0,
    ) -> None:
        self._nc = nc
        self.stream = stream
        self._timeout = timeout
        self._max_in_flight = max_in_flight
        self._heartbeat = heartbeat
        self._stall_timeout = stall_timeout
        self._acks: dict[str, asyncio.Future[Msg]] = {}
        self._ack_sub: Subscription | None = None
        self._ack_prefix = ""
        self._ack_counter = 0
        #: the incarnation this store is held to once pinned, and the highest last sequence seen since
        self._pinned: StreamIdentity | None = None
        self._highest = 0

    # --- writing ---------------------------------------------------------------------------------

    async def append(
        self,
        envelope: Envelope,
        *,
        expected_last_subject_seq: int | None = None,
        expected_last_seq: int | None = None,
        expected_subject_filter: str | None = None,
    ) -> AppendResult:
        subject = subject_for(envelope.data)
        context = f"append {envelope.type} {envelope.id} to {subject}"
        headers = _headers(envelope, expected_last_subject_seq, expected_last_seq, expected_subject_filter)
        self._check_connected(context)
        with translate_errors(context):
            msg = await self._nc.request(subject, encode(envelope), timeout=self._timeout, headers=headers)
        return _result_from_ack(context, msg)

    def _check_connected(self, context: str) -> None:
        # fail now rather than park the publish in nats-py's reconnect buffer (see the module docstring);
        # a closed connection is left to nats-py, whose ConnectionClosedError maps to the same error
        if self._nc.is_reconnecting:
            raise JetStreamUnavailable(f"{context}: not connected to NATS (reconnecting)")

    async def _ensure_ack_sub(self) -> None:
        if self._ack_sub is None:
            self._ack_prefix = self._nc.new_inbox() + "."
            self._ack_sub = await self._nc.subscribe(self._ack_prefix + "*", cb=self._on_ack)

    async def _on_ack(self, msg: Msg) -> None:
        future = self._acks.pop(msg.subject[len(self._ack_prefix) :], None)
        if future is not None and not future.done():
            future.set_result(msg)

    async def append_many(self, envelopes: Sequence[Envelope]) -> list[AppendResult]:
        """Publish with at most ``max_in_flight`` un-acked messages; results in input order.

        Every message is settled before returning. If any failed, the first failure is raised after the
        others settled; the ones that were stored stay stored, and a retry of the whole batch is safe
        within the duplicate window (same ids, deduplicated; see the module docstring).
        """
        outcomes = await self.append_many_settled(envelopes)
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                raise outcome
        return [o for o in outcomes if isinstance(o, AppendResult)]

    async def append_many_settled(self, envelopes: Sequence[Envelope]) -> list[AppendResult | DsctlError]:
        """Like ``append_many``, but each message's own outcome: its result, or the error it met (a
        message never sent because the connection failed before it carries that failure too). Raises
        nothing but cancellation, so a retrying caller can re-send exactly the messages not stored."""
        if not envelopes:
            return []
        outcomes: list[AppendResult | DsctlError | None] = [None] * len(envelopes)
        try:
            self._check_connected(f"append {len(envelopes)} events")
            await self._ensure_ack_sub()
        except Exception as err:
            return [_as_dsctl(f"append {len(envelopes)} events", err)] * len(envelopes)
        loop = asyncio.get_running_loop()
        window: deque[tuple[int, str, asyncio.Future[Msg]]] = deque()
        failed = False

        async def settle() -> None:
            nonlocal failed
            index, token, future = window.popleft()
            context = f"append {envelopes[index].type} {envelopes[index].id}"
            # once one ack timed out the connection is in trouble: settle the rest without more waiting
            wait = self._timeout if not failed else 0.05
            try:
                async with asyncio.timeout(wait):
                    msg = await future
                outcomes[index] = _result_from_ack(context, msg)
            except TimeoutError as err:
                self._acks.pop(token, None)
                failed = True
                unavailable = JetStreamUnavailable(f"{context}: no ack within {self._timeout:g}s")
                unavailable.__cause__ = err
                outcomes[index] = unavailable
            except Exception as err:
                outcomes[index] = _as_dsctl(context, err)

        try:
            for index, envelope in enumerate(envelopes):
                if len(window) >= self._max_in_flight:
                    await settle()
                context = f"append {envelope.type} {envelope.id}"
                try:
                    data = encode(envelope)
                except Exception as err:  # this message can never be sent; the others still can
                    outcomes[index] = PermanentError(f"{context}: cannot encode: {err}")
                    continue
                try:
                    self._check_connected(context)
                    self._ack_counter += 1
                    token = str(self._ack_counter)
                    future: asyncio.Future[Msg] = loop.create_future()
                    self._acks[token] = future
                    window.append((index, token, future))
                    with translate_errors(context):
                        await self._nc.publish(
                            subject_for(envelope.data),
                            data,
                            reply=self._ack_prefix + token,
                            headers={"Nats-Msg-Id": envelope.id},
                        )
                except Exception as err:
                    if window and window[-1][0] == index:
                        _, token, future = window.pop()
                        self._acks.pop(token, None)
                        future.cancel()
                    failure = _as_dsctl(context, err)
                    outcomes[index] = failure
                    if isinstance(failure, PermanentError):
                        continue  # this message's own problem (e.g. over the max payload)
                    # the connection failed: every later one would too, so they share the failure
                    for later in range(index + 1, len(envelopes)):
                        outcomes[later] = failure
                    failed = True
                    break
            while window:
                await settle()
        finally:
            for _, token, future in window:
                self._acks.pop(token, None)
                future.cancel()
        return [
            o if o is not None else JetStreamUnavailable(f"append {envelopes[i].id}: not settled")
            for i, o in enumerate(outcomes)
        ]

    async def append_raw(self, subject: str, data: bytes, *, msg_id: str | None = None) -> AppendResult:
        """Store bytes as they are, bypassing the codec: for importing foreign data, and for tests of
        how readers handle what the codec would refuse."""
        headers = {"Nats-Msg-Id": msg_id} if msg_id else None
        self._check_connected(f"append raw to {subject}")
        with translate_errors(f"append raw to {subject}"):
            msg = await self._nc.request(subject, data, timeout=self._timeout, headers=headers)
        return _result_from_ack(f"append raw to {subject}", msg)

    # --- reading ---------------------------------------------------------------------------------

    async def last_seq(self) -> int:
        if self._pinned is not None:
            return (await self.identity()).last_seq
        return (await stream_info(self._nc, self.stream, timeout=self._timeout)).state.last_seq

    async def pin(self) -> StreamIdentity:
        """Hold every later read to the stream incarnation there now (raises NotFound if there is none)."""
        self._pinned = None
        found = await self._look()
        self._pinned, self._highest = found, found.last_seq
        log.info("store.pinned", stream=self.stream, created=found.created, last_seq=found.last_seq)
        return found

    async def _look(self) -> StreamIdentity:
        info = await api_request(self._nc, f"STREAM.INFO.{self.stream}", timeout=self._timeout)
        state = info.get("state") or {}
        return StreamIdentity(
            stream=self.stream,
            created=str(info.get("created", "")),
            first_seq=int(state.get("first_seq", 0)),
            last_seq=int(state.get("last_seq", 0)),
        )

    async def identity(self) -> StreamIdentity:
        """The stream now; once pinned, checked against the pinned incarnation (``LogIntegrityError``:
        gone, another one, messages removed from its front, or a last sequence lower than seen)."""
        pinned = self._pinned
        try:
            now = await self._look()
        except NotFound as err:
            if pinned is None:
                raise
            raise LogIntegrityError(
                f"the stream {self.stream} is gone (it was created {pinned.created}; "
                f"the last sequence seen was {self._highest}): {err}",
                "stream_deleted",
            ) from err
        if pinned is None:
            return now
        if now.created != pinned.created:
            raise LogIntegrityError(
                f"the stream {self.stream} was replaced: it was created {pinned.created}, the one there "
                f"now {now.created} (last sequence {now.last_seq}, {self._highest} seen before)",
                "stream_replaced",
            )
        if now.first_seq > max(pinned.first_seq, 1):
            raise LogIntegrityError(
                f"the stream {self.stream} lost messages from its front: its first sequence is "
                f"{now.first_seq}, it was {max(pinned.first_seq, 1)}",
                "first_seq_moved",
            )
        if now.last_seq < self._highest:
            raise LogIntegrityError(
                f"the stream {self.stream} went back: its last sequence is {now.last_seq}, "
                f"{self._highest} was seen before",
                "last_seq_back",
            )
        self._highest = now.last_seq
        return now

    async def get(self, seq: int) -> StoredEvent:
        # STREAM.MSG.GET goes to the stream leader, so it sees every acknowledged append (Direct Get
        # may be answered by a lagging replica)
        response = await api_request(
            self._nc, f"STREAM.MSG.GET.{self.stream}", {"seq": seq}, timeout=self._timeout
        )
        message = response["message"]
        if int(message["seq"]) != seq:
            raise NotFound(f"{self.stream} has no message {seq}")
        data = base64.b64decode(message.get("data", ""))
        when = datetime.fromisoformat(_trim_nanos(message["time"]))
        return decode_stored(seq, message["subject"], when, data)

    async def read(
        self,
        *,
        start_seq: int | None = None,
        start_time: datetime | None = None,
        end_seq: int | None = None,
        subjects: Sequence[str] | None = None,
    ) -> AsyncGenerator[StoredEvent, None]:
        """Events from ``start_seq`` (default 1) or ``start_time``, up to ``end_seq`` or the last one
        present when the read began, matching any of ``subjects``."""
        last = await self.last_seq()
        stop = last if end_seq is None else min(end_seq, last)
        start = 1 if start_seq is None else max(start_seq, 1)
        if stop < start or stop == 0:
            return
        messages = ordered_messages(
            self._nc,
            self.stream,
            start_seq=start,
            start_time=start_time,
            filters=list(subjects or ()),
            stop_at=stop,
            heartbeat=self._heartbeat,
            stall_timeout=self._stall_timeout,
            api_timeout=self._timeout,
            convert=_decode_delivered,
            check_on_reset=self._check_pinned,
        )
        async with contextlib.aclosing(messages):
            async for event in messages:
                yield event

    async def follow(
        self, from_seq: int = 1, subjects: Sequence[str] | None = None
    ) -> AsyncGenerator[StoredEvent, None]:
        """Every event from ``from_seq`` on, then new ones as they arrive; survives server restarts."""
        await self._check_pinned()
        messages = ordered_messages(
            self._nc,
            self.stream,
            start_seq=max(from_seq, 1),
            filters=list(subjects or ()),
            stop_at=None,
            heartbeat=self._heartbeat,
            stall_timeout=None,
            api_timeout=self._timeout,
            convert=_decode_delivered,
            check_on_reset=self._check_pinned,
        )
        async with contextlib.aclosing(messages):
            async for event in messages:
                yield event

    async def _check_pinned(self) -> None:
        if self._pinned is not None:
            await self.identity()

    async def close(self) -> None:
        """Drop the ack subscription (the connection belongs to the caller)."""
        if self._ack_sub is not None:
            with contextlib.suppress(Exception):
                await self._ack_sub.unsubscribe()
            self._ack_sub = None
        for future in self._acks.values():
            future.cancel()
        self._acks.clear()


def _as_dsctl(context: str, err: BaseException) -> DsctlError:
    """The project's error for a failed publish or ack. Anything nats-py raises that the mapping does not
    know (seen: internal errors while it reconnects) counts as transient, logged with its traceback:
    giving up on it would drop an event, while retrying a real bug only repeats a loud log line."""
    mapped = translate(context, err)
    if mapped is not None:
        return mapped
    log.error("store.unexpected_append_error", context=context, exc_info=err)
    unexpected = JetStreamUnavailable(f"{context}: unexpected {type(err).__name__}: {err}")
    unexpected.__cause__ = err
    return unexpected


def _trim_nanos(text: str) -> str:
    """``2026-11-22T09:42:48.570534004Z`` -> ``2026-11-22T09:42:48.570534+00:00`` (µs, truncated)."""
    text = text.replace("Z", "+00:00")
    if "." not in text:
        return text
    head, _, rest = text.partition(".")
    digits = ""
    while rest and rest[0].isdigit():
        digits, rest = digits + rest[0], rest[1:]
    return f"{head}.{digits[:6].ljust(6, '0')}{rest}"
