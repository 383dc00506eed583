"""``up``, ``status`` and ``down``."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine.cli.cluster.layout import (
    REPLICAS,
    ROOT,
    STOP_TIMEOUT,
    Layout,
    default_layout,
    routes,
    server_config,
)
from engine.cli.cluster.processes import (
    PidRecord,
    Workspace,
    stop_all,
    usage,
)
from engine.cli.cluster.views import (
    LeaseView,
    StreamView,
    meta_leader,
    probe_settings,
    view_leases,
    view_server,
    view_streams,
)
from engine.cli.demo import DEMO_DIR, NAMESPACES
from engine.security import servers as server_registry
from engine.security.credentials import DIR_ENV, CredentialStore, with_credentials
from engine.security.jwt import OperatorMode
from engine.security.roles import Identity, Role
from engine.security.server_config import write_authorization, write_routes
from engine.store.connection import close, connect
from engine.store.embedded import find_binary
from engine.store.settings import NatsSettings
from engine.store.setup import ensure
from engine.store.streams import ReplicasUnavailable
from events.errors import DsctlError, TransientError

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
    """The children's environment: where the servers are and where the credentials are (a path, not
    a secret: each process finds its role's file there, ``engine/security/credentials.py``)."""
    env = dict(os.environ)
    env["NATS_URL"] = layout.url
    env["DSCTL_REPLICAS"] = str(REPLICAS)
    env.setdefault("DSCTL_LOG_FORMAT", "json")
    if layout.credentials is not None:
        env[DIR_ENV] = layout.credentials
    else:
        env.pop(DIR_ENV, None)
    return env


def credentials_dir(base: Path, env: dict[str, str] | None = None) -> Path:
    """``$DSCTL_CREDENTIALS``; else the repository's ``.dsctl/credentials`` for the default cluster
    (shared with ``dsctl up``, so the CLI finds them from the repository root); else ``<dir>/credentials``
    for a cluster elsewhere (its own keys)."""
    env = dict(os.environ) if env is None else env
    if env.get(DIR_ENV):
        return Path(env[DIR_ENV]).resolve()
    if base.resolve() == (ROOT / ".dsctl" / "cluster").resolve():
        return ROOT / ".dsctl" / "credentials"
    return base.resolve() / "credentials"


def _secure(layout: Layout) -> CredentialStore | None:
    """The roles' keys (made if missing), ``auth.conf`` and the routes' credentials, for a secure
    layout; None for an insecure one."""
    if layout.credentials is None:
        return None
    store = CredentialStore(layout.credentials)
    store.init()
    write_authorization(store)
    if OperatorMode(store).exists():
        OperatorMode(store).init()
    write_routes(store.dir / "routes.conf", routes(layout), store.dir / "route-password")
    return store


def client_settings(layout: Layout, identities: Sequence[Identity]) -> NatsSettings:
    """How this command itself connects (set-up, leases, status): the first of ``identities`` found."""
    base = NatsSettings(servers=layout.url.split(","))
    if layout.credentials is None:
        return base
    return with_credentials(base, identities, CredentialStore(layout.credentials))


ADMIN = [Identity(Role.ADMIN)]
READER = [Identity(Role.AUDITOR), Identity(Role.ADMIN)]


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
    admin = client_settings(layout, ADMIN)
    while True:
        nc = await connect(probe_settings(admin, layout.url.split(",")))
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
    nc = await connect(probe_settings(admin, layout.url.split(",")))
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
        nc = await connect(probe_settings(client_settings(layout, READER), layout.url.split(",")))
    except DsctlError as err:
        return LeaseView(engine="", revision=0, executors={}, error=str(err))
    try:
        return await view_leases(nc)
    finally:
        await close(nc)


def up(
    ws: Workspace, ports: str, lease_ttl: float, demo: bool, timeout: float, insecure: bool = False
) -> int:
    layout = ws.load()
    if layout is None:
        chosen = None if insecure else str(credentials_dir(ws.base))
        layout = default_layout(ports, lease_ttl, credentials=chosen)
        ws.save(layout)
    elif ports == "auto" or lease_ttl != layout.lease_ttl or insecure != (layout.credentials is None):
        print(
            f"note: {ws.state} exists; keeping its ports, lease TTL and "
            f"{'insecure' if layout.credentials is None else 'secure'} setting "
            "(ops/cluster down --wipe to choose again)"
        )
    server_names, proc_names = _names(layout)
    binary = str(find_binary())
    env = _child_env(layout)
    store = _secure(layout)

    for i, s in enumerate(layout.servers):
        conf = ws.base / f"n{i + 1}.conf"
        conf.write_text(
            server_config(
                layout,
                i,
                str(ws.base.resolve()),
                credentials=layout.credentials,
                # a credentials directory in operator mode: the servers trust its operator instead
                authorization="operator/server.conf"
                if store and OperatorMode(store).exists()
                else "auth.conf",
            )
        )
        rec = ws.record(s.name)
        if rec is not None:
            print(f"{s.name}: already running (pid {rec.pid})")
            continue
        rec = ws.spawn(s.name, [binary, "-c", str(conf)], env)
        if store is not None:
            server_registry.register(store, f"ops-cluster-{s.name}", rec.pid)
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
    if layout.credentials is not None and Path(layout.credentials) != ROOT / ".dsctl" / "credentials":
        print(f"export {DIR_ENV}={layout.credentials}")
    elif layout.credentials is None:
        print("# --insecure: the servers take any client, with no credentials")
    print(f"logs:   tail -f {ws.logs}/*.log")
    print("status: ops/cluster status    stop: ops/cluster down [--wipe]")
    return 0


def _apply_demo(layout: Layout, dsctl: str, env: dict[str, str]) -> None:
    """What ``dsctl up --demo`` applies, through ``dsctl apply`` (so the README walk-through matches)."""
    for path in sorted(DEMO_DIR.glob("*.yaml")):
        # the admin's credentials, found through the environment: nothing secret on the command line
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
