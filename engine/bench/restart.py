"""``restart``: engine start to first reconcile with a long log (5 million events in the full run).

The log is a realistic history (``workload.History``: a converged fleet, then rolling updates). At
5 million events (about 3 GB) writing it through ``append_many`` (~25k events/s) would take minutes, and
so would generating it, so it is prepared once (``prepared_log``: the subject, ``Nats-Msg-Id`` and
payload ``append_many`` would store, and the snapshot of the state those events fold to, made by the
fold itself at the sequences they get) and kept in ``CACHE_DIR`` under the hash of the sources it was
made from. A run publishes it raw (``fill``: windows of ``WINDOW`` closed by one acknowledged publish
whose sequence proves none of the window was lost) and stores the snapshot the way
``Projector.save_snapshot`` does. The quick run also starts an engine without a snapshot and checks
that its projection equals the prepared one.

"Start" is ``Engine.start(use_snapshot=...)`` (snapshot + replay of the tail); "first reconcile" is the
first ``reconcile_key`` completed after ``Engine.run`` took the lease, fenced and re-published what was
in flight, as a restarted leader does."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import struct
import sys
import time
from collections.abc import Iterator
from pathlib import Path

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
from events.subjects import subject_for
from projections import snapshot
from projections.fold import apply
from projections.model import ClusterState

#: the full run's fleet and log length
FULL = (5_000, 10, 5_000_000)

#: the raw read baseline reads this many events and scales its time to the whole log (reading all 5M
#: would take the scenario past its time limit on a shared 2-core machine)
RAW_SAMPLE = 500_000

#: messages published without waiting, then one acknowledged publish that closes the window
WINDOW = 20_000


class _Ack(msgspec.Struct):
    seq: int = 0
    error: dict[str, object] | None = None


_ack = msgspec.json.Decoder(_Ack)


#: where prepared logs are kept between runs (``DSCTL_BENCH_CACHE``); a log is ~3 GB at 5M events
CACHE_DIR = Path(os.environ.get("DSCTL_BENCH_CACHE", Path.home() / ".cache" / "dsctl-bench"))
#: the sources a prepared log depends on: a change to any of them makes a new one
_SOURCES = (
    "engine/bench/workload.py",
    "events/codec.py",
    "events/k8s.py",
    "events/types.py",
    "projections/authority.py",
    "projections/fold.py",
    "projections/model.py",
    "projections/snapshot.py",
)
_FRAME = struct.Struct(">HHI")  # subject, id and payload lengths


def prepared_log(nodes: int, daemonsets: int, total: int) -> Path:
    """The workload's log as the bytes ``append_many`` would store (subject, ``Nats-Msg-Id``, payload,
    framed), and the snapshot of the state they fold to, in a directory named by the sizes and the
    sources it was made from. Made once (minutes at 5M events: generating is most of a fill), then
    reused: publishing it is what the scenario does. ``python -m engine.bench.restart`` makes the full
    one ahead of a run."""
    root = Path(__file__).resolve().parents[2]
    digest = hashlib.sha256(f"{nodes}x{daemonsets}x{total}".encode())
    for name in _SOURCES:
        digest.update((root / name).read_bytes())
    where = CACHE_DIR / f"restart-{nodes}x{daemonsets}-{total}-{digest.hexdigest()[:16]}"
    if (where / "snapshot.bin").exists():
        return where
    _progress(f"preparing the log in {where}")
    for stale in CACHE_DIR.glob(f"restart-{nodes}x{daemonsets}-{total}-*"):
        if stale.is_dir() and not stale.name.endswith(".partial"):
            shutil.rmtree(stale, ignore_errors=True)  # made from other sources: never used again
    partial = where.with_name(where.name + f".{os.getpid()}.partial")
    partial.mkdir(parents=True, exist_ok=True)
    state = ClusterState()
    with open(partial / "log.bin", "wb", buffering=1 << 20) as out:
        for seq, env in enumerate(History(nodes, daemonsets).events(total=total), 1):
            apply(state, env, seq)
            subject, key, payload = subject_for(env.data).encode(), env.id.encode(), encode(env)
            out.write(_FRAME.pack(len(subject), len(key), len(payload)))
            out.write(subject)
            out.write(key)
            out.write(payload)
    (partial / "snapshot.bin").write_bytes(snapshot.dump(state))
    partial.replace(where)
    return where


def _records(path: Path) -> Iterator[tuple[str, str, bytes]]:
    with open(path, "rb", buffering=1 << 20) as f:
        while head := f.read(_FRAME.size):
            ls, li, lp = _FRAME.unpack(head)
            yield f.read(ls).decode(), f.read(li).decode(), f.read(lp)


async def fill(nc: Client, log: Path) -> tuple[int, int]:
    """Publish a prepared log to the (empty) event stream; returns (events, bytes). Raises if the
    server's sequence is not the one counted here at the end of a window (a message dropped, or a
    stream that was not empty)."""
    seq = size = 0
    pending: tuple[str, bytes, dict[str, str]] | None = None  # the last one is always acknowledged
    for subject, key, payload in _records(log):
        if pending is not None:
            if seq % WINDOW:
                await nc.publish(*pending[:2], headers=pending[2])
            else:
                await _acked(nc, *pending, seq)
        seq += 1
        size += len(payload)
        pending = (subject, payload, {"Nats-Msg-Id": key})
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
    ``expect``, the loaded projection must equal that snapshot's state."""
    engine = Engine(nc, identity="bench-restart", lease_ttl=2.0, store=store)
    start = time.perf_counter()
    projector = await engine.start(use_snapshot=use_snapshot)
    loaded = time.perf_counter() - start
    # equal as states (its sets may iterate in another order than in the process that prepared it)
    if expect and snapshot.load(expect) != projector.state:
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
    nodes, daemonsets, total = (200, 5, 20_000) if quick else FULL
    rows: list[Row] = []
    async with nats_server() as (_, nc):
        store = JetStreamEventStore(nc)
        try:
            start = time.perf_counter()
            prepared = await asyncio.to_thread(prepared_log, nodes, daemonsets, total)
            t_prepare = time.perf_counter() - start
            start = time.perf_counter()
            events, size = await fill(nc, prepared / "log.bin")
            t_fill = time.perf_counter() - start
            _progress(f"{events:,} events ({size / 1e6:,.0f} MB) written in {t_fill:.0f} s")
            sample = min(events, RAW_SAMPLE)
            t_sample, _ = await raw_read(nc, EVENTS_STREAM, sample)
            t_raw = t_sample * events / sample
            _progress(f"raw read of {sample:,} events in {t_sample:.1f} s")
            data = (prepared / "snapshot.bin").read_bytes()
            pods = len(snapshot.load(data).pods)
            what = (
                f"{events:,} events ({size / 1e6:,.0f} MB; {nodes:,} nodes x {daemonsets} DS, {pods:,} pods)"
            )
            baseline_label = "nats-py ordered consumer read of the whole stream, bytes only" + (
                f" (at the rate measured over its first {sample:,} events)" if sample < events else ""
            )
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
            t_save = time.perf_counter() - start
            _progress(f"snapshot of {len(data) / 1e6:,.0f} MB stored in {t_save:.1f} s")
            cpu = time.process_time()
            warm_loaded, warm_first, warm = await _start(nc, store, use_snapshot=True)
            warm_cpu = time.process_time() - cpu
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
            note=f"snapshot of {len(data) / 1e6:,.0f} MB at seq {from_snapshot:,} (stored in "
            f"{t_save:.2f} s), {replayed:,} replayed; loaded in {warm_loaded:.2f} s; "
            f"{warm_cpu:.2f} s of this process's CPU to the first reconcile; log published raw at "
            f"{events / t_fill:,.0f} ev/s"
            + (f" (prepared in {t_prepare:.0f} s)" if t_prepare > 1 else "")
            + ("" if from_snapshot else "; SNAPSHOT NOT USED"),
        )
    )
    return rows


if __name__ == "__main__":
    print(prepared_log(*FULL))
