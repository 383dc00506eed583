"""Exponential backoff with jitter, for the retries that never give up while their process lives.

Why one shared policy: a NATS leader election takes seconds, a server restart longer; a retry that
stops after a fixed few attempts drops work (a pod report, a command) exactly when faults are normal.
Everything that retries "until it works" waits ``initial * factor**n`` capped at ``cap``, with full
jitter so a fleet of executors does not retry in lockstep, and says how long it has been failing so
the caller can report an outage to a person (a log line at error level, a metric).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable


class Backoff:
    def __init__(
        self,
        *,
        initial: float = 0.1,
        cap: float = 5.0,
        factor: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.initial = initial
        self.cap = cap
        self.factor = factor
        self._clock = clock
        self._rng = rng or random.Random()
        self.attempts = 0
        self.failing_since: float | None = None

    def failed(self) -> float:
        """Record a failure; the seconds to wait before the next attempt."""
        if self.failing_since is None:
            self.failing_since = self._clock()
        ceiling = min(self.cap, self.initial * self.factor**self.attempts)
        self.attempts += 1
        # "equal jitter": at least half the step, so retries still spread out but never spin
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def succeeded(self) -> None:
        self.attempts = 0
        self.failing_since = None

    @property
    def failing_for(self) -> float:
        """Seconds since the first failure of the current run of failures (0 when healthy)."""
        return 0.0 if self.failing_since is None else self._clock() - self.failing_since
