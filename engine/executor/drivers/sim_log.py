"""What ``dsctl logs`` shows of a simulated pod: its lifecycle, one timestamped line per step (started,
ready, stopping, stopped, failed, exited), kept in memory by the executor that ran it.

Bounded, because a fleet simulates thousands of pods: at most ``MAX_LINES`` lines per pod (a cursor is
the line's number in the pod's whole life, so dropping the oldest never shifts a follower), and the
logs of at most ``MAX_GONE`` pods that are gone (the oldest forgotten first). A restarted executor has no
lines of the pods it took over: it says so in a line of its own instead of showing nothing.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from datetime import datetime

from engine.executor.drivers.base import LocalPod, LogRead

MAX_LINES = 100
MAX_GONE = 1000


#: the last second formatted and its text: a fleet stamps thousands of lines a second, and
#: ``strftime`` per line was a visible share of a convergence's CPU (docs/benchmarks.md)
_last_second: list[tuple[int, str]] = [(-1, "")]


def stamp(now: datetime | None = None) -> str:
    """RFC 3339 in UTC with milliseconds, as the lines begin."""
    if now is not None:
        return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
    t = time.time()
    second = int(t)
    cached, prefix = _last_second[0]
    if cached != second:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second))
        _last_second[0] = (second, prefix)
    return f"{prefix}{int((t - second) * 1000):03d}Z"


class PodLines:
    """One pod's lines, the oldest dropped past ``MAX_LINES``."""

    __slots__ = ("dropped", "lines")

    def __init__(self) -> None:
        self.lines: list[str] = []  # a list, not a deque: a few lines cost 100 bytes, not 600
        self.dropped = 0

    @property
    def total(self) -> int:
        return self.dropped + len(self.lines)

    def add(self, line: str) -> None:
        self.lines.append(line)
        if len(self.lines) > MAX_LINES:
            del self.lines[0]
            self.dropped += 1

    def read(self, cursor: int | None, tail: int, limit: int) -> LogRead:
        if cursor is None:
            start = self.dropped if tail < 0 else max(self.dropped, self.total - tail)
        else:
            start = max(self.dropped, min(cursor, self.total))
        out: list[str] = []
        size = 0
        index = start
        while index < self.total:
            line = self.lines[index - self.dropped] + "\n"
            if out and size + len(line) > limit:
                break
            out.append(line)
            size += len(line)
            index += 1
        return LogRead(text="".join(out), cursor=index, more=index < self.total)


class SimLogBook:
    """Every simulated pod's lines, by ``namespace/name``."""

    def __init__(self) -> None:
        self._live: dict[str, PodLines] = {}
        self._gone: OrderedDict[str, PodLines] = OrderedDict()

    def begin(self, key: str, line: str) -> None:
        """A new pod of this name: its own log, whatever an earlier one left."""
        self._gone.pop(key, None)
        lines = PodLines()
        lines.add(f"{stamp()} {line}")
        self._live[key] = lines

    def knows(self, key: str) -> bool:
        return key in self._live

    def add(self, key: str, line: str) -> None:
        lines = self._live.get(key)
        if lines is None:
            lines = self._live[key] = PodLines()
        lines.add(f"{stamp()} {line}")

    def retire(self, key: str) -> None:
        """The pod is gone: its log is kept among the last ``MAX_GONE``."""
        lines = self._live.pop(key, None)
        if lines is None:
            return
        self._gone[key] = lines
        while len(self._gone) > MAX_GONE:
            self._gone.popitem(last=False)

    def read(
        self, key: str, *, cursor: int | None, tail: int, limit: int, pod: LocalPod | None
    ) -> LogRead | None:
        lines = self._live.get(key) or self._gone.get(key)
        if lines is None and pod is not None:
            # taken over from an earlier executor (restored from the log): the lines stayed with it
            ready = ", Ready" if pod.ready else ""
            self.add(
                key,
                f"this executor took the pod over as {pod.phase}{ready} (its earlier lines were kept by "
                "the executor before it)",
            )
            lines = self._live[key]
        if lines is None:
            return None
        return lines.read(cursor, tail, limit)
