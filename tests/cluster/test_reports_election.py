"""Issue 9, item 2 on a real 3-node cluster: pod reports appended while the ``DSE_EVENTS`` leader is
SIGKILLed and a new one is elected (seconds, longer than the old appender's ~3 s retry budget) are all
stored, each exactly once, and every caller's await completes, with no task exception left unread."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import pytest

from engine.executor.reports import BatchingAppender
from engine.runtime.retry import Backoff
from engine.store.embedded_cluster import EmbeddedCluster
from engine.store.jetstream_store import JetStreamEventStore
from engine.store.streams import EVENTS_STREAM
from events.errors import TransientError
from events.types import PodRunning
from tests.shell.test_reports import loop_errors  # noqa: F401  (a fixture, used by name)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(150)]

DRIVERS = 4
PER_DRIVER = 120


async def all_ids(store: JetStreamEventStore) -> list[str]:
    async with asyncio.timeout(30):
        while True:
            try:
                async with contextlib.aclosing(store.read()) as events:
                    return [e.envelope.id async for e in events]
            except TransientError:
                await asyncio.sleep(0.2)


async def test_reports_made_across_a_stream_leader_kill_are_all_stored_once(
    nats_cluster: EmbeddedCluster,
    cluster_nc: Any,
    r3_streams: Any,
    loop_errors: list[dict[str, Any]],  # noqa: F811
) -> None:
    store = JetStreamEventStore(cluster_nc, timeout=1.0)
    appender = BatchingAppender(store, "executor/cluster-test", max_batch=32, backoff=Backoff(0.05, 1.0))

    async def driver(k: int) -> None:
        # like a fleet: each "pod" reports in turn, and waits for its report before the next
        for i in range(k, DRIVERS * PER_DRIVER, DRIVERS):
            event = PodRunning(namespace="default", name=f"p-{i}", node=f"n{k}", command_id=f"c{i}")
            await appender(event, event_id=f"r{i}", causation_id=f"c{i}")
            await asyncio.sleep(0.01)

    drivers = [asyncio.ensure_future(driver(k)) for k in range(DRIVERS)]
    try:
        async with asyncio.timeout(30):
            while appender.stored < 40:
                await asyncio.sleep(0.02)
        victim = await nats_cluster.stream_leader(EVENTS_STREAM, nc=cluster_nc)
        assert victim is not None
        killed_at = time.monotonic()
        await asyncio.to_thread(nats_cluster.kill, victim)
        async with asyncio.timeout(90):
            await asyncio.gather(*drivers)
        took = time.monotonic() - killed_at
    finally:
        for d in drivers:
            d.cancel()
        await asyncio.gather(*drivers, return_exceptions=True)
        await appender.close()
    assert appender.pending == 0 and appender.refused == 0, (appender.pending, appender.refused)
    ids = await all_ids(store)
    expected = {f"r{i}" for i in range(DRIVERS * PER_DRIVER)}
    assert set(ids) == expected and len(ids) == len(expected), (
        f"{len(ids)} stored, {len(set(ids))} distinct, missing {sorted(expected - set(ids))[:10]}; "
        f"{appender.retries} retries, drivers done {took:.1f}s after the kill"
    )
    await store.close()
