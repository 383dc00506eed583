"""Waiting between retries, and how long a caller may still wait.

Why one shared policy: a NATS leader election takes seconds, a server restart longer; a retry that stops
after a fixed few attempts drops work (a pod report, a command) exactly when faults are normal. Every
retry in the shell waits with ``Backoff`` (exponential, capped, jittered); the ones that serve a person
(the CLI, the ingest service) stop at a ``Deadline`` and say so, the ones that carry work the log has
promised (the report appender, the command relay) never stop while their process lives, and report a
long failure where a person will see it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable


class Backoff:
    """Exponential backoff with jitter: ``initial`` doubling per attempt up to ``cap``.

    Each delay is drawn from ``[d/2, d]`` ("equal jitter"): many executors that failed together during
    one election must not all come back at the same instant and hit the new leader in lockstep, yet the
    delay still grows, so a long outage costs a retry every few seconds rather than a busy loop.
    """

    def __init__(
        self, initial: float = 0.1, cap: float = 5.0, *, rand: Callable[[], float] = random.random
    ) -> None:
        self.initial = initial
        self.cap = cap
        self._rand = rand

    def delay(self, attempt: int) -> float:
        """The pause after failed attempt number ``attempt`` (1-based)."""
        # the exponent is clamped so that a days-long outage cannot overflow the float
        full: float = min(self.cap, self.initial * 2.0 ** min(max(attempt - 1, 0), 30))
        return full / 2 + self._rand() * full / 2


class Deadline:
    """The time a caller can still wait, shared by every step of one operation (read, then append)."""

    def __init__(self, seconds: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._end = clock() + seconds

    def remaining(self) -> float:
        return max(0.0, self._end - self._clock())
