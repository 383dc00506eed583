"""``ops/cluster up|down|status``: a 3-node JetStream cluster and the dsctl processes around it, on
loopback, as background processes that outlive the command that started them.

Why not ``EmbeddedCluster``: it owns its servers as child processes (a pipe on stderr, a kill when the
object is collected), which is right for a test and wrong for a development cluster that must keep
running after ``up`` returns and be found again by ``status`` and ``down`` from another shell. So this
module keeps what it started in files under the cluster directory (``.dsctl/cluster`` by default,
``--dir`` or ``$DSCTL_CLUSTER_DIR``):

- ``cluster.json``: the ports and names chosen at the first ``up`` (a later ``up`` reuses them, so a
  restarted server comes back as the same Raft peer on the same routes);
- ``n1.conf``..``n3.conf``: each server's configuration, rendered by ``server_config`` (the committed
  ``ops/nats/cluster-n*.conf`` are its output for the default ports, a test keeps them equal);
- ``n1/``..``n3/``: the JetStream stores; ``logs/<name>.log``; ``run/<name>.pid``. A server's
  ``log_file`` and its stdout/stderr are the same file (both append), so a panic lands beside its log.

A pid file holds the pid *and* the process start time (``/proc/<pid>/stat`` field 22): a pid the
kernel has recycled for another program is never taken for ours, never signalled, and its stale file is
replaced. A zombie counts as gone (nothing may reap a re-parented child in a container).

The streams are created at three replicas by ``up`` itself (``engine.store.setup.ensure``, what the
engine runs), before any dsctl process starts: executors and the ingest service only check that the
store is there. The engines get ``--replicas 3`` (replicas are a floor an engine never lowers), and
every process ``DSCTL_REPLICAS=3`` in its environment.

``status`` also works against servers this module did not start (real machines, ``docs/deploy.md``):
``--nats`` and ``--monitor`` name them, and it reports what the servers and the KV buckets say.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import nats.errors
from nats.aio.client import Client
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, NoKeysError

from engine.cli.demo import DEMO_DIR, NAMESPACES
from engine.runtime import logs
from engine.store import settings as nats_settings
from engine.store.connection import close, connect
from engine.store.embedded import find_binary, free_port
from engine.store.jetstream_api import stream_info
from engine.store.lease import NODE_LEASE_BUCKET, LeaderLease
from engine.store.settings import NatsSettings
from engine.store.setup import ensure
from engine.store.streams import LEADER_BUCKET, ReplicasUnavailable
from events.errors import DsctlError, NotFound, TransientError
from events.subjects import COMMANDS_STREAM, EVENTS_STREAM

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DIR = ROOT / ".dsctl" / "cluster"
HOST = "127.0.0.1"
CLUSTER_NAME = "dsctl"
SIZE = 3
#: the default ports: client 4231-4233, routes 6231-6233, monitoring 8231-8233, engine metrics 9231-9232
CLIENT_BASE, ROUTE_BASE, HTTP_BASE, METRICS_BASE = 4231, 6231, 8231, 9231
ENGINES = 2
REPLICAS = 3
#: what ``status`` reports a leader for: the log, the commands, the engine lease
WATCHED_STREAMS = (EVENTS_STREAM, COMMANDS_STREAM, f"KV_{LEADER_BUCKET}")
#: SIGTERM, then SIGKILL after this long (the engine releases its lease, a server hands over leaders)
STOP_TIMEOUT = 10.0


class ServerPorts(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    client: int
    route: int
    http: int


class Layout(msgspec.Struct, frozen=True, kw_only=True):
    """What the first ``up`` chose, kept in ``cluster.json``."""

    cluster: str
    host: str
    servers: tuple[ServerPorts, ...]
    engine_metrics: tuple[int, ...]
    lease_ttl: float

    @property
    def url(self) -> str:
        return ",".join(f"nats://{self.host}:{s.client}" for s in self.servers)


def default_layout(ports: str = "default", lease_ttl: float = 5.0) -> Layout:
    """The fixed ports of ``ops/nats/cluster-n*.conf``, or free ones (``ports="auto"``: tests, or a
    second cluster beside the first)."""
    auto = ports == "auto"
    servers = tuple(
        ServerPorts(
            name=f"{CLUSTER_NAME}-n{i + 1}",
            client=free_port(HOST) if auto else CLIENT_BASE + i,
            route=free_port(HOST) if auto else ROUTE_BASE + i,
            http=free_port(HOST) if auto else HTTP_BASE + i,
        )
        for i in range(SIZE)
    )
    metrics = tuple(free_port(HOST) if auto else METRICS_BASE + i for i in range(ENGINES))
    return Layout(
        cluster=CLUSTER_NAME, host=HOST, servers=servers, engine_metrics=metrics, lease_ttl=lease_ttl
    )


def server_config(layout: Layout, index: int, root: str) -> str:
    """One server's configuration file. ``root`` is where stores and logs go (``.dsctl/cluster`` in the
    committed files, relative to the repository root; an absolute directory when ``up`` renders it)."""
    me = layout.servers[index]
    routes = "\n".join(f"    nats-route://{layout.host}:{s.route}" for s in layout.servers)
    url = ",".join(f"nats://{layout.host}:{s.client}" for s in layout.servers)
    return f"""\
