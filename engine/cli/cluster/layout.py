"""The cluster's shape: names, ports, the cluster directory, and each server's configuration file."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from engine.store.embedded import free_port
from engine.store.streams import LEADER_BUCKET
from events.subjects import COMMANDS_STREAM, EVENTS_STREAM

ROOT = Path(__file__).resolve().parents[3]
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
    #: the credentials directory the servers require keys from (None: ``--insecure``, anyone connects)
    credentials: str | None = None

    @property
    def url(self) -> str:
        return ",".join(f"nats://{self.host}:{s.client}" for s in self.servers)


def default_layout(ports: str = "default", lease_ttl: float = 5.0, credentials: str | None = None) -> Layout:
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
        cluster=CLUSTER_NAME,
        host=HOST,
        servers=servers,
        engine_metrics=metrics,
        lease_ttl=lease_ttl,
        credentials=credentials,
    )


def routes(layout: Layout) -> list[str]:
    """Every member's route address (``host:port``)."""
    return [f"{layout.host}:{s.route}" for s in layout.servers]


def _include(path: str, config_dir: str) -> str:
    # nats-server resolves an include relative to the including file's directory (absolute or not),
    # so the path is written relative to where the file lives
    return os.path.relpath(path, config_dir)


def server_config(
    layout: Layout,
    index: int,
    root: str,
    *,
    credentials: str | None = None,
    config_dir: str | None = None,
    authorization: str = "auth.conf",
) -> str:
    """One server's configuration file. ``root`` is where stores and logs go (``.dsctl/cluster`` in the
    committed files, relative to the repository root; an absolute directory when ``up`` renders it).
    With ``credentials`` (a directory) the server requires the roles' nkeys (its ``auth.conf``) and its
    routes authenticate (``routes.conf``), both included by a path relative to ``config_dir``, where
    the file lives (``ops/nats`` for the committed ones); without, it takes anyone. ``authorization`` is
    the file of the credentials directory that says who may connect (``operator/server.conf`` in
    operator mode)."""
    me = layout.servers[index]
    url = ",".join(f"nats://{layout.host}:{s.client}" for s in layout.servers)
    where = root if config_dir is None else config_dir
    if credentials is not None:
        auth = f"""\
# Clients authenticate with nkeys, one per role, each allowed only the subjects of its job; the users
# and their permissions (public keys only) are in auth.conf, written with the keys by `ops/cluster up`
# or `dsctl admin credentials` (docs/deploy.md, "Roles and credentials").
include "{_include(f"{credentials}/{authorization}", where)}"
"""
        cluster_routes = f"""\
  # the route user, its password and every member's route URL with it (a server skips the route to
  # itself); a secret, so in a file of its own (0600), written by `ops/cluster up`
  include "{_include(f"{credentials}/routes.conf", where)}"
"""
    else:
        auth = "# --insecure: no authorisation, any client may do anything (experiments only)\n"
        lines = "\n".join(f"    nats-route://{layout.host}:{s.route}" for s in layout.servers)
        cluster_routes = f"""\
  # every member lists every route, itself included (a server skips the route to itself)
  routes: [
{lines}
  ]
"""
    return f"""\
# Server {index + 1} of dsctl's 3-node JetStream cluster on one machine (`ops/cluster up` renders this
# file for its ports and directory; these are the defaults). By hand, from the repository root, after
# `ops/cluster up` has written the included files once (the server does not create its log's
# directory):
#   mkdir -p {root}/logs && nats-server -c ops/nats/cluster-n{index + 1}.conf
# Clients: NATS_URL={url}
# Streams are made R3 by `ops/cluster up` (or `dsctl engine run --replicas 3`); the definitions in
# ops/streams say 1, a floor that never scales a stream down.
server_name: {me.name}
listen: {layout.host}:{me.client}
# monitoring: /healthz and /jsz are what `ops/cluster status` reads (no authentication: loopback)
http: {layout.host}:{me.http}
log_file: "{root}/logs/{me.name}.log"
{auth}
jetstream {{
  store_dir: "{root}/n{index + 1}"
}}

cluster {{
  name: {layout.cluster}
  listen: {layout.host}:{me.route}
{cluster_routes}}}
"""
