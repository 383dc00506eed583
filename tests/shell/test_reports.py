"""Pod reports are never dropped: the executor's appender and the simulated driver against a real
nats-server that goes away and comes back."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import pytest

from engine.executor.drivers.base import LocalPod
from engine.executor.drivers.sim import SimDriver
from engine.executor.reports import BatchingAppender
from engine.runtime.retry import Backoff
from engine.store.jetstream_store import JetStreamEventStore
from engine.store.port import StoredEvent
from events.errors import PermanentError, TransientError
from events.k8s import PodTemplate, TemplateMetadata
from events.types import PodEvent, PodFailed, PodReady, PodRunning
from tests.conftest import TestServer
from tests.outage import cancel_all, down, until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

#: short pauses so the tests wait seconds, not the production 5 s cap
FAST = Backoff(initial=0.05, cap=0.5)


@pytest.fixture
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """What reached the loop's exception handler ("Task exception was never retrieved", "Future
    exception was never retrieved", errors in callbacks); the test fails if anything did."""
    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    try:
        yield seen
        gc.collect()  # the "never retrieved" reports are made when the task or future is collected
        await asyncio.sleep(0)
        assert not seen, [c.get("message") for c in seen]
    finally:
        loop.set_exception_handler(previous)


def running(i: int) -> PodRunning:
    return PodRunning(namespace="default", name=f"p-{i}", node="n1", command_id=f"c{i}")


async def stored(store: JetStreamEventStore) -> list[StoredEvent]:
    async with contextlib.aclosing(store.read()) as events:
        return [e async for e in events]


async def back(nats_server: TestServer, store: JetStreamEventStore) -> None:
    await nats_server.start()
    async with asyncio.timeout(15):
        while True:
            with contextlib.suppress(Exception):
                await store.last_seq()
                return
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def appender_on(store: JetStreamEventStore, **kwargs: Any) -> AsyncIterator[BatchingAppender]:
    appender = BatchingAppender(store, "executor/test", backoff=FAST, **kwargs)
    try:
        yield appender
    finally:
        await appender.close()


def report(appender: BatchingAppender, i: int) -> Awaitable[None]:
    return appender(running(i), event_id=f"r{i}", causation_id=f"c{i}")


async def test_reports_made_while_the_server_is_down_are_stored_once_when_it_is_back(
    nats_server: TestServer, nc: Any, streams: Any, loop_errors: list[dict[str, Any]]
) -> None:
    store = JetStreamEventStore(nc, timeout=1.0)
    async with appender_on(store, max_batch=16) as appender:
        await report(appender, 0)
        await down(nats_server, nc)
        callers = [asyncio.ensure_future(report(appender, i)) for i in range(1, 60)]
        try:
            await asyncio.sleep(4.0)  # longer than the old appender's whole retry budget (~3 s)
            assert not any(c.done() for c in callers)
            assert appender.pending == 59 and appender.failing_since is not None and appender.retries > 0
            await back(nats_server, store)
            async with asyncio.timeout(20):
                await asyncio.gather(*callers)
        finally:
            await cancel_all(callers)
        assert appender.pending == 0 and appender.failing_since is None and appender.stored == 60
    events = await stored(store)
    # every report exactly once, in the order the callers made them
    assert [e.envelope.id for e in events] == [f"r{i}" for i in range(60)]
    await store.close()


async def test_a_steady_stream_of_reports_survives_a_crash_mid_batch(
    nats_server: TestServer, nc: Any, streams: Any, loop_errors: list[dict[str, Any]]
) -> None:
    """Reports keep coming while the server is SIGKILLed with acks outstanding and restarted 3 s later:
    nothing is lost, nothing stored twice, every caller's await completes."""
    store = JetStreamEventStore(nc, timeout=1.0)
    async with appender_on(store, max_batch=64) as appender:

        async def driver(first: int) -> None:
            for i in range(first, first + 300, 3):
                await report(appender, i)

        drivers = [asyncio.ensure_future(driver(k)) for k in range(3)]
        try:
            await until("some reports stored", lambda: appender.stored >= 60)
            await nats_server.kill()
            await asyncio.sleep(3.0)
            await back(nats_server, store)
            async with asyncio.timeout(30):
                await asyncio.gather(*drivers)
        finally:
            await cancel_all(drivers)
    ids = [e.envelope.id for e in await stored(store)]
    assert sorted(ids) == sorted(f"r{i}" for i in range(300)) and len(ids) == 300
    for k in range(3):  # each driver's reports in its own order
        mine = [int(i[1:]) for i in ids if int(i[1:]) % 3 == k]
        assert mine == sorted(mine)
    await store.close()


async def test_a_full_queue_makes_the_next_caller_wait(
    nats_server: TestServer, nc: Any, streams: Any, loop_errors: list[dict[str, Any]]
) -> None:
    store = JetStreamEventStore(nc, timeout=1.0)
    async with appender_on(store, max_batch=2, max_pending=5) as appender:
        await down(nats_server, nc)
        callers = [asyncio.ensure_future(report(appender, i)) for i in range(7)]
        try:
            # the queue holds 5, the batch being retried 2: memory stops growing there
            await until("the queue to fill", lambda: appender.pending == 7)
            late = asyncio.ensure_future(report(appender, 7))
            callers.append(late)
            await asyncio.sleep(0.5)
            assert not late.done() and appender.pending == 7  # back-pressure: it waits for room
            await back(nats_server, store)
            async with asyncio.timeout(20):
                await asyncio.gather(*callers)
        finally:
            await cancel_all(callers)
    assert [e.envelope.id for e in await stored(store)] == [f"r{i}" for i in range(8)]
    await store.close()


