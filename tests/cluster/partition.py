"""A network partition on loopback, without root or any tool: the cluster's routes go through a relay
the test controls, and cutting a server off makes the relay stop carrying its route traffic.

Why a relay rather than iptables or network namespaces: both need root and a package or kernel
feature a CI runner may lack, and a test that skips there proves nothing. The relay needs neither and
keeps every byte on 127.0.0.1. It cuts exactly what a firewall rule on the route ports would: the
servers' traffic with each other (Raft, the meta group, interest), not the clients' connections.

How: for every ordered pair of servers (a, b) the relay listens on a port of its own and forwards to
b's cluster port, and server a's ``--routes`` lists those ports instead of the real ones, so every
route connection passes through the relay (each connection has one soliciting side, and that side
dialled a relay port). A server also tells its peers its own cluster URL (gossip), and a peer that
learns of a server before its configured route is up dials that URL directly, which would bypass
the relay; so each server advertises (``--cluster_advertise``) a "sink" port of the relay, which
accepts and closes at once: such implicit routes fail and are not retried.

A cut behaves like packets dropped on the route ports, not like a refused connection: data already
in flight stays in the relay and new connections are accepted but not forwarded, so the servers
notice only through their own timers (Raft heartbeats, election timeouts), as in a real partition.
Healing resumes forwarding: whatever survived the cut carries on, and what the servers closed in the
meantime closes. The relay runs its own event loop in a thread, so a busy test loop never delays the
cluster's heartbeats (a stalled relay would look like a partition).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from engine.store.embedded import free_port
from engine.store.embedded_cluster import EmbeddedCluster, Which

Pair = tuple[int, int]


class RouteRelay:
    """Forwards route connections between servers, pair by pair; ``cut``/``heal`` from any thread."""

    def __init__(self, host: str, cluster_ports: list[int]) -> None:
        self.host = host
        self.targets = list(cluster_ports)
        n = len(cluster_ports)
        #: (dialling server, dialled server) -> the relay port the first uses for the second
        self.ports: dict[Pair, int] = {(a, b): free_port(host) for a in range(n) for b in range(n) if a != b}
        self.sink_port = free_port(host)
        self.cut_off: set[int] = set()
        #: connections accepted per pair (for the record)
        self.accepted: dict[Pair, int] = dict.fromkeys(self.ports, 0)
        #: connections forwarded upstream right now
        self.live = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._open: dict[Pair, asyncio.Event] = {}
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    def routes_for(self, a: int) -> str:
        return ",".join(
            f"nats://{self.host}:{self.ports[(a, b)]}" for b in range(len(self.targets)) if b != a
        )

    @property
    def sink_url(self) -> str:
        return f"{self.host}:{self.sink_port}"

    # --- control (any thread) -------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        self._thread = threading.Thread(target=self._run, name="route-relay", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"the route relay did not start within {timeout:g}s")
        if self._error is not None:
            raise RuntimeError(f"the route relay failed to start: {self._error}") from self._error

    def cut(self, which: int) -> None:
        """Cut server ``which`` off from every other server (both directions)."""
        self._call(self._set, which, False)

    def heal(self) -> None:
        self._call(self._set, None, True)

    def close(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._stop is not None and self._thread is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout)

    def _call(self, fn: Any, *args: Any) -> None:
        assert self._loop is not None, "the relay is not running"
        done = threading.Event()

        def call() -> None:
            try:
                fn(*args)
            finally:
                done.set()

        self._loop.call_soon_threadsafe(call)
        if not done.wait(5.0):
            raise RuntimeError("the route relay did not answer within 5s")

    # --- the relay's own loop -------------------------------------------------------------------

    def _set(self, which: int | None, open_: bool) -> None:
        if open_:
            self.cut_off.clear()
        else:
            assert which is not None
            self.cut_off.add(which)
        for (a, b), event in self._open.items():
            if a in self.cut_off or b in self.cut_off:
                event.clear()
            else:
                event.set()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as err:  # surfaced by start(); a relay crash mid-test shows as a partition
            self._error = err
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        servers: list[asyncio.Server] = []
        conns: set[asyncio.Task[None]] = set()
        try:
            for pair, port in self.ports.items():
                self._open[pair] = asyncio.Event()
                self._open[pair].set()
                servers.append(await asyncio.start_server(self._handler(pair, conns), self.host, port))
            servers.append(await asyncio.start_server(self._sink, self.host, self.sink_port))
            self._ready.set()
            await self._stop.wait()
        finally:
            for server in servers:
                server.close()
            for task in list(conns):
                task.cancel()
            await asyncio.gather(*conns, return_exceptions=True)

    async def _sink(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

    def _handler(self, pair: Pair, conns: set[asyncio.Task[None]]) -> Any:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            conns.add(task)
            self.accepted[pair] += 1
            gate = self._open[pair]
            up_writer: asyncio.StreamWriter | None = None
            try:
                await gate.wait()  # a connection made during a cut hangs, as a dropped SYN would
                up_reader, up_writer = await asyncio.open_connection(self.host, self.targets[pair[1]])
                self.live += 1
                try:
                    await asyncio.gather(
                        self._pump(reader, up_writer, gate), self._pump(up_reader, writer, gate)
                    )
                finally:
                    self.live -= 1
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                for w in (writer, up_writer):
                    if w is not None:
                        w.close()
                conns.discard(task)

        return handle

    @staticmethod
    async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, gate: asyncio.Event) -> None:
        try:
            while True:
                await gate.wait()
                data = await src.read(65536)
                if not data:
                    break
                await gate.wait()  # read just before a cut: held until the heal, not delivered
                dst.write(data)
                await dst.drain()
        finally:
            # one direction ended: end the other too (a route is useless half-open)
            dst.close()


class PartitionableCluster(EmbeddedCluster):
    """An ``EmbeddedCluster`` whose routes go through a ``RouteRelay``: ``cut(server)`` and ``heal()``."""

    relay: RouteRelay

    def _route_args(self, i: int, routes: str) -> tuple[str, ...]:
        # called once per server from EmbeddedCluster.__init__, after the cluster ports are chosen
        if not hasattr(self, "relay"):
            self.relay = RouteRelay(self.host, self.cluster_ports)
        return (
            "--cluster_name", self.name,
            "--cluster", f"nats://{self.host}:{self.cluster_ports[i]}",
            "--cluster_advertise", self.relay.sink_url,
            "--routes", self.relay.routes_for(i),
        )  # fmt: skip

    def start(self) -> PartitionableCluster:
        if self.relay._thread is None:
            self.relay.start()
        try:
            super().start()
        except BaseException:
            self.relay.close()
            raise
        return self

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.relay.close()

    def cut(self, which: Which) -> None:
        self.relay.cut(self.index(which))

    def heal(self) -> None:
        self.relay.heal()

    def bypassing_routes(self) -> int:
        """Route connections that do not pass through the relay (a cut could not stop them): each
        relayed connection shows in the ``/routez`` of both its ends, any other connection too."""
        seen = sum(len(_routes(s.monitor_url)) for s in self.servers if s.monitor_url and s.running)
        return seen - 2 * self.relay.live


def _routes(monitor_url: str) -> list[Any]:
    with urllib.request.urlopen(monitor_url + "/routez", timeout=2.0) as resp:
        return list(json.loads(resp.read()).get("routes") or ())


@contextlib.contextmanager
def partitionable_cluster(base_dir: Path) -> Iterator[PartitionableCluster]:
    cluster = PartitionableCluster(3, base_dir=base_dir, ready_timeout=30, stop_timeout=5)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.close()
