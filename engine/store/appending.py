"""Riding out an unavailable store: retry a transient failure until the caller's deadline.

A restart of the server or a stream leader election in a cluster makes the store unavailable for a few
seconds; a one-shot caller (a CLI command, an ingest request) waits that out within its own deadline
rather than failing at once or waiting forever. ``retry_transient`` retries a transient failure with
``Backoff`` until the caller's ``Deadline``, then raises ``DeadlineExceeded`` naming how long it waited
and the last failure. ``append_within`` does that for one append and also settles the one ambiguous
case: an attempt whose ack was lost may have been stored, and its retry, still carrying the old expected
sequence, is then refused as a conflict (expected-sequence checks run before the duplicate check, see
``port.py``); so after a conflict that follows a failed attempt it looks for its own event id on the
subject before reporting the conflict.

Long-lived writers do not use these: the executor's report appender retries without a deadline
(``engine/executor/reports.py``), the relay likewise.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog

from engine.runtime.retry import Backoff, Deadline
from engine.store.jetstream_api import JetStreamUnavailable
from engine.store.port import AppendResult, EventStore, MalformedStoredEvent
from events.envelope import Envelope
from events.errors import ConflictError, DeadlineExceeded, TransientError
from events.subjects import subject_for

log = structlog.get_logger("dsctl.store")

T = TypeVar("T")

#: what a one-shot caller (the CLI) waits for the store by default: longer than a stream leader election
#: in a 3-node cluster (measured 2-6 s) and a server restart, short enough that a person is told soon
DEFAULT_DEADLINE = 15.0


def unavailable_message(seconds: float, last: BaseException | None) -> str:
    """What a person reads when the store stayed away: how long we waited, the last failure, and the
    likely reason. Kept in one place so the CLI and the ingest service say the same thing."""
    cause = str(last) if last is not None else "no answer"
    hint = "" if "electing" in cause else " (is the NATS server up, or the cluster electing a stream leader?)"
    return f"the event store did not answer within {seconds:g}s: {cause}{hint}"


async def retry_transient(
    what: str,
    operation: Callable[[], Awaitable[T]],
    deadline: Deadline,
    *,
    backoff: Backoff | None = None,
) -> T:
    """Run ``operation`` until it succeeds, retrying ``TransientError`` with backoff while ``deadline``
    lasts; then raise ``DeadlineExceeded`` (chained to the last failure). Every other error is the
    caller's to handle, at once: a conflict or a refusal does not get better by waiting.

    Each attempt is itself cut off at the deadline, so the caller never waits past it (an attempt cut
    off mid-append may still have been stored: the message says so through the last failure)."""
    backoff = backoff or Backoff()
    last: TransientError | None = None
    for attempt in range(1, 1_000_000):  # bounded by the deadline long before the count
        remaining = deadline.remaining()
        if remaining <= 0:
            break
        try:
            async with asyncio.timeout(remaining) as window:
                return await operation()
        except TransientError as err:
            last = err
        except TimeoutError as err:
            if not window.expired():
                raise
            earlier = f" (the attempt before: {last})" if last is not None else ""
            last = JetStreamUnavailable(f"{what}: no answer before the deadline{earlier}")
            last.__cause__ = err
            break
        pause = min(backoff.delay(attempt), deadline.remaining())
        log.warning(
            "store.retry",
            what=what,
            attempt=attempt,
            error=str(last),
            retry_in=round(pause, 2),
            remaining=round(deadline.remaining(), 2),
        )
        if pause > 0:
            await asyncio.sleep(pause)
    raise DeadlineExceeded(unavailable_message(deadline.seconds, last)) from last


async def find_appended(store: EventStore, envelope: Envelope, *, after: int) -> AppendResult | None:
    """The sequence at which ``envelope`` (by id) was stored after sequence ``after``, if it was: how an
    append whose ack was lost finds out that it did land. Reads only the event's own subject."""
    start = after + 1
    for _ in range(1000):  # each pass starts past a malformed message, so this only bounds a bad log
        try:
            async with contextlib.aclosing(
                store.read(start_seq=start, subjects=[subject_for(envelope.data)])
            ) as events:
                async for stored in events:
                    if stored.envelope.id == envelope.id:
                        return AppendResult(stored.seq, duplicate=True)
            return None
        except MalformedStoredEvent as err:
            start = err.seq + 1
    return None


async def append_within(
    store: EventStore,
    envelope: Envelope,
    deadline: Deadline,
    *,
    expected_last_subject_seq: int | None = None,
    expected_last_seq: int | None = None,
    expected_subject_filter: str | None = None,
) -> AppendResult:
    """``store.append`` retried through transient failures until ``deadline`` (see ``retry_transient``).

    A ``ConflictError`` right after a failed attempt may be that attempt's own success (stored, ack
    lost, the retry refused for its now-stale expected sequence): the event's own subject is searched
    for its id, and only if it is absent does the conflict stand."""
    expected = expected_last_subject_seq if expected_last_subject_seq is not None else expected_last_seq
    tried = False

    async def attempt() -> AppendResult:
        nonlocal tried
        try:
            return await store.append(
                envelope,
                expected_last_subject_seq=expected_last_subject_seq,
                expected_last_seq=expected_last_seq,
                expected_subject_filter=expected_subject_filter,
            )
        except TransientError:
            tried = True
            raise
        except ConflictError:
            if not tried or expected is None:
                raise
            found = await find_appended(store, envelope, after=expected)
            if found is None:
                raise
            log.info("store.append_found_after_lost_ack", id=envelope.id, seq=found.seq)
            return found

    return await retry_transient(f"append {envelope.type} {envelope.id}", attempt, deadline)
