"""``restart``: engine start to first reconcile with a long log (5 million events in the full run).

The log is a realistic history (``workload.History``: a converged fleet, then rolling updates). At
5 million events (about 3 GB) writing it through ``append_many`` (~25k events/s) would take minutes, so
the workload's bytes are published raw (``fill``: the subject, payload and ``Nats-Msg-Id`` header
``append_many`` would send, in windows of ``WINDOW`` closed by one acknowledged publish whose sequence
proves none of the window was lost). While publishing, the same envelopes are folded in-process at the
sequences they get; that state is the snapshot, written the way ``Projector.save_snapshot`` writes it.
The quick run also starts an engine without a snapshot and checks that its projection is byte for byte
the folded one (so the snapshot is the one an engine would have written).

"Start" is ``Engine.start(use_snapshot=...)`` (snapshot + replay of the tail); "first reconcile" is the
first ``reconcile_key`` completed after ``Engine.run`` took the lease, fenced and re-published what was
in flight, as a restarted leader does."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Iterable

import msgspec
from nats.aio.client import Client

from engine.bench.common import Row, Target, nats_server, raw_read, wait_until
from engine.bench.workload import History
from engine.reconciler.engine import Engine
from engine.store.definitions import SNAPSHOTS_BUCKET
from engine.store.event_store import JetStreamEventStore
from engine.store.projector import ObjectSnapshots
from engine.store.streams import EVENTS_STREAM
from events.codec import encode
from events.envelope import Envelope
from events.subjects import subject_for
from projections import snapshot
from projections.fold import apply
from projections.model import ClusterState

#: the raw read baseline reads this many events and scales its time to the whole log (reading all 5M
#: would take the scenario past its time limit on a shared 2-core machine)
RAW_SAMPLE = 1_000_000

#: messages published without waiting, then one acknowledged publish that closes the window
WINDOW = 20_000


class _Ack(msgspec.Struct):
    seq: int = 0
    error: dict[str, object] | None = None


_ack = msgspec.json.Decoder(_Ack)


async def fill(nc: Client, envelopes: Iterable[Envelope], state: ClusterState) -> tuple[int, int]:
    """Publish ``envelopes`` to the (empty) event stream as ``append_many`` would store them, folding
    each into ``state`` at its sequence; returns (events, bytes). Raises if the server's sequence is not
    the one counted here at the end of a window (a message dropped or a stream not empty)."""
    seq = size = 0
    pending: tuple[str, bytes, dict[str, str]] | None = None  # the last one is always acknowledged
    for env in envelopes:
        if pending is not None:
            if seq % WINDOW:
                await nc.publish(*pending[:2], headers=pending[2])
            else:
                await _acked(nc, *pending, seq)
        seq += 1
        apply(state, env, seq)
        payload = encode(env)
        size += len(payload)
        pending = (subject_for(env.data), payload, {"Nats-Msg-Id": env.id})
    if pending is not None:
        await _acked(nc, *pending, seq)
    return seq, size


def _progress(text: str) -> None:
    print(f"bench: restart: {text}", file=sys.stderr, flush=True)


async def _acked(nc: Client, subject: str, payload: bytes, headers: dict[str, str], seq: int) -> None:
    reply = await nc.request(subject, payload, headers=headers, timeout=60.0)
    ack = _ack.decode(reply.data)
    if ack.error is not None or ack.seq != seq:
        raise RuntimeError(f"raw publish of the bench log: expected sequence {seq}, got {reply.data!r}")


async def _start(
    nc: Client, store: JetStreamEventStore, *, use_snapshot: bool, expect: bytes = b""
) -> tuple[float, float, Engine]:
    """(seconds to the projection loaded, seconds to the first reconcile done, the engine). With
    ``expect``, the loaded projection must be that snapshot, byte for byte."""
    engine = Engine(nc, identity="bench-restart", lease_ttl=2.0, store=store)
    start = time.perf_counter()
    projector = await engine.start(use_snapshot=use_snapshot)
    loaded = time.perf_counter() - start
    if expect and snapshot.dump(projector.state) != expect:
        raise AssertionError("the engine's projection differs from the bench's own fold of the log")
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
    nodes, daemonsets, total = (200, 5, 20_000) if quick else (5_000, 10, 5_000_000)
    rows: list[Row] = []
    async with nats_server() as (_, nc):
        store = JetStreamEventStore(nc)
        try:
            folded = ClusterState()
            start = time.perf_counter()
            events, size = await fill(nc, History(nodes, daemonsets).events(total=total), folded)
            t_fill = time.perf_counter() - start
            _progress(f"{events:,} events ({size / 1e6:,.0f} MB) written in {t_fill:.0f} s")
            sample = min(events, RAW_SAMPLE)
            t_sample, _ = await raw_read(nc, EVENTS_STREAM, sample)
            t_raw = t_sample * events / sample
            _progress(f"raw read of {sample:,} events in {t_sample:.1f} s")
            pods = len(folded.pods)
            what = (
                f"{events:,} events ({size / 1e6:,.0f} MB; {nodes:,} nodes x {daemonsets} DS, {pods:,} pods)"
            )
            baseline_label = "nats-py ordered consumer read of the whole stream, bytes only" + (
                f" (at the rate measured over its first {sample:,} events)" if sample < events else ""
            )
            start = time.perf_counter()
            data = snapshot.dump(folded)
            t_dump = time.perf_counter() - start
            del folded
            if quick:
                cold_loaded, cold_first, _ = await _start(nc, store, use_snapshot=False, expect=data)
                rows.append(
                    Row(
                        "restart",
                        f"start -> first reconcile, no snapshot, {what}",
                        cold_first,
                        "s",
                        baseline=t_raw,
                        baseline_label=baseline_label,
                        note=f"projection loaded in {cold_loaded:.2f} s ({events / cold_loaded:,.0f} ev/s)",
                    )
                )
            js = nc.jetstream()
            start = time.perf_counter()
            await ObjectSnapshots(await js.object_store(SNAPSHOTS_BUCKET)).save(data)
            t_save = time.perf_counter() - start + t_dump
            _progress(f"snapshot of {len(data) / 1e6:,.0f} MB stored in {t_save:.1f} s")
            warm_loaded, warm_first, warm = await _start(nc, store, use_snapshot=True)
            assert warm.projector is not None
            from_snapshot = warm.projector.loaded_from_snapshot
            replayed = warm.projector.replayed
        finally:
            await store.close()
    rows.append(
        Row(
            "restart",
            f"start -> first reconcile, with snapshot, {what}",
            warm_first,
            "s",
            baseline=t_raw,
            baseline_label=baseline_label,
            target=Target("<=", 3.0),
            verdict=False if from_snapshot == 0 else None,
            note=f"snapshot of {len(data) / 1e6:,.0f} MB at seq {from_snapshot:,} (encoded and stored in "
            f"{t_save:.2f} s), {replayed:,} replayed; loaded in {warm_loaded:.2f} s; log written raw at "
            f"{events / t_fill:,.0f} ev/s (generated, folded and published)"
            + ("" if from_snapshot else "; SNAPSHOT NOT USED"),
        )
    )
    return rows
