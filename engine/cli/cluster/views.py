"""What the servers, streams and leases say: for ``status`` here and on real machines."""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

import msgspec
import nats.errors
from nats.aio.client import Client
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, NoKeysError

from engine.cli.cluster.layout import (
    WATCHED_STREAMS,
)
from engine.store.jetstream_api import stream_info
from engine.store.lease import NODE_LEASE_BUCKET, LeaderLease
from engine.store.settings import NatsSettings
from engine.store.streams import LEADER_BUCKET
from events.errors import DsctlError, NotFound

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
