"""A 3-node (or N-node) nats-server cluster with JetStream on loopback: for the R3 tests and, later,
``ops/cluster up|down|status``.

Each server is an ``EmbeddedNats`` with its own client port, cluster (route) port, monitoring port,
``server_name`` and store directory; all share one cluster name and list every route (a server ignores
the route to itself). Killing, stopping, starting or restarting one server keeps its ports and store, so
a restarted server rejoins as the same Raft peer and catches up from its own store.

What "ready" means: every running server answers ``/healthz`` with ok (its JetStream is current with the
meta group) and they all name the same meta leader, which is one of them. A fresh cluster elects its
meta leader in 0.3-7 s (measured on 2.15.1: usually under half a second, several seconds after a split
vote); a JetStream API call made before that fails with 503 or times out, which is why ``start`` waits
for it rather than letting the first test request find out.

Raft facts worth keeping in mind (nats-server 2.15 defaults, not configurable): heartbeats every second,
an election timeout drawn from 4-9 s. So after a SIGKILL of a stream's leader its followers notice only
when their timer fires, and a new leader is there 4-10 s later (measured: 4.4-8.8 s for a stream,
5.8-7.7 s for the meta group); a clean stop (SIGTERM) makes the leader hand over first (about a second).
Tests bound their waits accordingly.

``die_with_parent`` has the caveat of ``EmbeddedNats``: the kernel signal follows the thread that started
the server, so with it, start (and restart) servers from the main thread, not through ``to_thread``.

Leader look-ups go through the JetStream API (``$JS.API.STREAM.INFO.<name>`` -> ``cluster.leader``), the
answer clients act on; the meta leader comes from the monitoring endpoint (``/jsz``), because the API
that reports it needs the system account. Process control is synchronous (as in ``EmbeddedNats``); the
look-ups that need a NATS connection are async and open a short-lived one to the running servers when
the caller passes none (the caller's connection may be the one reconnecting after a kill).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import msgspec
import structlog
from nats.aio.client import Client

from engine.store.connection import close, connect
from engine.store.embedded import EmbeddedNats, Managed, free_port
from engine.store.jetstream_api import ClusterInfo, PeerInfo, stream_info
from engine.store.settings import NatsSettings
from events.errors import DsctlError, InvalidInput, NotFound, TransientError

log = structlog.get_logger()

#: one server index (0-based) or its server_name
Which = int | str


class ServerStatus(msgspec.Struct, frozen=True, kw_only=True):
    """One server as ``status`` sees it (the future ``ops/cluster status`` prints these)."""

    name: str
    url: str
    cluster_url: str
    monitor_url: str | None
    store_dir: str
    running: bool
    pid: int | None
    #: /healthz said ok (JetStream current with the meta group)
    healthy: bool
    #: the meta leader this server believes in ("" when it knows none or is down)
    meta_leader: str


class StreamPlacement(msgspec.Struct, frozen=True, kw_only=True):
    """Where a stream lives right now: its leader ("" while it has none) and its other peers."""

    stream: str
    leader: str
    replicas: tuple[PeerInfo, ...]
    last_seq: int

    @property
    def peers(self) -> list[str]:
        return sorted([self.leader, *(p.name for p in self.replicas)] if self.leader else [])

    @property
    def all_current(self) -> bool:
        return bool(self.leader) and all(p.current and not p.offline for p in self.replicas)


class EmbeddedCluster(Managed):
    """``size`` routed nats-servers with JetStream; every wait bounded by ``ready_timeout``."""

    def __init__(
        self,
        size: int = 3,
        *,
        name: str | None = None,
        base_dir: str | Path | None = None,
        host: str = "127.0.0.1",
        binary: str | Path | None = None,
        client_ports: Sequence[int] | None = None,
        cluster_ports: Sequence[int] | None = None,
        ready_timeout: float = 30.0,
        stop_timeout: float = 5.0,
        die_with_parent: bool = False,
    ) -> None:
        """``name`` is the cluster name and the prefix of each ``server_name`` (``<name>-n1``...); the
        default is unique, so a server's readiness check never mistakes another cluster's server for
        its own. Ports default to free ones; pass them to run a cluster at known addresses."""
        if size < 1:
            raise InvalidInput(f"a cluster needs at least one server, not {size}")
        for label, ports in (("client_ports", client_ports), ("cluster_ports", cluster_ports)):
            if ports is not None and len(ports) != size:
                raise InvalidInput(f"{label} has {len(ports)} ports for {size} servers")
        self.name = name or f"dsctl-{uuid.uuid4().hex[:8]}"
        self.host = host
        self.ready_timeout = ready_timeout
        self._owns_dir = base_dir is None
        self.base_dir = Path(base_dir) if base_dir is not None else Path(tempfile.mkdtemp(prefix="dsctl-cl-"))
        self.cluster_ports = list(cluster_ports) if cluster_ports else [free_port(host) for _ in range(size)]
        routes = ",".join(f"nats://{host}:{port}" for port in self.cluster_ports)
        self.servers: tuple[EmbeddedNats, ...] = tuple(
            EmbeddedNats(
                port=client_ports[i] if client_ports else None,
                store_dir=self.base_dir / f"n{i + 1}",
                monitor=True,
                host=host,
                binary=binary,
                name=f"{self.name}-n{i + 1}",
                ready_timeout=ready_timeout,
                stop_timeout=stop_timeout,
                die_with_parent=die_with_parent,
                extra_args=self._route_args(i, routes),
            )
            for i in range(size)
        )

    def _route_args(self, i: int, routes: str) -> tuple[str, ...]:
        # command-line flags, not a config file: the routes are all a member needs, and the flags
        # show up in `ps` for whoever debugs a stuck test
        return (
            "--cluster_name", self.name,
            "--cluster", f"nats://{self.host}:{self.cluster_ports[i]}",
            "--routes", routes,
        )  # fmt: skip

    # --- addresses --------------------------------------------------------------------------------

    @property
    def size(self) -> int:
        return len(self.servers)

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    @property
    def url(self) -> str:
        """Every client URL, comma-separated (what ``NATS_URL`` takes)."""
        return ",".join(self.urls)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.servers]

    def running_names(self) -> list[str]:
        return [s.name for s in self.servers if s.running]

    def index(self, which: Which) -> int:
        if isinstance(which, int):
            if not 0 <= which < self.size:
                raise InvalidInput(f"no server {which} in a cluster of {self.size}")
            return which
        for i, s in enumerate(self.servers):
            if s.name == which:
                return i
        raise InvalidInput(f"no server named {which!r} in cluster {self.name} ({', '.join(self.names)})")

    def server(self, which: Which) -> EmbeddedNats:
        return self.servers[self.index(which)]

    # --- process control --------------------------------------------------------------------------

    def start(self) -> Self:
        """Start every server that is not running, then wait until the cluster is ready."""
        try:
            for s in self.servers:
                s.start()  # returns at the INFO line; the meta group forms after all are up
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        log.info("nats.cluster.started", cluster=self.name, urls=self.urls, meta_leader=self.meta_leader())
        return self

    def start_server(self, which: Which, *, wait: bool = True) -> None:
        """Start one (stopped or killed) server on its ports and store; with ``wait``, until the
        cluster is ready again (it has caught up with the meta group)."""
        self.server(which).start()
        if wait:
            self.wait_ready()

    def stop_server(self, which: Which) -> None:
        """SIGTERM: a clean shutdown (leaders it holds hand over first)."""
        self.server(which).stop()

    def kill(self, which: Which) -> None:
        """SIGKILL: a crash. Leaders it held are re-elected only after an election timeout."""
        s = self.server(which)
        log.info("nats.cluster.kill", server=s.name, pid=s.pid)
        s.kill()

    def restart(self, which: Which, *, crash: bool = False, wait: bool = True) -> None:
        s = self.server(which)
        s.kill() if crash else s.stop()
        self.start_server(which, wait=wait)

    def stop(self) -> None:
        """Stop every server (the store directories stay)."""
        for s in self.servers:
            s.stop()

    def close(self) -> None:
        """Stop every server and remove the store directories if this object created them."""
        self.stop()
        if self._owns_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    # --- health and the meta leader ---------------------------------------------------------------

    def _monitor(self, s: EmbeddedNats, path: str, timeout: float = 1.0) -> dict[str, Any] | None:
        """One monitoring request; None when the server does not answer, or answers not-ok."""
        if s.monitor_url is None or not s.running:
            return None
        try:
            with urllib.request.urlopen(s.monitor_url + path, timeout=timeout) as resp:
                data: dict[str, Any] = json.loads(resp.read())
                return data
        except (OSError, ValueError, urllib.error.URLError):
            # 503 from /healthz lands here too (HTTPError is an URLError): not healthy yet
            return None

    def status(self) -> list[ServerStatus]:
        out = []
        for s in self.servers:
            health = self._monitor(s, "/healthz")
            jsz = self._monitor(s, "/jsz")
            meta = ((jsz or {}).get("meta_cluster") or {}).get("leader") or ""
            out.append(
                ServerStatus(
                    name=s.name,
                    url=s.url,
                    cluster_url=f"nats://{self.host}:{self.cluster_ports[self.servers.index(s)]}",
                    monitor_url=s.monitor_url,
                    store_dir=str(s.store_dir),
                    running=s.running,
                    pid=s.pid,
                    healthy=bool(health and health.get("status") == "ok"),
                    meta_leader=str(meta),
                )
            )
        return out

    def meta_leader(self) -> str | None:
        """The meta leader every running server agrees on, or None (no leader, or no agreement yet)."""
        statuses = [st for st in self.status() if st.running]
        leaders = {st.meta_leader for st in statuses}
        if len(leaders) != 1:
            return None
        (leader,) = leaders
        return leader if leader in {st.name for st in statuses} else None

    def is_ready(self) -> bool:
        statuses = [st for st in self.status() if st.running]
        return bool(statuses) and all(st.healthy for st in statuses) and self.meta_leader() is not None

    def wait_ready(self, timeout: float | None = None) -> str:
        """Wait until every running server is healthy and they share a meta leader; return its name."""
        limit = self.ready_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.is_ready():
                leader = self.meta_leader()
                if leader is not None:
                    return leader
            time.sleep(0.1)
        states = "; ".join(
            f"{st.name} running={st.running} healthy={st.healthy} meta_leader={st.meta_leader or '-'}"
            for st in self.status()
        )
        raise TransientError(f"cluster {self.name} not ready after {limit:g}s: {states}")

    # --- stream and bucket leaders (JetStream API) ------------------------------------------------

    async def _probe(self, timeout: float) -> Client:
        urls = [s.url for s in self.servers if s.running]
        if not urls:
            raise TransientError(f"cluster {self.name}: no server is running")
        settings = NatsSettings(
            servers=urls,
            name=f"{self.name}-probe",
            connect_timeout=min(1.0, timeout),
            connect_deadline=timeout,
            reconnect_wait=0.1,
        )
        return await connect(settings)

    async def placement(
        self, stream: str, *, nc: Client | None = None, timeout: float = 2.0
    ) -> StreamPlacement:
        """The stream's leader and peers as the JetStream API reports them. Raises NotFound for a
        stream that does not exist, TransientError when no one answers (e.g. mid-election)."""
        own = nc is None
        client = await self._probe(timeout) if nc is None else nc
        try:
            info = await stream_info(client, stream, timeout=timeout)
        finally:
            if own:
                await close(client)
        cluster = info.cluster or ClusterInfo()
        return StreamPlacement(
            stream=stream, leader=cluster.leader, replicas=cluster.replicas, last_seq=info.state.last_seq
        )

    async def stream_leader(
        self, stream: str, *, nc: Client | None = None, timeout: float = 2.0
    ) -> str | None:
        """The ``server_name`` leading the stream, or None while it has none (or no one answers)."""
        try:
            leader = (await self.placement(stream, nc=nc, timeout=timeout)).leader
        except NotFound:
            raise
        except DsctlError:
            return None
        return leader or None

    async def kv_leader(self, bucket: str, *, nc: Client | None = None, timeout: float = 2.0) -> str | None:
        return await self.stream_leader(f"KV_{bucket}", nc=nc, timeout=timeout)

    async def wait_for_stream_leader(
        self,
        stream: str,
        *,
        timeout: float = 30.0,
        not_on: str | None = None,
        all_current: bool = False,
        nc: Client | None = None,
    ) -> str:
        """Wait (bounded) until the stream has a leader on a running server, other than ``not_on`` if
        given (the one just killed: its old claim can linger in a follower's answer), and with
        ``all_current`` until every peer has caught up too. Returns the leader's name."""
        deadline = time.monotonic() + timeout
        own = nc is None
        # one probe connection for the whole wait, not one per look (each would log a connect)
        client = await self._probe(timeout) if nc is None else nc
        try:
            return await self._wait_leader(stream, client, deadline, timeout, not_on, all_current)
        finally:
            if own:
                await close(client)

    async def _wait_leader(
        self, stream: str, nc: Client, deadline: float, timeout: float, not_on: str | None, all_current: bool
    ) -> str:
        last = "no answer yet"
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TransientError(f"stream {stream}: no leader within {timeout:g}s ({last})")
            try:
                # a short per-look timeout: mid-election nobody answers, and the caller measures
                # election times with this loop's resolution
                p = await self.placement(stream, nc=nc, timeout=min(1.0, max(remaining, 0.1)))
            except NotFound:
                raise
            except DsctlError as err:
                last = str(err)
            else:
                running = set(self.running_names())
                last = f"leader={p.leader or '-'} peers=" + ",".join(
                    f"{r.name}(current={r.current},offline={r.offline})" for r in p.replicas
                )
                ok = p.leader in running and p.leader != not_on
                if ok and (not all_current or p.all_current):
                    return p.leader
            await asyncio.sleep(0.1)