async def test_a_refused_report_fails_only_its_own_caller(
    nc: Any, streams: Any, loop_errors: list[dict[str, Any]]
) -> None:
    store = JetStreamEventStore(nc, timeout=1.0)
    huge = PodFailed(namespace="default", name="p-big", node="n1", reason="x" * 2_000_000)
    async with appender_on(store) as appender:
        calls = [
            asyncio.ensure_future(report(appender, 1)),
            asyncio.ensure_future(appender(huge, event_id="big", causation_id="c")),
            asyncio.ensure_future(report(appender, 2)),
        ]
        async with asyncio.timeout(10):
            outcomes = await asyncio.gather(*calls, return_exceptions=True)
        assert outcomes[0] is None and outcomes[2] is None
        assert isinstance(outcomes[1], PermanentError)
        assert appender.refused == 1 and appender.pending == 0
    assert [e.envelope.id for e in await stored(store)] == ["r1", "r2"]
    await store.close()


async def test_closing_tells_waiting_callers(
    nats_server: TestServer, nc: Any, streams: Any, loop_errors: list[dict[str, Any]]
) -> None:
    store = JetStreamEventStore(nc, timeout=1.0)
    appender = BatchingAppender(store, "executor/test", backoff=FAST, max_batch=1, max_pending=1)
    await down(nats_server, nc)
    callers = [asyncio.ensure_future(report(appender, i)) for i in range(4)]
    await until("callers waiting", lambda: appender.pending == 2)
    await appender.close()
    outcomes = await asyncio.gather(*callers, return_exceptions=True)
    await nats_server.start()
    # the two taken from the queue, and the two that were waiting for room in it
    assert all(isinstance(o, TransientError) and "closed" in str(o) for o in outcomes), outcomes
    await store.close()


# --- the simulated driver ---------------------------------------------------------------------------


def sim_pod(annotations: dict[str, str] | None = None) -> LocalPod:
    return LocalPod(
        namespace="default", name="p-abcde", uid="u", node="n1", owner_uid="o", owner_name="ds",
        revision_hash="h", template=PodTemplate(metadata=TemplateMetadata(annotations=annotations or {})),
    )  # fmt: skip


class AppenderReporter:
    """The executor's reporter, minus the id scheme: report straight through the appender."""

    def __init__(self, appender: BatchingAppender) -> None:
        self.appender = appender

    async def report(self, event: PodEvent, *, causation_id: str = "") -> None:
        await self.appender(event, event_id=f"{event.TAG}-{event.name}", causation_id=causation_id)


async def test_a_sim_pod_reaches_ready_though_the_server_was_down_when_it_reported(
    nats_server: TestServer, nc: Any, streams: Any, loop_errors: list[dict[str, Any]]
) -> None:
    store = JetStreamEventStore(nc, timeout=1.0)
    driver = SimDriver()
    pod = sim_pod({"sim.dsctl.io/ready-after": "0.5"})
    async with appender_on(store) as appender:
        try:
            await down(nats_server, nc)
            await driver.resume(pod, "c1", AppenderReporter(appender))  # reports Running, then Ready
            await asyncio.sleep(4.0)
            assert pod.phase == "Pending" and appender.pending == 1  # Running is still being retried
            await back(nats_server, store)
            await until("the pod to be Ready", lambda: pod.ready, timeout=20)
        finally:
            await driver.close()
    assert [e.envelope.type for e in await stored(store)] == ["pod.running", "pod.ready"]
    await store.close()


class RefusingReporter:
    """Refuses the first report for good, as a store would a message it can never take."""

    def __init__(self) -> None:
        self.events: list[PodEvent] = []

    async def report(self, event: PodEvent, *, causation_id: str = "") -> None:
        if not self.events:
            self.events.append(event)
            raise PermanentError("refused")
        self.events.append(event)


async def test_a_refused_report_does_not_end_a_sim_pods_life(loop_errors: list[dict[str, Any]]) -> None:
    driver, reporter, pod = SimDriver(), RefusingReporter(), sim_pod()
    await driver.resume(pod, "c1", reporter)
    await until("the pod to be Ready", lambda: pod.ready)
    assert [e.TAG for e in reporter.events] == [PodRunning.TAG, PodReady.TAG]
    await driver.close()


# --- the backoff policy -------------------------------------------------------------------------------


@pytest.mark.parametrize("draw", [0.0, 0.5, 1.0])
def test_backoff_doubles_to_its_cap_with_jitter_in_the_upper_half(draw: float) -> None:
    backoff = Backoff(initial=0.1, cap=5.0, rand=lambda: draw)
    full = [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    for attempt, d in enumerate(full, start=1):
        assert backoff.delay(attempt) == pytest.approx(d / 2 + draw * d / 2)
    assert backoff.delay(100_000) == pytest.approx(2.5 + draw * 2.5)  # days of retrying: no overflow
