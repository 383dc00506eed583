"""Store scenarios: ``ingest`` (the append path vs raw ``publish_async``) and ``rebuild`` (the
projection loaded from the stream vs a raw ordered-consumer read of the same stream).

``rebuild`` loads with the read-ahead child the engine uses for a large catch-up
(engine/store/read_ahead.py) and, for comparison, once more in-process; the baseline stays one
process's raw read of the same stream.
"""

from __future__ import annotations

import resource
import time

from engine.bench.common import (
    RAW_PREFIX,
    Row,
    Target,
    create_raw_stream,
    nats_server,
    raw_publish,
    raw_read,
)
from engine.bench.workload import History, batched
from engine.store.event_store import JetStreamEventStore
from engine.store.projector import Projector
from engine.store.read_ahead import ReadAhead
from engine.store.settings import NatsSettings
from engine.store.streams import EVENTS_STREAM
from events.codec import encode
from events.envelope import Envelope
from events.subjects import subject_for

#: a caller's batch (the executor's BatchingAppender sends up to 512; the CLI and ingest more)
CHUNK = 2_000


def _fleet_events(count: int, *, start_seq: int = 1) -> list[Envelope]:
    """About ``count`` events of a fleet converging and rolling (mostly pod reports)."""
    nodes = max(50, count // 40)
    return list(History(nodes, 10, start_seq=start_seq).events(total=count))[:count]


async def _append_all(store: JetStreamEventStore, envelopes: list[Envelope]) -> float:
    start = time.perf_counter()
    for chunk in (envelopes[i : i + CHUNK] for i in range(0, len(envelopes), CHUNK)):
        await store.append_many(chunk)
    return time.perf_counter() - start


async def ingest(quick: bool) -> list[Row]:
    count = 10_000 if quick else 100_000
    rounds = 2
    best_store = best_raw = float("inf")
    async with nats_server() as (_, nc):
        await create_raw_stream(nc)
        store = JetStreamEventStore(nc)
        try:
            await store.append_many(_fleet_events(500, start_seq=10_000_000))  # warm both paths
            await raw_publish(nc, [(f"{RAW_PREFIX}warm.{i}", b"{}", f"w{i}") for i in range(500)])
            for r in range(rounds):
                envelopes = _fleet_events(count, start_seq=1 + r * 5_000_000)
                t_store = await _append_all(store, envelopes)
                items = [(RAW_PREFIX + subject_for(e.data), encode(e), f"raw-{e.id}") for e in envelopes]
                t_raw = 0.0
                for i in range(0, len(items), CHUNK):
                    t_raw += await raw_publish(nc, items[i : i + CHUNK])
                best_store, best_raw = min(best_store, t_store), min(best_raw, t_raw)
            size = sum(len(p) for _, p, _ in items) / len(items)
        finally:
            await store.close()
    return [
        Row(
            "ingest",
            f"append_many, {count:,} events (avg {size:.0f} B), chunks of {CHUNK:,}",
            count / best_store,
            "ev/s",
            baseline=count / best_raw,
            baseline_label="nats-py publish_async of the same bytes, same chunks",
            target=Target(">=", 0.7, on="ratio"),
            note=f"best of {rounds}",
        )
    ]


async def rebuild(quick: bool) -> list[Row]:
    count = 10_000 if quick else 200_000
    async with nats_server() as (server, nc):
        store = JetStreamEventStore(nc)
        try:
            for chunk in batched(iter(_fleet_events(count)), 5_000):
                await store.append_many(chunk)
            total = await store.last_seq()
            cpu = time.process_time()
            t_raw, _ = await raw_read(nc, EVENTS_STREAM, total)
            cpu_raw = time.process_time() - cpu
            read_ahead = ReadAhead(NatsSettings(servers=[server.url], name="dsctl-bench"))
            projector = Projector(store, read_ahead=read_ahead)
            child = resource.getrusage(resource.RUSAGE_CHILDREN)
            start, cpu = time.perf_counter(), time.process_time()
            await projector.load(use_snapshot=False)
            t_load, cpu_load = time.perf_counter() - start, time.process_time() - cpu
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu_child = after.ru_utime + after.ru_stime - child.ru_utime - child.ru_stime
            pods = len(projector.state.pods)
            assert projector.replayed == total, (projector.replayed, total)
            alone = Projector(store)
            start, cpu = time.perf_counter(), time.process_time()
            await alone.load(use_snapshot=False)
            t_alone, cpu_alone = time.perf_counter() - start, time.process_time() - cpu
            assert alone.state.seq == projector.state.seq and len(alone.state.pods) == pods
        finally:
            await store.close()
    return [
        Row(
            "rebuild",
            f"Projector.load (no snapshot), {total:,} events -> {pods:,} pods",
            total / t_load,
            "ev/s",
            baseline=total / t_raw,
            baseline_label="nats-py ordered consumer, same stream, bytes only",
            target=Target(">=", 0.8, on="ratio"),
            # on a shared machine the wall clock of the two reads can differ by the neighbours' load:
            # the CPU seconds of this process say what the reading, decoding and folding cost
            note=(
                f"CPU: load {cpu_load:.2f} s + reader child {cpu_child:.2f} s, raw read {cpu_raw:.2f} s; "
                f"in-process load {total / t_alone:,.0f} ev/s "
                f"(ratio {t_raw / t_alone:.2f}, CPU {cpu_alone:.2f} s)"
            ),
        )
    ]
