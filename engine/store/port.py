"""The event store port: what the projection runner, the controller, the executors and the CLI use.

Two implementations pass one contract suite (``tests/contract``): ``JetStreamEventStore``
(``jetstream_store.py``) on the server, and ``MemoryEventStore`` (``memory_store.py``) mirroring its
semantics for fast tests and replays. The semantics, taken from the server:

- the stream sequence is the store's clock: gap-free, starting at 1;
- ``Nats-Msg-Id`` = ``envelope.id``: a second append of the same id inside the duplicate window is not
  stored and returns the *original* sequence with ``duplicate=True``;
- expected-sequence checks run *before* the duplicate check (verified on 2.15.1): a retry that carries
  a now-stale expectation gets ``ConflictError``, not a duplicate ack, so after a conflict re-read and
  look for your own event id before deciding (``appending.append_within`` does);
- a payload that does not decode never ends a read silently: it raises ``MalformedStoredEvent`` with its
  sequence, so the caller can record it and resume at ``seq + 1``;
- a store pinned to its stream (``IdentifiedStore``) raises ``LogIntegrityError`` when the stream it
  reads is gone or was replaced, never reads on from another one.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

import msgspec

from events.codec import decode
from events.envelope import Envelope
from events.errors import DsctlError, MalformedEvent, PermanentError


class AppendResult(msgspec.Struct, frozen=True):
    seq: int
    duplicate: bool = False


class StoredEvent(msgspec.Struct, frozen=True):
    seq: int
    subject: str
    #: when the store accepted it (the server's clock), not when it happened (``envelope.occurred_at``)
    time: datetime
    envelope: Envelope


class MalformedStoredEvent(MalformedEvent):
    """A stored message that does not decode. ``seq`` says where; resume a read at ``seq + 1``."""

    def __init__(self, seq: int, subject: str, cause: MalformedEvent) -> None:
        super().__init__(f"stream sequence {seq} ({subject}): {cause.reason}", cause.field)
        self.seq = seq
        self.subject = subject


class LogIntegrityError(PermanentError):
    """The event log is not the one this reader was folding: the stream was deleted or replaced, lost
    messages (a gap, a first sequence that moved, a last sequence that went back), or ends before a
    snapshot already folded from it. Nothing read from it may be acted on (docs/design.md, "Tamper
    evidence"). ``kind`` names which, for logs and metrics."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


class StreamIdentity(msgspec.Struct, frozen=True):
    """What tells one incarnation of a stream from another: the server stamps ``created`` when the
    stream is made (kept across restarts; a stream deleted and made again under the same name has a
    new one). With the sequences, what a watcher compares over time."""

    stream: str
    created: str
    first_seq: int
    last_seq: int


@runtime_checkable
class IdentifiedStore(Protocol):
    """A store that can say which stream incarnation it reads and be held to it (``JetStreamEventStore``;
    the in-memory store cannot be replaced under its reader)."""

    async def identity(self) -> StreamIdentity:
        """The stream as it is now; raises ``LogIntegrityError`` once pinned and it is gone or another."""
        ...

    async def pin(self) -> StreamIdentity:
        """Hold every later read to the incarnation there now (see ``identity``)."""
        ...


@runtime_checkable
class EventStore(Protocol):
    """The event log as the engine sees it. ``read`` and ``follow`` return async generators: close them
    (``contextlib.aclosing``) when leaving early."""

    async def append(
        self,
        envelope: Envelope,
        *,
        expected_last_subject_seq: int | None = None,
        expected_last_seq: int | None = None,
        expected_subject_filter: str | None = None,
    ) -> AppendResult:
        """Append one event. ``expected_last_subject_seq`` checks the last sequence on the event's own
        subject, or, with ``expected_subject_filter`` (a wildcard subject), on every subject it matches
        (``Nats-Expected-Last-Subject-Sequence-Subject``, server 2.11+): how one writer fences a whole
        subject tree. A mismatch raises ConflictError."""
        ...

    async def append_many(self, envelopes: Sequence[Envelope]) -> list[AppendResult]: ...

    def read(
        self,
        *,
        start_seq: int | None = None,
        start_time: datetime | None = None,
        end_seq: int | None = None,
        subjects: Sequence[str] | None = None,
    ) -> AsyncGenerator[StoredEvent, None]: ...

    def follow(
        self, from_seq: int = 1, subjects: Sequence[str] | None = None
    ) -> AsyncGenerator[StoredEvent, None]: ...

    async def last_seq(self) -> int: ...

    async def get(self, seq: int) -> StoredEvent: ...

    async def close(self) -> None: ...


@runtime_checkable
class SettlingStore(Protocol):
    """A store that says, per message of a bulk append, whether it was stored (``JetStreamEventStore``):
    what lets a retrying writer re-send only the messages that were not."""

    async def append_many_settled(self, envelopes: Sequence[Envelope]) -> list[AppendResult | DsctlError]: ...


def decode_stored(seq: int, subject: str, time: datetime, data: bytes) -> StoredEvent:
    """A stored message as an event; one that does not decode raises ``MalformedStoredEvent`` naming
    where it is, the same way from both stores (each keeps bytes and decodes on read)."""
    try:
        return StoredEvent(seq, subject, time, decode(data))
    except MalformedEvent as err:
        raise MalformedStoredEvent(seq, subject, err) from err
