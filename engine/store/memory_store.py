"""An in-memory ``EventStore`` with the JetStream store's semantics, for fast tests and replays.

It keeps encoded bytes, not envelopes, so reads decode exactly as they would from the server (and a
malformed message surfaces the same way). Mirrored semantics: gap-free sequences from 1; dedupe by id
within a window measured from the first sighting (not refreshed by repeats, nats-server #7302);
expected-sequence checks before the dedupe check; NATS subject wildcards (``*`` one token, ``>`` one or
more trailing tokens); the store's clock is strictly increasing, like the server's.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncGenerator, Callable, Sequence
from datetime import UTC, datetime, timedelta

import msgspec

from engine.store.port import AppendResult, StoredEvent, decode_stored
from events.codec import encode
from events.envelope import Envelope
from events.errors import ConflictError, NotFound
from events.subjects import subject_for


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` matches one token, a final ``>`` matches one or more tokens."""
    ptoks = pattern.split(".")
    stoks = subject.split(".")
    for i, p in enumerate(ptoks):
        if p == ">":
            return len(stoks) > i
        if i >= len(stoks) or (p != "*" and p != stoks[i]):
            return False
    return len(ptoks) == len(stoks)


class _Stored(msgspec.Struct, frozen=True, gc=False):
    seq: int
    subject: str
    time: datetime
    data: bytes


def _utc_now() -> datetime:
    return datetime.now(UTC)


class MemoryEventStore:
    def __init__(
        self,
        *,
        duplicate_window: float = 120.0,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._log: list[_Stored] = []
        self._last_by_subject: dict[str, int] = {}
        self._ids: dict[str, tuple[int, datetime]] = {}
        self._window = timedelta(seconds=duplicate_window)
        self._clock = clock
        self._changed = asyncio.Condition()

    def _now(self) -> datetime:
        now = self._clock()
        if self._log and now <= self._log[-1].time:
            now = self._log[-1].time + timedelta(microseconds=1)
        return now

    def _store(
        self,
        subject: str,
        data: bytes,
        msg_id: str | None,
        expected_last_subject_seq: int | None = None,
        expected_last_seq: int | None = None,
        expected_subject_filter: str | None = None,
    ) -> AppendResult:
        if expected_last_seq is not None and expected_last_seq != len(self._log):
            raise ConflictError(f"append to {subject}: wrong last sequence: {len(self._log)}")
        if expected_last_subject_seq is not None:
            if expected_subject_filter is None:
                have = self._last_by_subject.get(subject, 0)
            else:  # the last sequence on any subject the filter matches (server 2.11+ semantics)
                have = max(
                    (
                        seq
                        for subj, seq in self._last_by_subject.items()
                        if subject_matches(expected_subject_filter, subj)
                    ),
                    default=0,
                )
            if expected_last_subject_seq != have:
                raise ConflictError(f"append to {subject}: wrong last sequence: {have}")
        now = self._now()
        if msg_id:
            seen = self._ids.get(msg_id)
            if seen is not None and now - seen[1] < self._window:
                return AppendResult(seen[0], duplicate=True)
        seq = len(self._log) + 1
        self._log.append(_Stored(seq, subject, now, data))
        self._last_by_subject[subject] = seq
        if msg_id:
            self._ids[msg_id] = (seq, now)
        return AppendResult(seq)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def append(
        self,
        envelope: Envelope,
        *,
        expected_last_subject_seq: int | None = None,
        expected_last_seq: int | None = None,
        expected_subject_filter: str | None = None,
    ) -> AppendResult:
        result = self._store(
            subject_for(envelope.data),
            encode(envelope),
            envelope.id,
            expected_last_subject_seq,
            expected_last_seq,
            expected_subject_filter,
        )
        await self._notify()
        return result

    async def append_many(self, envelopes: Sequence[Envelope]) -> list[AppendResult]:
        results = [self._store(subject_for(e.data), encode(e), e.id) for e in envelopes]
        await self._notify()
        return results

    async def append_raw(self, subject: str, data: bytes, *, msg_id: str | None = None) -> AppendResult:
        result = self._store(subject, data, msg_id)
        await self._notify()
        return result

    async def last_seq(self) -> int:
        return len(self._log)

    async def get(self, seq: int) -> StoredEvent:
        if not 1 <= seq <= len(self._log):
            raise NotFound(f"no message {seq}")
        s = self._log[seq - 1]
        return decode_stored(s.seq, s.subject, s.time, s.data)

    def _first_index(self, start_seq: int | None, start_time: datetime | None) -> int:
        if start_time is not None:
            for i, s in enumerate(self._log):
                if s.time >= start_time:
                    return i
            return len(self._log)
        return max((start_seq or 1) - 1, 0)

    async def read(
        self,
        *,
        start_seq: int | None = None,
        start_time: datetime | None = None,
        end_seq: int | None = None,
        subjects: Sequence[str] | None = None,
    ) -> AsyncGenerator[StoredEvent, None]:
        stop = len(self._log) if end_seq is None else min(end_seq, len(self._log))
        filters = list(subjects or ())
        index = self._first_index(start_seq, start_time)
        while index < stop:
            s = self._log[index]
            index += 1
            if filters and not any(subject_matches(f, s.subject) for f in filters):
                continue
            yield decode_stored(s.seq, s.subject, s.time, s.data)
            if index % 1024 == 0:
                await asyncio.sleep(0)  # a long replay must not starve the loop

    async def follow(
        self, from_seq: int = 1, subjects: Sequence[str] | None = None
    ) -> AsyncGenerator[StoredEvent, None]:
        filters = list(subjects or ())
        index = max(from_seq, 1) - 1
        while True:
            while index < len(self._log):
                s = self._log[index]
                index += 1
                if filters and not any(subject_matches(f, s.subject) for f in filters):
                    continue
                yield decode_stored(s.seq, s.subject, s.time, s.data)
            async with self._changed:
                await self._changed.wait_for(functools.partial(self._longer_than, index))

    def _longer_than(self, n: int) -> bool:
        return len(self._log) > n

    async def close(self) -> None:
        return None
