"""``restart``: engine start to first reconcile with a long log, without and with a snapshot.

The log is a realistic history (``workload.History``: a converged fleet, then rolling updates) appended
with ``append_many``. "Start" is ``Engine.start(use_snapshot=...)`` (snapshot + replay of the tail);
"first reconcile" is the first ``reconcile_key`` completed after ``Engine.run`` took the lease, fenced
and re-published what was in flight, as a restarted leader does."""

from __future__ import annotations

import asyncio
import contextlib
import time

from nats.aio.client import Client

from engine.bench.common import Row, Target, nats_server, raw_read, wait_until
from engine.bench.workload import History, batched
from engine.reconciler.engine import Engine
from engine.store.event_store import JetStreamEventStore
from engine.store.streams import EVENTS_STREAM


async def _start(
    nc: Client, store: JetStreamEventStore, *, use_snapshot: bool
) -> tuple[float, float, Engine]:
    """(seconds to the projection loaded, seconds to the first reconcile done, the engine)."""
    engine = Engine(nc, identity="bench-restart", lease_ttl=2.0, store=store)
    start = time.perf_counter()
    await engine.start(use_snapshot=use_snapshot)
    loaded = time.perf_counter() - start
    task = asyncio.ensure_future(engine.run())
    try:
        ok = await wait_until(lambda: engine.metrics.reconciles >= 1 or task.done(), timeout=120, step=0.002)
        first = time.perf_counter() - start
        if task.done():
            task.result()
        if not ok:
            raise TimeoutError("no reconcile within 120 s of the engine start")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    return loaded, first, engine


async def restart(quick: bool) -> list[Row]:
    nodes, daemonsets, total = (200, 5, 20_000) if quick else (5_000, 10, 1_000_000)
    async with nats_server() as (_, nc):
        store = JetStreamEventStore(nc)
        try:
            start = time.perf_counter()
            for chunk in batched(History(nodes, daemonsets).events(total=total), 10_000):
                await store.append_many(chunk)
            t_fill = time.perf_counter() - start
            events = await store.last_seq()
            t_raw, size = await raw_read(nc, EVENTS_STREAM, events)
            cold_loaded, cold_first, engine = await _start(nc, store, use_snapshot=False)
            assert engine.projector is not None
            pods = len(engine.projector.state.pods)
            start = time.perf_counter()
            snap_seq = await engine.projector.save_snapshot()
            t_save = time.perf_counter() - start
            warm_loaded, warm_first, warm = await _start(nc, store, use_snapshot=True)
            assert warm.projector is not None
            from_snapshot = warm.projector.loaded_from_snapshot
            replayed = warm.projector.replayed
        finally:
            await store.close()
    what = f"{events:,} events ({size / 1e6:,.0f} MB; {nodes:,} nodes x {daemonsets} DS, {pods:,} pods)"
    baseline_label = "nats-py ordered consumer read of the whole stream, bytes only"
    return [
        Row(
            "restart",
            f"start -> first reconcile, no snapshot, {what}",
            cold_first,
            "s",
            baseline=t_raw,
            baseline_label=baseline_label,
            note=f"projection loaded in {cold_loaded:.2f} s ({events / cold_loaded:,.0f} ev/s); "
            f"log written at {events / t_fill:,.0f} ev/s",
        ),
        Row(
            "restart",
            f"start -> first reconcile, with snapshot, {what}",
            warm_first,
            "s",
            baseline=t_raw,
            baseline_label=baseline_label,
            target=Target("<=", 3.0),
            verdict=False if snap_seq == 0 or from_snapshot == 0 else None,
            note=f"snapshot at seq {from_snapshot:,} (written in {t_save:.2f} s), {replayed:,} replayed; "
            f"loaded in {warm_loaded:.2f} s" + ("" if from_snapshot else "; SNAPSHOT NOT USED"),
        ),
    ]
