"""Appending an ingest batch all or nothing, with JetStream's atomic batch publish.

Why: a batch was validated as a whole, then appended one message at a time, so anything that failed
after the first message left part of the batch in the log: a message the server refused (one over its
max payload), a lost connection or a stream leader election (the caller got a 503, and the first events
stayed). An atomic batch is stored as a whole when its last message (the commit) arrives, or not at
all: the server abandons a batch that is never committed, and refuses the whole of one it cannot store.

The protocol (docs/jetstream.md §1.1; nats-py 2.16 has only the header constants, docs/jetstream.md
§4.9): every message carries ``Nats-Batch-Id`` (new for each attempt) and ``Nats-Batch-Sequence``
(1..n), the last one ``Nats-Batch-Commit: 1`` as well. Only the commit is a request; its ack names the
last sequence and the count, and the batch holds the ``count`` sequences up to it, in order (it is
stored under the stream's lock). The stream must allow it (``allow_atomic`` in
``ops/streams/events.json``, set by the engine's start-up and ``dsctl admin streams``), and the server
must be 2.12 or newer: an older one ignores the batch headers and would store each message as it
arrives, so the version is checked before the first message goes out.

Duplicates. Each event's id is its ``Nats-Msg-Id``, and the server refuses a whole batch holding an id
it has seen within its duplicate window (err_code 10201) instead of answering "duplicate" per message.
The ids of the batch stored within that window are then looked up (on the batch's own subjects first,
then anywhere in the window for those not found there: a caller may reuse an id for another event),
answered as duplicates with their original sequence, as a single append would be, and the rest are sent
again as one new atomic batch. A retry after a lost commit ack ends the same way: the batch had been
stored, every id is found, and each is answered ``duplicate: true``.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Final

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import Header

from engine.runtime.retry import Deadline
from engine.store.event_store import AppendResult, EventStore, MalformedStoredEvent, retry_transient
from engine.store.jetstream_api import (
    ApiError,
    JetStreamUnavailable,
    error_for,
    stream_info,
    translate_errors,
)
from events.codec import encode
from events.envelope import Envelope
from events.errors import DsctlError, PermanentError
from events.subjects import EVENTS_STREAM, subject_for

#: the first server release with atomic batch publish
MIN_SERVER: Final = (2, 12, 0)
ATOMIC_DISABLED: Final = 10174  # "atomic publish is disabled": the stream lacks allow_atomic
INCOMPLETE: Final = 10176  # a message of the batch never arrived (a connection lost mid-batch)
DUPLICATE_ID: Final = 10201  # "atomic publish batch contains duplicate message id"
TOO_MANY_IN_FLIGHT: Final = 10210  # the stream's or server's limit on open batches (a 429)
#: rounds of "send, find the duplicates, send the rest" in one attempt (each round stores or finds at
#: least one id, or ends: a few are enough for a publisher racing another with the same ids)
MAX_ROUNDS: Final = 5
#: a duplicate looked up this much further back than the window (the server's clock is not ours)
LOOKUP_MARGIN: Final = 30.0
#: read only the batch's own subjects while there are at most this many (one filter each)
MAX_FILTERS: Final = 256


class BatchesUnavailable(DsctlError):
    """The server or the stream cannot store a batch atomically. Not transient within a request (no
    retry makes the stream allow it), not the caller's fault either: answered 503, naming the fix."""


class _Duplicates(Exception):
    """The server refused the batch: it holds an id already stored (10201)."""


class _CommitAck(msgspec.Struct, frozen=True):
    stream: str = ""
    seq: int = 0
    batch: str = ""
    count: int = 0
    error: ApiError | None = None


_ack_decoder = msgspec.json.Decoder(_CommitAck)


