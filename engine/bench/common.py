"""What every scenario shares: the result row, targets, a private nats-server, raw baselines.

A row is one figure next to the baseline measured in the same run. ``ratio`` is always
``value / baseline``: for a rate (events/s) higher is better, for a time (s, ms) or a size (MB) it says
how many times the raw operation the engine needs. A target applies to the value or to the ratio.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from nats.aio.client import Client
from nats.aio.msg import Msg

from engine.reconciler.engine import prepare
from engine.store.connection import close, connect
from engine.store.embedded import EmbeddedNats
from engine.store.jetstream_api import api_request
from engine.store.settings import NatsSettings
from engine.store.streams import EVENTS_STREAM, StreamDefinition, load_definitions

RAW_STREAM = "BENCH_RAW"
RAW_PREFIX = "bench."
#: where the fan-out bench asks its worker processes (engine/bench/fanout_worker.py) for figures
FANOUT_CONTROL = "_bench.fanout"
#: where the soak driver asks its engine process (engine/bench/soakproc.py) for figures
SOAK_CONTROL = "_bench.soak"

Op = Literal[">=", "<="]


@dataclass(frozen=True)
class Target:
    """``value`` (or ``ratio``, with ``on="ratio"``) compared with ``threshold``."""

    op: Op
    threshold: float
    on: Literal["value", "ratio"] = "value"
    label: str = ""

    def met(self, value: float | None, ratio: float | None) -> bool | None:
        x = ratio if self.on == "ratio" else value
        if x is None:
            return None
        return x >= self.threshold if self.op == ">=" else x <= self.threshold

    def describe(self, unit: str) -> str:
        if self.label:
            return self.label
        if self.on == "ratio":
            return f"ratio {self.op} {self.threshold:g}"
        return f"{self.op} {fmt(self.threshold, unit)}"


@dataclass
class Row:
    scenario: str
    metric: str
    value: float | None
    unit: str
    baseline: float | None = None
    baseline_unit: str = ""
    baseline_label: str = ""
    target: Target | None = None
    #: set when the target is judged by the scenario itself (e.g. a growth curve)
    verdict: bool | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    #: data behind a chart (``dsctl bench --plot``): ``{"kind": ..., ...}``, read by engine/bench/plot.py
    series: dict[str, Any] | None = None

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.baseline:
            return None
        return self.value / self.baseline

    @property
    def met(self) -> bool | None:
        if self.verdict is not None:
            return self.verdict
        return None if self.target is None else self.target.met(self.value, self.ratio)

    def as_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "metric": self.metric,
            "value": self.value,
            "unit": self.unit,
            "baseline": self.baseline,
            "baseline_unit": self.baseline_unit or self.unit,
            "baseline_label": self.baseline_label,
            "ratio": self.ratio,
            "target": None if self.target is None else self.target.describe(self.unit),
            "met": self.met,
            "note": self.note,
            **({"extra": self.extra} if self.extra else {}),
            **({"series": self.series} if self.series is not None else {}),
        }


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit in ("ev/s", "ops/s", "req/s"):
        return f"{value:,.0f} {unit}"
    if unit == "s":
        return f"{value:.2f} s"
    if unit == "ms":
        return f"{value:.3f} ms" if value < 1 else f"{value:.1f} ms"
    if unit == "MB":
        return f"{value:.0f} MB"
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "%":
        return f"{value:.1f} %"
    return f"{value:g} {unit}".strip()


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


@contextlib.asynccontextmanager
async def nats_server(*, lease_ttl: float = 2.0) -> AsyncIterator[tuple[EmbeddedNats, Client]]:
    """A private nats-server (temp store, free port) with the dsctl streams applied, and a connection."""
    async with EmbeddedNats(ready_timeout=15) as server:
        nc = await connect(NatsSettings(servers=[server.url], name="dsctl-bench"))
        try:
            await prepare(nc, lease_ttl=lease_ttl)
            yield server, nc
        finally:
            await close(nc)


async def create_raw_stream(nc: Client) -> None:
    """``BENCH_RAW``: the configuration of ``DSE_EVENTS`` on subjects ``bench.>``, for raw baselines."""
    events = next(
        d for d in load_definitions() if isinstance(d, StreamDefinition) and d.name == EVENTS_STREAM
    )
    config = {**events.config, "name": RAW_STREAM, "subjects": [RAW_PREFIX + ">"]}
    await api_request(nc, f"STREAM.CREATE.{RAW_STREAM}", config)


async def raw_publish(nc: Client, items: Sequence[tuple[str, bytes, str]]) -> float:
    """nats-py ``publish_async`` of (subject, payload, msg id) with every ack awaited; seconds taken."""
    js = nc.jetstream()
    start = time.perf_counter()
    futures = [await js.publish_async(s, p, headers={"Nats-Msg-Id": i}) for s, p, i in items]
    await asyncio.gather(*futures)
    return time.perf_counter() - start


async def raw_read(nc: Client, stream: str, count: int, *, timeout: float = 300.0) -> tuple[float, int]:
    """nats-py's ordered push consumer over the whole stream, bytes only: (seconds, bytes)."""
    js = nc.jetstream()
    done = asyncio.Event()
    seen = 0
    size = 0

    async def on_msg(msg: Msg) -> None:
        nonlocal seen, size
        seen += 1
        size += len(msg.data)
        if seen >= count:
            done.set()

    start = time.perf_counter()
    sub = await js.subscribe(
        ">", stream=stream, cb=on_msg, ordered_consumer=True, pending_msgs_limit=-1, pending_bytes_limit=-1
    )
    try:
        async with asyncio.timeout(timeout):
            await done.wait()
    finally:
        await sub.unsubscribe()
    return time.perf_counter() - start, size


async def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(step)
    return True


async def timed(awaitable: Awaitable[Any]) -> float:
    start = time.perf_counter()
    await awaitable
    return time.perf_counter() - start


def vm_status(pid: int | str = "self") -> dict[str, int]:
    """VmHWM / VmRSS (kB) from /proc/<pid>/status."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[key] = int(rest.split()[0])
    return out


def ready_curve(ready_at: Sequence[float], start: float, pods: int, bound: float) -> dict[str, Any]:
    """The ``convergence`` chart's series (engine/bench/plot.py): pods Ready against seconds since
    ``start``, thinned to about a thousand points, and ``bound``, the reports-only time."""
    times = sorted(t - start for t in ready_at)
    step = max(1, len(times) // 1000)
    keep = [i for i in range(len(times)) if i % step == 0 or i == len(times) - 1]
    return {
        "kind": "convergence",
        "pods": pods,
        "bound_s": bound,
        "t_s": [round(times[i], 4) for i in keep],
        "ready": [i + 1 for i in keep],
    }
