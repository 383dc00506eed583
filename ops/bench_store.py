#!/usr/bin/env python
"""Measure the JetStream event store against raw nats-py on the same server, in the same run.

Usage: .venv/bin/python ops/bench_store.py [--events 20000] [--single 2000]

Starts its own embedded nats-server (file storage, temp dir). Each dsctl number has a raw nats-py
baseline beside it that moves the same bytes with the same ``Nats-Msg-Id`` headers into a stream with
the same configuration (``BENCH_RAW``, subjects ``bench.>``):

- bulk append: ``JetStreamEventStore.append_many`` vs ``js.publish_async`` + gather;
- single append: ``JetStreamEventStore.append`` vs ``js.publish``, one at a time (latency-bound);
- read: ``JetStreamEventStore.read`` (decodes every envelope) vs nats-py's push ordered consumer
  (bytes only), plus msgspec decode alone, to show where the difference goes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import structlog

from engine.store.connection import close, connect
from engine.store.embedded import EmbeddedNats
from engine.store.event_store import JetStreamEventStore
from engine.store.jetstream_api import api_request
from engine.store.settings import NatsSettings
from engine.store.streams import EVENTS_STREAM, StreamDefinition, apply_definitions, load_definitions
from events.codec import decode, encode
from events.envelope import Envelope, wrap
from events.ids import stable_id
from events.subjects import subject_for
from events.types import NodeLabelsChanged, PodReady


def make(n: int, tag: str) -> list[Envelope]:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    out = []
    for i in range(n):
        event = (
            NodeLabelsChanged(name=f"node-{i % 500}", labels={"zone": f"z{i % 3}", "i": str(i)})
            if i % 2
            else PodReady(namespace="default", name=f"pod-{i}", node=f"node-{i % 500}")
        )
        out.append(wrap(event, id=stable_id(tag, i), occurred_at=now, source="bench"))
    return out


async def raw_bulk(js: Any, items: list[tuple[str, bytes, str]]) -> None:
    futures = [await js.publish_async(s, p, headers={"Nats-Msg-Id": i}) for s, p, i in items]
    await asyncio.gather(*futures)


async def raw_single(js: Any, items: list[tuple[str, bytes, str]]) -> None:
    for s, p, i in items:
        await js.publish(s, p, headers={"Nats-Msg-Id": i})


async def raw_read(js: Any, n: int) -> int:
    done = asyncio.Event()
    count = 0
    size = 0

    async def cb(msg: Any) -> None:
        nonlocal count, size
        count += 1
        size += len(msg.data)
        if count >= n:
            done.set()

    sub = await js.subscribe("bench.>", stream="BENCH_RAW", cb=cb, ordered_consumer=True)
    try:
        async with asyncio.timeout(120):
            await done.wait()
    finally:
        await sub.unsubscribe()
    return size


async def timed(coro: Any) -> float:
    start = time.perf_counter()
    await coro
    return time.perf_counter() - start


async def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=20_000, help="events for bulk append and read")
    parser.add_argument("--single", type=int, default=2_000, help="events for one-at-a-time append")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))

    async with EmbeddedNats() as server:
        nc = await connect(NatsSettings(servers=[server.url]))
        try:
            defs = load_definitions()
            await apply_definitions(nc, defs)
            events_def = next(d for d in defs if isinstance(d, StreamDefinition) and d.name == EVENTS_STREAM)
            raw_config = {**events_def.config, "name": "BENCH_RAW", "subjects": ["bench.>"]}
            await api_request(nc, "STREAM.CREATE.BENCH_RAW", raw_config)
            js = nc.jetstream()
            store = JetStreamEventStore(nc)

            bulk = make(args.events, "bulk")
            single = make(args.single, "single")
            raw_items = [(f"bench.{subject_for(e.data)}", encode(e), e.id) for e in bulk]
            raw_single_items = [(f"bench.{subject_for(e.data)}", encode(e), e.id) for e in single]

            # warm up both paths (connection buffers, inbox subscriptions)
            await store.append_many(make(200, "warm"))
            await raw_bulk(js, [(f"bench.warm.{i}", b"x", f"w{i}") for i in range(200)])

            rows: list[tuple[str, int, float, float]] = []
            t_store = await timed(store.append_many(bulk))
            t_raw = await timed(raw_bulk(js, raw_items))
            rows.append(("bulk append (append_many vs publish_async)", len(bulk), t_store, t_raw))

            t_store = await timed(_appends(store, single))
            t_raw = await timed(raw_single(js, raw_single_items))
            rows.append(("single append (append vs js.publish)", len(single), t_store, t_raw))

            total = await store.last_seq()
            raw_total = (await js.stream_info("BENCH_RAW")).state.messages
            t_store = await timed(_read_all(store, total))
            t_raw = await timed(raw_read(js, raw_total))
            rows.append(("read (store.read, decoded vs ordered consumer, bytes)", total, t_store, t_raw))

            payloads = [encode(e) for e in bulk]
            start = time.perf_counter()
            for p in payloads:
                decode(p)
            t_decode = time.perf_counter() - start
            await store.close()
        finally:
            await close(nc)

    print(f"nats-server {server.binary} on {server.url}, file storage, R1; Python {sys.version.split()[0]}")
    print(f"{'operation':58} {'events':>7} {'dsctl ev/s':>11} {'raw ev/s':>10} {'dsctl/raw':>9}")
    for name, n, t_store, t_raw in rows:
        print(f"{name:58} {n:7d} {n / t_store:11,.0f} {n / t_raw:10,.0f} {t_raw / t_store:9.2f}")
    print(f"{'(msgspec envelope decode alone)':58} {len(payloads):7d} {len(payloads) / t_decode:11,.0f}")
    return 0


async def _appends(store: JetStreamEventStore, envelopes: list[Envelope]) -> None:
    for e in envelopes:
        await store.append(e)


async def _read_all(store: JetStreamEventStore, total: int) -> None:
    count = 0
    async with contextlib.aclosing(store.read()) as events:
        async for _ in events:
            count += 1
    assert count == total, (count, total)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