class AtomicBatches:
    """Appends ingest batches to ``stream`` atomically on ``nc``; ``store`` (the same stream) is read to
    find the ids the server reports as duplicates."""

    def __init__(
        self,
        nc: Client,
        store: EventStore,
        *,
        stream: str = EVENTS_STREAM,
        timeout: float = 5.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._nc = nc
        self._store = store
        self._stream = stream
        self._timeout = timeout
        self._clock = clock
        self._window: float | None = None

    async def append(self, envelopes: Sequence[Envelope], deadline: Deadline) -> list[AppendResult]:
        """Every envelope stored (or found stored) within ``deadline``, in order, or none of those not
        stored before: transient failures are retried with a new batch until the deadline."""
        results: list[AppendResult | None] = [None] * len(envelopes)

        async def attempt() -> list[AppendResult]:
            for _ in range(MAX_ROUNDS):
                todo = [i for i, r in enumerate(results) if r is None]
                if not todo:
                    break
                batch = [envelopes[i] for i in todo]
                try:
                    stored = await self._publish(batch)
                except _Duplicates:
                    found = await self._find_stored(batch)
                    if not found:
                        raise PermanentError(
                            f"{self._stream} refused a batch of {len(batch)} for holding an id it already "
                            "stored, yet none of its ids is stored within the duplicate window"
                        ) from None
                    for i in todo:
                        seq = found.get(envelopes[i].id)
                        if seq is not None:
                            results[i] = AppendResult(seq, duplicate=True)
                    continue
                for i, result in zip(todo, stored, strict=True):
                    results[i] = result
            done = [r for r in results if r is not None]
            if len(done) < len(results):
                raise PermanentError(
                    f"a batch of {len(envelopes)}: {len(envelopes) - len(done)} events still refused as "
                    f"duplicates after {MAX_ROUNDS} rounds (another publisher is sending the same ids)"
                )
            return done

        return await retry_transient(f"append a batch of {len(envelopes)}", attempt, deadline)

    def _check_server(self) -> None:
        version = self._nc.connected_server_version
        try:
            have = (version.major, version.minor, version.patch)
        except ValueError:  # not a semantic version: no reason to trust it with a batch
            have = (0, 0, 0)
        if have < MIN_SERVER:
            raise BatchesUnavailable(
                f"nats-server {version} cannot store a batch atomically (2.12 or newer can): batches "
                "are not accepted; send the events one at a time"
            )

    def _check_connected(self, context: str) -> None:
        # a publish made while nats-py reconnects is buffered and sent later, possibly after this
        # attempt gave up; a batch begun on one connection is abandoned by the server anyway
        if self._nc.is_reconnecting or not self._nc.is_connected:
            raise JetStreamUnavailable(f"{context}: not connected to NATS")

    async def _publish(self, batch: Sequence[Envelope]) -> list[AppendResult]:
        context = f"append a batch of {len(batch)} events to {self._stream} atomically"
        self._check_connected(context)
        self._check_server()
        batch_id = uuid.uuid4().hex
        last = len(batch)
        msg: Msg | None = None
        with translate_errors(context):
            for seq, envelope in enumerate(batch, start=1):
                # a fresh dict per message: nats-py adds keys to the one it is given
                headers = {
                    "Nats-Msg-Id": envelope.id,
                    Header.BATCH_ID: batch_id,
                    Header.BATCH_SEQUENCE: str(seq),
                }
                subject, data = subject_for(envelope.data), encode(envelope)
                self._check_connected(context)
                if seq < last:
                    await self._nc.publish(subject, data, headers=headers)
                else:
                    headers[Header.BATCH_COMMIT] = "1"
                    msg = await self._nc.request(subject, data, headers=headers, timeout=self._timeout)
        assert msg is not None  # a batch is never empty
        return self._results(context, msg, batch_id, last)

    def _results(self, context: str, msg: Msg, batch_id: str, count: int) -> list[AppendResult]:
        if msg.headers and msg.headers.get("Status") == "503":
            raise JetStreamUnavailable(
                f"{context}: no responders: no stream leader took it (is the cluster electing one, or is "
                f"the stream {self._stream} missing?)"
            )
        try:
            ack = _ack_decoder.decode(msg.data)
        except msgspec.DecodeError as err:
            raise PermanentError(f"{context}: unreadable publish ack {msg.data[:200]!r}") from err
        if ack.error is not None:
            code = ack.error.err_code
            if code == DUPLICATE_ID:
                raise _Duplicates()
            if code == ATOMIC_DISABLED:
                raise BatchesUnavailable(
                    f"the stream {self._stream} does not allow atomic batch publish (allow_atomic): the "
                    "engine's start-up or `dsctl admin streams` sets it; until then batches are not "
                    "accepted"
                )
            if code in (INCOMPLETE, TOO_MANY_IN_FLIGHT):
                raise JetStreamUnavailable(f"{context}: {ack.error.description} (err_code {code})")
            raise error_for(context, ack.error)
        if ack.batch != batch_id or ack.count != count:
            raise PermanentError(
                f"{context}: the server acknowledged batch {ack.batch!r} of {ack.count}, not {batch_id!r} "
                f"of {count}"
            )
        first = ack.seq - count + 1
        return [AppendResult(first + i) for i in range(count)]

    async def _duplicate_window(self) -> float:
        if self._window is None:
            with translate_errors(f"read the duplicate window of {self._stream}"):
                info = await stream_info(self._nc, self._stream, timeout=self._timeout)
            self._window = int(info.config.get("duplicate_window") or 0) / 1e9
        return self._window

    async def _find_stored(self, batch: Sequence[Envelope]) -> dict[str, int]:
        """id -> sequence, for the ids of ``batch`` stored within the duplicate window."""
        since = self._clock() - timedelta(seconds=await self._duplicate_window() + LOOKUP_MARGIN)
        wanted = {e.id for e in batch}
        subjects = sorted({subject_for(e.data) for e in batch})
        found = await self._scan(since, subjects if len(subjects) <= MAX_FILTERS else None, wanted)
        missing = wanted - found.keys()
        if missing and len(subjects) <= MAX_FILTERS:
            found |= await self._scan(since, None, missing)
        return found

    async def _scan(self, since: datetime, subjects: list[str] | None, wanted: set[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        start_seq: int | None = None
        for _ in range(1000):  # each pass starts past a malformed message: this only bounds a bad log
            events = (
                self._store.read(start_time=since, subjects=subjects)
                if start_seq is None
                else self._store.read(start_seq=start_seq, subjects=subjects)
            )
            try:
                async with contextlib.aclosing(events) as stream:
                    async for stored in stream:
                        if stored.envelope.id in wanted:
                            found.setdefault(stored.envelope.id, stored.seq)
                return found
            except MalformedStoredEvent as err:
                start_seq = err.seq + 1
        return found
