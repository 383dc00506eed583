"""``--dry-run=client``: the verb runs exactly as it would (every read, every check, the event it would
append built and encoded), but nothing reaches the log, and every line it prints ends in
`` (dry run)`` as kubectl's does.

It is done by handing the verb a store whose reads are the real store's and whose appends only encode
the event (what the real append does first, so an event the log could not take is still refused) and
answer as a store would. The verbs therefore need no dry-run branch of their own, and a dry run cannot
drift from the real thing (docs/architecture.md: the CLI reads the log through the store and appends
facts, nothing else).
"""

from __future__ import annotations

import io
from collections.abc import AsyncGenerator, Sequence
from datetime import datetime
from typing import TextIO

from engine.store.event_store import AppendResult, EventStore, StoredEvent
from events.codec import encode
from events.envelope import Envelope

SUFFIX = " (dry run)"


class DryRunStore:
    """An ``EventStore`` that reads through to ``store`` and appends nothing."""

    def __init__(self, store: EventStore) -> None:
        self._store = store
        #: what would have been appended, in order
        self.would_append: list[Envelope] = []

    async def append(
        self,
        envelope: Envelope,
        *,
        expected_last_subject_seq: int | None = None,
        expected_last_seq: int | None = None,
        expected_subject_filter: str | None = None,
    ) -> AppendResult:
        encode(envelope)
        self.would_append.append(envelope)
        return AppendResult(seq=await self._store.last_seq() + len(self.would_append))

    async def append_many(self, envelopes: Sequence[Envelope]) -> list[AppendResult]:
        return [await self.append(e) for e in envelopes]

    def read(
        self,
        *,
        start_seq: int | None = None,
        start_time: datetime | None = None,
        end_seq: int | None = None,
        subjects: Sequence[str] | None = None,
    ) -> AsyncGenerator[StoredEvent, None]:
        return self._store.read(
            start_seq=start_seq, start_time=start_time, end_seq=end_seq, subjects=subjects
        )

    def follow(
        self, from_seq: int = 1, subjects: Sequence[str] | None = None
    ) -> AsyncGenerator[StoredEvent, None]:
        return self._store.follow(from_seq, subjects)

    async def last_seq(self) -> int:
        return await self._store.last_seq()

    async def get(self, seq: int) -> StoredEvent:
        return await self._store.get(seq)

    async def close(self) -> None:
        """The real store is the caller's to close."""


class DryRunOut(io.TextIOBase):
    """Writes each complete line to ``out`` with `` (dry run)`` before its newline."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self._out.write(f"{line}{SUFFIX}\n" if line else "\n")
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self._out.write(self._pending + SUFFIX)
            self._pending = ""
        self._out.flush()
