"""``dsctl up``, ``dsctl engine run`` and ``dsctl executor run``: long-running processes.

``up`` is the one-command experience: an embedded nats-server (unless ``--nats`` points elsewhere),
the streams, the engine and a simulated fleet executor in one process, and a live view. Ctrl-C (or
SIGTERM) stops everything in order: view, executor, engine (which gives up its lease), connections,
server.

Secure by default: the embedded server requires the roles' nkeys (``engine/security``), generated
into the credentials directory next to the store (``.dsctl/credentials``) where every dsctl command
finds them; the engine, the fleet and the ingest service each connect with their own role.
``--insecure`` starts a server that takes anyone, for experiments.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import structlog
from nats.aio.client import Client

from engine.cli.served import serve_reads
from engine.cli.view import Activity, live_view
from engine.executor.drivers.base import Driver
from engine.executor.drivers.process import ProcessDriver
from engine.executor.drivers.sim import SimDriver
from engine.executor.run import log_dir, run_executor, state_dir
from engine.reconciler.engine import Engine, prepare
from engine.runtime.gc_tuning import tune_gc
from engine.runtime.metrics import Metrics, serve
from engine.security import servers
from engine.security.credentials import DEFAULT_DIR, DIR_ENV, CredentialStore, with_credentials
from engine.security.jwt import OperatorMode
from engine.security.roles import Identity, Role
from engine.security.server_config import include_line, write_authorization
from engine.store.connection import connect
from engine.store.embedded import EmbeddedNats
from engine.store.jetstream_store import JetStreamEventStore
from engine.store.port import EventStore
from engine.store.read_ahead import ReadAhead
from engine.store.settings import NatsSettings

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


class Connections:
    """``dsctl up``'s connections, one per role it plays (engine, simulated fleet, ingest), each with
    that role's credentials: the one process holds no more rights on the bus than the three processes
    it stands for. Closed together."""

    def __init__(self, base: NatsSettings, credentials: CredentialStore | None) -> None:
        self.base = base
        self.credentials = credentials
        self._open: list[Client] = []

    def settings(self, identity: Identity) -> NatsSettings:
        named = msgspec.structs.replace(self.base, name=f"dsctl-up-{identity.name}")
        if self.credentials is None:
            return named
        return with_credentials(named, [identity], self.credentials)

    async def open(self, identity: Identity) -> Client:
        nc = await connect(self.settings(identity))
        self._open.append(nc)
        return nc

    async def close(self, nc: Client | None = None) -> None:
        for conn in [nc] if nc is not None else list(reversed(self._open)):
            with contextlib.suppress(Exception):
                await conn.drain()
            if conn in self._open:
                self._open.remove(conn)


def secure_server_config(credentials: CredentialStore, store_dir: str | Path) -> str:
    """Every base role's credentials (created if missing) and the server config that requires them
    (``EmbeddedNats`` writes it into the store directory): the users' ``auth.conf``, or, for a
    directory in operator mode, its ``server.conf`` (every identity's ``.creds`` minted again)."""
    credentials.init()
    auth = write_authorization(credentials)
    operator = OperatorMode(credentials)
    if operator.exists():
        operator.init()
        return include_line(operator.server_conf, store_dir) + "\n"
    return include_line(auth, store_dir) + "\n"


async def up(
    settings: NatsSettings | None,
    *,
    port: int,
    store_dir: str,
    demo: bool,
    lease_ttl: float | None,
    metrics_port: int | None,
    ready_after: float,
    demo_setup: Callable[[EventStore], Awaitable[None]] | None = None,
    replicas: int | None = None,
    credentials: CredentialStore | None = None,
    secure: bool = True,
    metrics_address: str = "127.0.0.1",
    console_port: int = 0,
) -> int:
    """``lease_ttl`` None keeps the leader bucket's TTL (the file's on a fresh store); ``replicas`` is
    applied to every stream, bucket and the object store (``engine.store.setup.ensure``).

    ``settings`` None starts the embedded server; with ``secure`` it requires the roles' nkeys from
    ``credentials`` (generated there when missing, ``engine/security``), else it takes anyone. With a
    ``credentials`` store each role connects with its own file from it, when it has one."""
    server: EmbeddedNats | None = None
    if settings is None:
        Path(store_dir).mkdir(parents=True, exist_ok=True)
        config = None
        if secure:
            assert credentials is not None
            config = secure_server_config(credentials, store_dir)
        server = EmbeddedNats(port=port, store_dir=store_dir, die_with_parent=True, config=config)
        try:
            server.start()
        except Exception as err:
            print(f"error: cannot start nats-server on 127.0.0.1:{port}: {err}", file=sys.stderr)
            return 1
        if secure and credentials is not None and server.pid is not None:
            servers.register(credentials, server.name, server.pid)
        settings = NatsSettings(servers=[server.url], name="dsctl-up")
    conns = Connections(settings, credentials)
    try:
        nc = await conns.open(Identity(Role.ENGINE))
        # `up` runs an engine, so it sets the store up (a fresh one, or one an engine left)
        ttl = (await prepare(nc, replicas=replicas, lease_ttl=lease_ttl)).lease_ttl
        metrics = Metrics()
        engine = Engine(nc, lease_ttl=ttl, metrics=metrics)
        projector = await engine.start()
        activity = Activity()
        projector.listen(activity.before, activity.after)
        where = server.url if server is not None else ", ".join(settings.redacted_servers())
        print(f"dsctl up: NATS at {where}" + (f" (store {store_dir})" if server else ""), flush=True)
        print(f"          point the CLI at it with: export NATS_URL={where.split(',')[0]}", flush=True)
        if server is not None and secure and credentials is not None:
            print(f"          credentials (one nkey per role) in {credentials.dir}", flush=True)
            if credentials.dir.resolve() != DEFAULT_DIR.resolve():
                print(f"          and: export {DIR_ENV}={credentials.dir.resolve()}", flush=True)
        elif server is not None:
            print("          --insecure: the server takes any client, with no credentials", flush=True)
        from engine.ingest.service import serve_ingest

        nc_ingest = await conns.open(Identity(Role.INGEST))
        ingest_store = JetStreamEventStore(nc_ingest)
        ingest = await serve_ingest(nc_ingest, ingest_store)
        print("          ingest service dsctl-ingest on dse.ingest.event / dse.ingest.batch", flush=True)
        # reads answered from the engine's projection, and the web console over it (docs/console.md)
        reads = await serve_reads(nc, projector, console_port=console_port)
        print("          query service dsctl-query on dse.query.<verb>", flush=True)
        print(f"          console on {reads.console_url}", flush=True)
        metrics_server = None
        if metrics_port is not None:
            metrics_server = await serve(metrics, metrics_address, metrics_port)
            print(f"          metrics on http://{metrics_address}:{metrics_port}/metrics", flush=True)
        nc_fleet = await conns.open(Identity(Role.FLEET))

        async def main(stop: asyncio.Event) -> None:
            engine_task = asyncio.ensure_future(engine.run())
            executor_ready = asyncio.Event()
            executor_task = asyncio.ensure_future(
                run_executor(
                    nc_fleet,
                    SimDriver(ready_after=ready_after),
                    state=projector.state,
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
                    await _apply_demo(conns, demo_setup)
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
        await reads.stop()
        await ingest.stop()
        await ingest_store.close()
        if metrics_server is not None:
            metrics_server.close()
        print("\ndsctl up: stopped", flush=True)
    finally:
        await conns.close()
        if server is not None:
            server.stop()
            if credentials is not None:
                servers.unregister(credentials, server.name)
    return 0


async def _apply_demo(conns: Connections, demo_setup: Callable[[EventStore], Awaitable[None]]) -> None:
    """The demo's manifests, applied as the operator would (the admin role), not as the engine."""
    nc = await conns.open(Identity(Role.ADMIN))
    store = JetStreamEventStore(nc)
    try:
        await demo_setup(store)
    finally:
        await store.close()
        await conns.close(nc)


async def engine_run(
    settings: NatsSettings,
    *,
    lease_ttl: float | None,
    identity: str | None,
    metrics_port: int | None,
    workers: int,
    replicas: int | None = None,
    metrics_address: str = "127.0.0.1",
    console_port: int | None = None,
) -> int:
    """``dsctl engine run``: ensure the store (only an engine or ``dsctl admin streams`` writes stream
    definitions), then run the engine with the lease TTL the store has."""
    nc = await connect(settings)
    try:
        # prepare: ensure, but never re-create an event log that existed and vanished (tampering)
        setup = await prepare(nc, replicas=replicas, lease_ttl=lease_ttl)
        log.info("engine.store_ready", replicas=setup.replicas, lease_ttl=setup.lease_ttl)
        metrics = Metrics()
        engine = Engine(
            nc,
            identity=identity,
            lease_ttl=setup.lease_ttl,
            metrics=metrics,
            workers=workers,
            read_ahead=ReadAhead(settings),
        )
        projector = await engine.start()
        if metrics_port is not None:
            # loopback unless told otherwise (--metrics-address): the numbers tell who leads and how busy
            await serve(metrics, metrics_address, metrics_port)
        # every engine answers reads from its projection; the console only when asked for a port
        reads = await serve_reads(
            nc, projector, console=console_port is not None, console_port=console_port or 0
        )
        if reads.console:
            log.info("engine.console", url=reads.console_url)

        async def main(stop: asyncio.Event) -> None:
            task = asyncio.ensure_future(engine.run())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
            await _cancel(task, stopper)

        await _until_signalled(main)
        await reads.stop()
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
        tune_gc()  # a fleet holds thousands of long-lived pods, as the engine holds its read model
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
