"""A queue of keys, not events (as controller-runtime's): sequential per key, parallel across keys.

- A key added while queued is not queued twice; a key added while being processed is queued again
  once, after the current run ends (so no change is lost and no key runs twice at once).
- ``add_after`` schedules a key for later (requeue timers: minReadySeconds, failed-pod backoff,
  in-flight timeouts); an earlier schedule of the same key wins, and an immediate ``add`` beats both.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
from collections import deque
from collections.abc import Callable

Clock = Callable[[], float]


class KeyQueue:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._ready: deque[str] = deque()
        self._queued: set[str] = set()
        self._active: set[str] = set()
        #: added again while active, with whether any of those adds was urgent (kept for the re-add)
        self._dirty: dict[str, bool] = {}
        self._timers: list[tuple[float, str]] = []
        self._due: dict[str, float] = {}
        self._wakeup = asyncio.Event()
        self._closed = False

    def __len__(self) -> int:
        return len(self._ready)

    @property
    def active(self) -> frozenset[str]:
        return frozenset(self._active)

    def add(self, key: str, *, urgent: bool = False) -> None:
        """Queue ``key``; ``urgent`` puts it before keys already waiting (a node waiting for its pods
        should not queue behind fleet-wide status refreshes)."""
        if self._closed:
            return
        self._due.pop(key, None)
        if key in self._active:
            self._dirty[key] = self._dirty.get(key, False) or urgent
            return
        if key not in self._queued:
            self._queued.add(key)
            if urgent:
                self._ready.appendleft(key)
            else:
                self._ready.append(key)
            self._wakeup.set()
        elif urgent and self._ready and self._ready[0] != key:
            self._ready.remove(key)
            self._ready.appendleft(key)

    def add_after(self, key: str, delay: float) -> None:
        if self._closed:
            return
        if delay <= 0:
            self.add(key)
            return
        at = self._clock() + delay
        current = self._due.get(key)
        if current is not None and current <= at:
            return
        self._due[key] = at
        heapq.heappush(self._timers, (at, key))
        self._wakeup.set()

    def cancel_timer(self, key: str) -> None:
        """Forget ``key``'s timer (a full reconcile supersedes it and sets its own requeue)."""
        self._due.pop(key, None)

    def scheduled(self, key: str) -> float | None:
        """When ``key`` is due by timer, if it is."""
        return self._due.get(key)

    def _promote_due(self) -> float | None:
        """Move due timers to the ready list; return seconds until the next timer, if any."""
        now = self._clock()
        while self._timers:
            at, key = self._timers[0]
            if self._due.get(key) != at:  # superseded or cancelled
                heapq.heappop(self._timers)
                continue
            if at > now:
                return at - now
            heapq.heappop(self._timers)
            del self._due[key]
            self.add(key)
        return None

    async def get(self) -> str:
        """Wait for a key; the caller must call ``done(key)`` when finished with it."""
        while True:
            if self._closed:
                raise QueueClosed
            wait = self._promote_due()
            if self._ready:
                key = self._ready.popleft()
                self._queued.discard(key)
                self._active.add(key)
                return key
            self._wakeup.clear()
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that races
            # with the event being set, and a worker that cannot be cancelled hangs every shutdown
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wakeup.wait()

    def done(self, key: str) -> None:
        self._active.discard(key)
        if key in self._dirty:
            self.add(key, urgent=self._dirty.pop(key))

    def close(self) -> None:
        self._closed = True
        self._wakeup.set()


class QueueClosed(Exception):
    """Raised by ``get`` once the queue is closed (workers exit on it)."""
