"""``dsctl up``, ``dsctl engine run`` and ``dsctl executor run``: long-running processes.

``up`` is the one-command experience: an embedded nats-server (unless ``--nats`` points elsewhere),
the streams, the engine and a simulated fleet executor in one process, and a live view. Ctrl-C (or
SIGTERM) stops everything in order: view, executor, engine (which gives up its lease), connection,
server.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog

from engine.cli.view import Activity, live_view
from engine.executor.drivers.base import Driver
from engine.executor.drivers.process import ProcessDriver
from engine.executor.drivers.sim import SimDriver
from engine.executor.run import log_dir, run_executor, state_dir
from engine.reconciler.engine import Engine
from engine.runtime.metrics import Metrics, serve
from engine.store.connection import connect
from engine.store.embedded import EmbeddedNats
from engine.store.settings import NatsSettings
from engine.store.setup import ensure

log = structlog.get_logger("dsctl.up")


async def _until_signalled(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await main(stop)


async def _cancel(*tasks: asyncio.Future[Any] | None) -> None:
    live = [t for t in tasks if t is not None]
    for t in live:
        t.cancel()
    for t in live:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await t


def make_driver(
    name: str, *, ready_after: float = 0.0, pod_logs: str | None = None, state: str | None = None
) -> Driver:
    if name == "sim":
        return SimDriver(ready_after=ready_after)
    if name == "process":
        return ProcessDriver(log_dir(pod_logs), state_dir(state))
    raise ValueError(f"unknown driver {name!r} (choose sim or process)")


async def up(
    settings: NatsSettings | None,
    *,
    port: int,
    store_dir: str,
    demo: bool,
    lease_ttl: float | None,
    metrics_port: int | None,
    ready_after: float,
    demo_setup: Callable[[Engine], Awaitable[None]] | None = None,
    replicas: int | None = None,
) -> int:
    """``lease_ttl`` None keeps the leader bucket's TTL (the file's on a fresh store); ``replicas`` is
    applied to every stream, bucket and the object store (``engine.store.setup.ensure``)."""
    server: EmbeddedNats | None = None
    if settings is None:
        Path(store_dir).mkdir(parents=True, exist_ok=True)
        server = EmbeddedNats(port=port, store_dir=store_dir, die_with_parent=True)
        try:
            server.start()
        except Exception as err:
            print(f"error: cannot start nats-server on 127.0.0.1:{port}: {err}", file=sys.stderr)
            return 1
        settings = NatsSettings(servers=[server.url], name="dsctl-up")
    try:
        nc = await connect(settings)
        try:
            # `up` runs an engine, so it sets the store up (a fresh one, or one an engine left)
            ttl = (await ensure(nc, replicas=replicas, lease_ttl=lease_ttl)).lease_ttl
            metrics = Metrics()
            engine = Engine(nc, lease_ttl=ttl, metrics=metrics)
            projector = await engine.start()
            activity = Activity()
            projector.listen(activity.before, activity.after)
            where = server.url if server is not None else ", ".join(settings.redacted_servers())
            print(f"dsctl up: NATS at {where}" + (f" (store {store_dir})" if server else ""), flush=True)
            print(f"          point the CLI at it with: export NATS_URL={where.split(',')[0]}", flush=True)
            from engine.ingest.service import serve_ingest

            ingest = await serve_ingest(nc, engine.store)
            print("          ingest service dsctl-ingest on dse.ingest.event / dse.ingest.batch", flush=True)
            metrics_server = None
            if metrics_port is not None:
                metrics_server = await serve(metrics, "127.0.0.1", metrics_port)
                print(f"          metrics on http://127.0.0.1:{metrics_port}/metrics", flush=True)

            async def main(stop: asyncio.Event) -> None:
                engine_task = asyncio.ensure_future(engine.run())
                executor_ready = asyncio.Event()
                executor_task = asyncio.ensure_future(
                    run_executor(
                        nc,
                        SimDriver(ready_after=ready_after),
                        state=projector.state,
                        store=engine.store,
                        ready=executor_ready,
                    )
                )
                view_task = None
                try:
                    await asyncio.wait_for(engine.leading.wait(), timeout=ttl * 3)
                    # the fleet may wait for its lease (another fleet on this NATS) and then fail:
                    # its error, not a timeout, is what the user must see
                    ready_wait = asyncio.ensure_future(executor_ready.wait())
                    await asyncio.wait(
                        {ready_wait, executor_task}, timeout=30, return_when=asyncio.FIRST_COMPLETED
                    )
                    await _cancel(ready_wait)
                    if executor_task.done():
                        executor_task.result()
                    if not executor_ready.is_set():
                        raise TimeoutError("the simulated fleet executor did not start within 30 s")
                    if demo and demo_setup is not None:
                        await demo_setup(engine)
                    view_task = asyncio.ensure_future(
                        live_view(lambda: projector.state, "dsctl up — Ctrl-C to stop", activity=activity)
                    )
                    waiters = [asyncio.ensure_future(stop.wait()), engine_task, executor_task]
                    done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        if task is not waiters[0] and task.exception() is not None:
                            raise task.exception()  # type: ignore[misc]
                    await _cancel(waiters[0])
                finally:
                    await _cancel(view_task, executor_task, engine_task)

            await _until_signalled(main)
            await ingest.stop()
            if metrics_server is not None:
                metrics_server.close()
            print("\ndsctl up: stopped", flush=True)
        finally:
            with contextlib.suppress(Exception):
                await nc.drain()
    finally:
        if server is not None:
            server.stop()
    return 0


async def engine_run(
    settings: NatsSettings,
    *,
    lease_ttl: float | None,
    identity: str | None,
    metrics_port: int | None,
    workers: int,
    replicas: int | None = None,
) -> int:
    """``dsctl engine run``: ensure the store (only an engine or ``dsctl admin streams`` writes stream
    definitions), then run the engine with the lease TTL the store has."""
    nc = await connect(settings)
    try:
        setup = await ensure(nc, replicas=replicas, lease_ttl=lease_ttl)
        log.info("engine.store_ready", replicas=setup.replicas, lease_ttl=setup.lease_ttl)
        metrics = Metrics()
        engine = Engine(nc, identity=identity, lease_ttl=setup.lease_ttl, metrics=metrics, workers=workers)
        await engine.start()
        if metrics_port is not None:
            await serve(metrics, "0.0.0.0", metrics_port)

        async def main(stop: asyncio.Event) -> None:
            task = asyncio.ensure_future(engine.run())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
            await _cancel(task, stopper)

        await _until_signalled(main)
    finally:
        with contextlib.suppress(Exception):
            await nc.drain()
    return 0


async def executor_run(
    settings: NatsSettings,
    *,
    node: str | None,
    driver: str,
    ready_after: float,
    pod_logs: str | None,
    state: str | None = None,
    stop_pods_on_exit: bool = False,
    lease_wait: float | None = None,
) -> int:
    """``dsctl executor run``: SIGINT/SIGTERM stop it; the pods of a process executor keep running
    (``stop_pods_on_exit`` stops them) and the next executor for the node re-attaches to them."""
    nc = await connect(settings)
    try:
        # no set-up here: run_executor checks the streams it needs and names the missing ones
        drv = make_driver(driver, ready_after=ready_after, pod_logs=pod_logs, state=state)

        async def main(stop: asyncio.Event) -> None:
            task = asyncio.ensure_future(
                run_executor(nc, drv, node=node, stop_pods_on_exit=stop_pods_on_exit, lease_wait=lease_wait)
            )
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if task.done() and task.exception() is not None:
                await _cancel(stopper)
                raise task.exception()  # type: ignore[misc]
            await _cancel(task, stopper)

        await _until_signalled(main)
    finally:
        with contextlib.suppress(Exception):
            await nc.drain()
    return 0
