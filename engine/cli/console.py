"""``dsctl console``: the web console against any deployment (docs/console.md).

``dsctl up`` serves the console from the engine process, over the engine's own projection. This
command serves it on its own, for a deployment whose engines run elsewhere: it keeps a projection of
its own (snapshot, then the log, then following it) and reads nothing but the log, so the auditor's
role is enough where roles exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import TextIO

import structlog

from engine.console.server import serve_console
from engine.runtime import tasks
from engine.store.connection import close, connect
from engine.store.event_store import JetStreamEventStore
from engine.store.projector import ObjectSnapshots, Projector
from engine.store.settings import NatsSettings
from engine.store.streams import SNAPSHOTS_BUCKET

log = structlog.get_logger("dsctl.console")


class _ReadOnlySnapshots:
    """The newest snapshot if it can be read (a role may not be allowed to); never written."""

    def __init__(self, inner: ObjectSnapshots) -> None:
        self._inner = inner

    async def load(self) -> bytes | None:
        try:
            return await self._inner.load()
        except Exception as err:  # start from the log instead
            log.warning("console.snapshot_unreadable", error=f"{type(err).__name__}: {err}")
            return None

    async def save(self, data: bytes) -> None:
        return None


async def _snapshots(nc: object) -> _ReadOnlySnapshots | None:
    try:
        store = await nc.jetstream().object_store(SNAPSHOTS_BUCKET)  # type: ignore[attr-defined]
    except Exception:  # no bucket, or not allowed to read it: start from the log
        return None
    return _ReadOnlySnapshots(ObjectSnapshots(store))


async def run_console(
    settings: NatsSettings, *, host: str, port: int, out: TextIO, stop: asyncio.Event | None = None
) -> int:
    nc = await connect(settings)
    store = JetStreamEventStore(nc)
    try:
        projector = Projector(store, await _snapshots(nc))
        await projector.load()
        projector.snapshots = None  # this process reads snapshots, never writes them
        if projector.seq == 0 and await store.last_seq() == 0:
            print("dsctl console: the event log is empty so far", file=out, flush=True)
        follower = asyncio.ensure_future(projector.run())
        console = await serve_console(store, projector, host=host, port=port)
        print(f"dsctl console: {console.url} (log sequence {projector.seq})", file=out, flush=True)
        done = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        handled = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, done.set)
                handled.append(sig)
        try:
            await done.wait()
        finally:
            for sig in handled:
                loop.remove_signal_handler(sig)
            await console.stop()
            await tasks.stop([follower])
    finally:
        await store.close()
        with contextlib.suppress(Exception):
            await close(nc)
    return 0