# Server {index + 1} of dsctl's 3-node JetStream cluster on one machine (`ops/cluster up` renders this
# file for its ports and directory; these are the defaults). By hand, from the repository root (the
# server does not create its log's directory):
#   mkdir -p {root}/logs && nats-server -c ops/nats/cluster-n{index + 1}.conf
# Clients: NATS_URL={url}
# Streams are made R3 by `ops/cluster up` (or `dsctl engine run --replicas 3`); the definitions in
# ops/streams say 1, a floor that never scales a stream down.
server_name: {me.name}
listen: {layout.host}:{me.client}
# monitoring: /healthz and /jsz are what `ops/cluster status` reads
http: {layout.host}:{me.http}
log_file: "{root}/logs/{me.name}.log"

jetstream {{
  store_dir: "{root}/n{index + 1}"
}}

cluster {{
  name: {layout.cluster}
  listen: {layout.host}:{me.route}
  # every member lists every route, itself included (a server skips the route to itself)
  routes: [
{routes}
  ]
}}
"""


# --- processes ------------------------------------------------------------------------------------


class PidRecord(msgspec.Struct, frozen=True, kw_only=True):
    pid: int
    #: /proc/<pid>/stat field 22 (clock ticks after boot): tells our process from a recycled pid
    start: int
    argv: list[str]


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after its closing one
    return raw[raw.rindex(")") + 2 :].split()


def start_time(pid: int) -> int | None:
    fields = _stat(pid)
    return None if fields is None else int(fields[19])


def alive(rec: PidRecord) -> bool:
    """The process is running, and it is the one we started (same start time); a zombie is not."""
    fields = _stat(rec.pid)
    return fields is not None and fields[0] not in ("Z", "X") and int(fields[19]) == rec.start


def usage(pid: int) -> tuple[int, float] | None:
    """(RSS in KiB, CPU seconds used so far) of a live process."""
    fields = _stat(pid)
    if fields is None:
        return None
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    rss = 0
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return rss, cpu


class Workspace:
    """The cluster directory: layout, configs, pid files, logs, stores."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.state = base / "cluster.json"
        self.run = base / "run"
        self.logs = base / "logs"

    def load(self) -> Layout | None:
        try:
            return msgspec.json.decode(self.state.read_bytes(), type=Layout)
        except FileNotFoundError:
            return None

    def save(self, layout: Layout) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        self.state.write_bytes(msgspec.json.format(msgspec.json.encode(layout)))

    def pid_file(self, name: str) -> Path:
        return self.run / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def record(self, name: str) -> PidRecord | None:
        """The live process recorded for ``name``; a stale file (gone, or a recycled pid) is removed."""
        path = self.pid_file(name)
        try:
            rec = msgspec.json.decode(path.read_bytes(), type=PidRecord)
        except FileNotFoundError:
            return None
        except msgspec.DecodeError:
            path.unlink(missing_ok=True)
            return None
        if alive(rec):
            return rec
        path.unlink(missing_ok=True)
        return None

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> PidRecord:
        """Start ``argv`` in its own session (Ctrl-C in this terminal does not reach it), output to its
        log, and record it. It is re-parented when this command exits; ``down`` stops it."""
        self.run.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.log_file(name), "ab") as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env=env,
                start_new_session=True,
            )
        started = start_time(proc.pid)
        rec = PidRecord(pid=proc.pid, start=started if started is not None else -1, argv=argv)
        tmp = self.pid_file(name).with_suffix(".tmp")
        tmp.write_bytes(msgspec.json.encode(rec))
        tmp.replace(self.pid_file(name))
        return rec

    def log_tail(self, name: str, lines: int = 10) -> str:
        try:
            return "\n".join(self.log_file(name).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def stop_all(ws: Workspace, names: Sequence[str], timeout: float = STOP_TIMEOUT) -> list[str]:
    """SIGTERM every recorded live process of ``names`` at once, SIGKILL what is left after ``timeout``;
    returns the names that had to be killed. Only pids whose start time matches are signalled."""
    recs = {n: r for n in names if (r := ws.record(n)) is not None}
    for rec in recs.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(rec.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(r) for r in recs.values()):
        time.sleep(0.1)
    killed = []
    for name, rec in recs.items():
        if alive(rec):
            killed.append(name)
            with contextlib.suppress(ProcessLookupError):
                os.kill(rec.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and any(alive(r) for r in recs.values()):
        time.sleep(0.05)
    for name, rec in recs.items():
        if not alive(rec):
            ws.pid_file(name).unlink(missing_ok=True)
    return killed


# --- what the servers say -------------------------------------------------------------------------


def monitor(url: str, path: str, timeout: float = 1.0) -> dict[str, Any] | None:
    """One monitoring request; None when the server does not answer or answers not-ok (/healthz 503)."""
    try:
        with urllib.request.urlopen(url + path, timeout=timeout) as resp:
            data: dict[str, Any] = json.loads(resp.read())
            return data
    except (OSError, ValueError, urllib.error.URLError):
        return None


class ServerView(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    monitor_url: str
    healthy: bool
    #: the server_name answering on the monitoring port ("" when none does)
    answers_as: str
    meta_leader: str
    #: client URLs the server advertises (its own and its peers'): what a client's INFO will list
    connect_urls: int = 0


def view_server(name: str, monitor_url: str) -> ServerView:
    health = monitor(monitor_url, "/healthz")
    jsz = monitor(monitor_url, "/jsz") or {}
    varz = monitor(monitor_url, "/varz") or {}
    return ServerView(
        name=name,
        monitor_url=monitor_url,
        healthy=bool(health and health.get("status") == "ok"),
        answers_as=str(varz.get("server_name") or ""),
        meta_leader=str((jsz.get("meta_cluster") or {}).get("leader") or ""),
        connect_urls=len(varz.get("connect_urls") or []),
    )


def meta_leader(views: Sequence[ServerView]) -> str | None:
    """The meta leader every answering server names, if they agree and it is one of them."""
    up = [v for v in views if v.answers_as]
    leaders = {v.meta_leader for v in up}
    if not up or len(leaders) != 1:
        return None
    (leader,) = leaders
    return leader if leader in {v.answers_as for v in up} else None


class StreamView(msgspec.Struct, frozen=True, kw_only=True):
    stream: str
    leader: str
    replicas: int
    current: int
    last_seq: int
    error: str = ""


class LeaseView(msgspec.Struct, frozen=True, kw_only=True):
    engine: str
    revision: int
    executors: dict[str, str]
    error: str = ""


async def view_streams(nc: Client) -> list[StreamView]:
    out = []
    for name in WATCHED_STREAMS:
        try:
            info = await stream_info(nc, name, timeout=2.0)
        except NotFound:
            out.append(StreamView(stream=name, leader="", replicas=0, current=0, last_seq=0, error="absent"))
            continue
        except DsctlError as err:
            out.append(StreamView(stream=name, leader="", replicas=0, current=0, last_seq=0, error=str(err)))
            continue
        peers = info.cluster.replicas if info.cluster else ()
        out.append(
            StreamView(
                stream=name,
                leader=info.cluster.leader if info.cluster else "",
                replicas=int(info.config.get("num_replicas", 1)),
                current=sum(1 for p in peers if p.current and not p.offline) + 1,
                last_seq=info.state.last_seq,
            )
        )
    return out


async def view_leases(nc: Client) -> LeaseView:
    """Who holds the engine lease (``dse_leader``) and every executor lease (``dse_node_leases``)."""
    js = nc.jetstream()
    engine, revision, executors = "", 0, {}
    try:
        held = await LeaderLease(await js.key_value(LEADER_BUCKET), "ops-cluster-status", 1.0).current()
        if held is not None:
            engine, revision = held
        kv = await js.key_value(NODE_LEASE_BUCKET)
        with contextlib.suppress(NoKeysError):
            for key in await kv.keys():
                with contextlib.suppress(KeyNotFoundError):
                    entry = await kv.get(key)
                    if entry.value:
                        executors[key] = entry.value.decode(errors="replace")
    except BucketNotFoundError as err:
        return LeaseView(
            engine=engine, revision=revision, executors=executors, error=f"bucket missing: {err}"
        )
    except (DsctlError, nats.errors.Error, OSError, TimeoutError) as err:
        return LeaseView(
            engine=engine, revision=revision, executors=executors, error=str(err) or type(err).__name__
        )
    return LeaseView(engine=engine, revision=revision, executors=executors)


def probe_settings(base: NatsSettings, urls: Sequence[str]) -> NatsSettings:
    """A short-lived connection: fail fast on a cluster that is down instead of retrying for long."""
    return msgspec.structs.replace(
        base,
        servers=list(urls),
        name="ops-cluster",
        connect_timeout=1.0,
        connect_deadline=3.0,
        reconnect_wait=0.2,
    )


# --- up -------------------------------------------------------------------------------------------


def _names(layout: Layout) -> tuple[list[str], list[str]]:
    servers = [s.name for s in layout.servers]
    procs = [f"engine-{i + 1}" for i in range(len(layout.engine_metrics))] + ["executor-fleet", "ingest"]
    return servers, procs


def _process_argv(layout: Layout, name: str, dsctl: str) -> list[str]:
    common = ["--nats", layout.url]
    if name.startswith("engine-"):
        i = int(name.split("-")[1]) - 1
        return [dsctl, "engine", "run", *common, "--identity", name, "--replicas", str(REPLICAS),
                "--lease-ttl", f"{layout.lease_ttl:g}",
                "--metrics-port", str(layout.engine_metrics[i])]  # fmt: skip
    if name == "executor-fleet":
        return [dsctl, "executor", "run", *common, "--fleet", "--driver", "sim"]
    return [dsctl, "ingest", "run", *common]


def _child_env(layout: Layout) -> dict[str, str]:
    env = dict(os.environ)
    env["NATS_URL"] = layout.url
    env["DSCTL_REPLICAS"] = str(REPLICAS)
    env.setdefault("DSCTL_LOG_FORMAT", "json")
    return env


class UpFailed(DsctlError):
    pass


def _wait(what: str, check: Any, timeout: float, ws: Workspace, watched: Sequence[str]) -> Any:
    """Poll ``check`` until it returns something truthy; fail early (with its log) if a watched
    process exits meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        for name in watched:
            if ws.record(name) is None:
                raise UpFailed(f"{name} exited while waiting for {what}; its log ends:\n{ws.log_tail(name)}")
        time.sleep(0.2)
    raise UpFailed(f"no {what} within {timeout:g}s")


async def _prepare_streams(layout: Layout, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        nc = await connect(probe_settings(NatsSettings(), layout.url.split(",")))
        try:
            await ensure(nc, lease_ttl=layout.lease_ttl, replicas=REPLICAS)
            break
        except (ReplicasUnavailable, TransientError):
            # a cluster seconds old: the INFO this connection got may predate a peer's route, and a
            # create may time out while the meta group settles (ensure is idempotent): ask again
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.3)
        finally:
            await close(nc)
    nc = await connect(probe_settings(NatsSettings(), layout.url.split(",")))
    try:
        # a new R3 stream answers only once its own group has elected: wait for every leader
        while True:
            views = await view_streams(nc)
            if all(v.leader for v in views):
                return
            if time.monotonic() > deadline:
                raise UpFailed(
                    "streams without a leader: " + ", ".join(v.stream for v in views if not v.leader)
                )
            await asyncio.sleep(0.2)
    finally:
        await close(nc)


async def _leases(layout: Layout) -> LeaseView:
    try:
        nc = await connect(probe_settings(NatsSettings(), layout.url.split(",")))
    except DsctlError as err:
        return LeaseView(engine="", revision=0, executors={}, error=str(err))
    try:
        return await view_leases(nc)
    finally:
        await close(nc)


def up(ws: Workspace, ports: str, lease_ttl: float, demo: bool, timeout: float) -> int:
    layout = ws.load()
    if layout is None:
        layout = default_layout(ports, lease_ttl)
        ws.save(layout)
    elif ports == "auto" or lease_ttl != layout.lease_ttl:
        print(
            f"note: {ws.state} exists; keeping its ports and lease TTL "
            "(ops/cluster down --wipe to choose again)"
        )
    server_names, proc_names = _names(layout)
    binary = str(find_binary())
    env = _child_env(layout)

    for i, s in enumerate(layout.servers):
        conf = ws.base / f"n{i + 1}.conf"
        conf.write_text(server_config(layout, i, str(ws.base.resolve())))
        rec = ws.record(s.name)
        if rec is not None:
            print(f"{s.name}: already running (pid {rec.pid})")
            continue
        rec = ws.spawn(s.name, [binary, "-c", str(conf)], env)
        print(
            f"{s.name}: started (pid {rec.pid}) client {layout.host}:{s.client} "
            f"routes :{s.route} http :{s.http}"
        )

    monitors = [(s.name, f"http://{layout.host}:{s.http}") for s in layout.servers]

    def ready() -> str | None:
        views = [view_server(n, m) for n, m in monitors]
        # every server must also advertise all peers: ``ensure`` counts the cluster from the INFO a
        # client gets, and a server that has not heard of a peer yet would make R3 look unplaceable
        ok = all(v.healthy and v.answers_as == v.name and v.connect_urls >= len(monitors) for v in views)
        return meta_leader(views) if ok else None

    leader = _wait("JetStream meta leader", ready, timeout, ws, server_names)
    print(f"meta leader: {leader}")
    asyncio.run(_prepare_streams(layout, timeout))
    print(f"streams and buckets at R{REPLICAS}")

    dsctl = str(Path(sys.executable).parent / "dsctl")
    for name in proc_names:
        rec = ws.record(name)
        if rec is not None:
            print(f"{name}: already running (pid {rec.pid})")
            continue
        rec = ws.spawn(name, _process_argv(layout, name, dsctl), env)
        print(f"{name}: started (pid {rec.pid})")

    engines = [n for n in proc_names if n.startswith("engine-")]

    def leading() -> LeaseView | None:
        view = asyncio.run(_leases(layout))
        return view if view.engine in engines and "_fleet" in view.executors else None

    lease = _wait("leading engine and fleet executor", leading, timeout, ws, proc_names)
    print(f"leading engine: {lease.engine}; fleet executor: {lease.executors['_fleet']}")
    if demo:
        _apply_demo(layout, dsctl, env)
    print()
    print(f"export NATS_URL={layout.url}")
    print(f"logs:   tail -f {ws.logs}/*.log")
    print("status: ops/cluster status    stop: ops/cluster down [--wipe]")
    return 0


def _apply_demo(layout: Layout, dsctl: str, env: dict[str, str]) -> None:
    """What ``dsctl up --demo`` applies, through ``dsctl apply`` (so the README walk-through matches)."""
    for path in sorted(DEMO_DIR.glob("*.yaml")):
        argv = [dsctl, "apply", "--nats", layout.url, "-f", str(path)]
        if path.name in NAMESPACES:
            argv += ["-n", NAMESPACES[path.name]]
        out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
        for line in (out.stdout + out.stderr).splitlines():
            print(f"  {path.name}: {line}")
        if out.returncode != 0:
            raise UpFailed(f"applying {path.name} failed")


# --- status ---------------------------------------------------------------------------------------


def _fmt_usage(pid: int | None, before: dict[int, float], interval: float) -> tuple[str, str]:
    got = usage(pid) if pid is not None else None
    if got is None:
        return "-", "-"
    rss, cpu = got
    if interval > 0 and pid in before:
        return f"{rss / 1024:.0f}M", f"{100 * (cpu - before[pid]) / interval:.1f}%"
    return f"{rss / 1024:.0f}M", f"{cpu:.1f}s"


def _table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def status(
    ws: Workspace | None,
    layout: Layout | None,
    monitors: list[tuple[str, str]],
    settings: NatsSettings,
    cpu_interval: float,
) -> int:
    """Print the servers, stream leaders, processes and leases; exit 0 only when every server is
    healthy, they agree on a meta leader, every watched stream has a leader and an engine leads."""
    records: dict[str, PidRecord | None] = {}
    server_names, proc_names = _names(layout) if layout is not None else ([], [])
    if ws is not None:
        records = {n: ws.record(n) for n in [*server_names, *proc_names]}
    before: dict[int, float] = {}
    if cpu_interval > 0:
        for rec in records.values():
            if rec is not None and (got := usage(rec.pid)) is not None:
                before[rec.pid] = got[1]
        time.sleep(cpu_interval)
    cpu_head = f"CPU({cpu_interval:g}s)" if cpu_interval > 0 else "CPU-TIME"

    views = [view_server(n, m) for n, m in monitors]
    leader = meta_leader(views)
    rows = [["SERVER", "STATE", "PID", "CLIENT", "HEALTHZ", "META-LEADER", "RSS", cpu_head]]
    for v, url in zip(views, settings.servers, strict=False):
        rec = records.get(v.name)
        pid = rec.pid if rec else None
        up_ = bool(v.answers_as) or rec is not None
        rss, cpu = _fmt_usage(pid, before, cpu_interval)
        rows.append([v.answers_as or v.name, "up" if up_ else "down", str(pid or "-"), url,
                     "ok" if v.healthy else "-", v.meta_leader or "-", rss, cpu])  # fmt: skip
    # servers elsewhere (--monitor, listed in the order of --nats): no pids or usage to show
    _table(rows if ws is not None else [[r[0], r[1], r[3], r[4], r[5]] for r in rows])
    healthy = all(v.healthy for v in views) and leader is not None
    print(f"meta leader: {leader or 'none agreed'}")
    print()

    async def look() -> tuple[list[StreamView], LeaseView] | str:
        try:
            nc = await connect(probe_settings(settings, settings.servers))
        except DsctlError as err:
            return str(err)
        try:
            return await view_streams(nc), await view_leases(nc)
        finally:
            await close(nc)

    looked = asyncio.run(look())
    if isinstance(looked, str):
        print(f"no connection to the cluster: {looked}")
        streams: list[StreamView] = []
        leases = LeaseView(engine="", revision=0, executors={}, error="")
        healthy = False
    else:
        streams, leases = looked
        rows = [["STREAM", "LEADER", "REPLICAS", "CURRENT", "LAST-SEQ"]]
        for s in streams:
            leader = s.leader or f"- {s.error}".rstrip()
            rows.append([s.stream, leader, str(s.replicas), str(s.current), str(s.last_seq)])
        _table(rows)
        healthy = healthy and all(s.leader for s in streams)
    print()

    if ws is not None and proc_names:
        rows = [["PROCESS", "STATE", "PID", "RSS", cpu_head]]
        for name in proc_names:
            rec = records.get(name)
            rss, cpu = _fmt_usage(rec.pid if rec else None, before, cpu_interval)
            rows.append([name, "up" if rec else "down", str(rec.pid) if rec else "-", rss, cpu])
        _table(rows)
        print()
    if isinstance(looked, str):
        return 1
    revision = f" (lease revision {leases.revision})" if leases.engine else ""
    print(f"leading engine: {leases.engine or 'none'}{revision}")
    held = ", ".join(f"{k} by {v}" for k, v in sorted(leases.executors.items())) or "none"
    print(f"executor leases: {held}")
    if leases.error:
        print(f"leases: {leases.error}")
    return 0 if healthy and leases.engine else 1


# --- down -----------------------------------------------------------------------------------------


def down(ws: Workspace, wipe: bool) -> int:
    layout = ws.load()
    if layout is None:
        print(f"no cluster in {ws.base}")
        return 0
    server_names, proc_names = _names(layout)
    # the dsctl processes first (an engine releases its lease while the store is there), then servers
    for group in (proc_names, server_names):
        running = [n for n in group if ws.record(n) is not None]
        killed = stop_all(ws, group)
        for name in running:
            how = f"killed after {STOP_TIMEOUT:g}s" if name in killed else "stopped"
            print(f"{name}: {how}")
    left = [n for n in [*proc_names, *server_names] if ws.record(n) is not None]
    if left:
        print(f"still running: {', '.join(left)}")
        return 1
    if wipe:
        shutil.rmtree(ws.base, ignore_errors=True)
        print(f"removed {ws.base}")
    return 0


# --- command line ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ops/cluster",
        description="A 3-node JetStream cluster with two engines, a simulated fleet executor and the "
        "ingest service on loopback, as background processes (development and tests).",
    )
    parser.add_argument(
        "--dir", default=os.environ.get("DSCTL_CLUSTER_DIR", str(DEFAULT_DIR)),
        help="stores, logs, pid files [$DSCTL_CLUSTER_DIR or .dsctl/cluster]",
    )  # fmt: skip
    sub = parser.add_subparsers(dest="action", required=True)
    p_up = sub.add_parser("up", help="start what is not running; wait for a meta leader and a leading engine")
    p_up.add_argument(
        "--ports", choices=["default", "auto"], default=os.environ.get("DSCTL_CLUSTER_PORTS", "default"),
        help="default: client 4231-4233, routes 6231-6233, http 8231-8233, metrics 9231-9232; auto: free "
        "ports (kept in cluster.json until down --wipe) [$DSCTL_CLUSTER_PORTS or default]",
    )  # fmt: skip
    p_up.add_argument("--lease-ttl", type=float, default=5.0, help="engine leader lease TTL in seconds [5]")
    p_up.add_argument("--demo", action="store_true", help="apply ops/demo/ as dsctl up --demo does")
    p_up.add_argument("--timeout", type=float, default=45.0, help="bound on each wait [45]")
    p_status = sub.add_parser(
        "status", help="servers, stream leaders, processes, leases (exit 1 unless healthy and led)"
    )
    p_status.add_argument(
        "--cpu", type=float, default=0.0, metavar="SECONDS",
        help="sample CPU use over this long (default: total CPU seconds so far)",
    )  # fmt: skip
    p_status.add_argument(
        "--monitor", metavar="URL[,URL...]",
        help="servers not started here: their monitoring URLs (http://host:8222), with --nats",
    )  # fmt: skip
    nats_settings.add_arguments(p_status)
    p_down = sub.add_parser("down", help="SIGTERM everything, SIGKILL after 10 s")
    p_down.add_argument("--wipe", action="store_true", help="also delete the stores, logs and configs")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(level="error" if "DSCTL_LOG_LEVEL" not in os.environ else None)
    ws = Workspace(Path(args.dir))
    try:
        if args.action == "up":
            return up(ws, args.ports, args.lease_ttl, args.demo, args.timeout)
        if args.action == "down":
            return down(ws, args.wipe)
        if args.monitor:
            settings = nats_settings.from_args(args)
            monitors = [(u, u.rstrip("/")) for u in nats_settings.split_urls(args.monitor)]
            return status(None, None, monitors, settings, args.cpu)
        layout = ws.load()
        if layout is None:
            print(f"no cluster in {ws.base} (ops/cluster up starts one)")
            return 1
        print(f"cluster {layout.cluster} in {ws.base}")
        print(f"NATS_URL={layout.url}")
        monitors = [(s.name, f"http://{layout.host}:{s.http}") for s in layout.servers]
        settings = NatsSettings(servers=layout.url.split(","))
        return status(ws, layout, monitors, settings, args.cpu)
    except DsctlError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # `ops/cluster status | head`: the reader went away, nothing left to say
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
