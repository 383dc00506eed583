"""Who sets the store up: ``ensure`` for the engine and ``dsctl admin streams``, ``check`` for the rest.

Why two: every process used to apply every definition at start-up, so the last one to start decided the
store's settings. ``dsctl engine run --lease-ttl 2`` followed by ``dsctl executor run --fleet`` put the
leader bucket's TTL back to the file's 5 s, and an executor that did not know the store was deployed at
R3 had to be kept from scaling it down by a special rule. Now only a process that *owns* the store's
shape writes it:

- ``ensure(nc, replicas=, lease_ttl=)``: the engine (``dsctl engine run``, ``dsctl up``) and ``dsctl
  admin streams``. Creates what is missing, repairs the fields that are ours, keeps the operator's
  (``engine/store/streams.py`` says which are which), raises replicas to ``replicas`` (a floor, never
  lowered), and refuses up front, with the cluster's size in the message, a replica count the cluster
  cannot place. A TTL is rewritten only when asked for explicitly (``lease_ttl``); without it the
  leader bucket keeps the TTL it has, and the caller runs with that (``SetupReport.lease_ttl``).
  Without ``replicas``, what ensure creates gets the replica count the existing resources have (the
  lowest), so an engine restarted without ``--replicas`` does not add an R1 bucket to an R3 store.
- ``check(nc, needs=)``: executors, the ingest service, the CLI. Reads only. A missing stream or bucket
  is ``MissingStreams``, naming each and saying how to create them; a difference is logged as a warning
  (ours) or at info level (the operator's) and never "fixed": the engine that owns the store may be
  running another version of the definitions.

The cluster's size comes from the INFO the connected server sent (no ``cluster``: a single server,
which JetStream runs in non-clustered mode, 1; else the servers advertising client URLs). The JetStream
API has no call an ordinary account may use for it; when the INFO does not say (``no_advertise``), the
server's own refusal of the placement is turned into the same error.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any

import msgspec
import structlog
from nats.aio.client import Client

from engine.store.definitions import CHECKPOINT_BUCKET
from engine.store.jetstream_api import api_request, stream_info
from engine.store.lease import NODE_LEASE_BUCKET
from engine.store.streams import (
    COMMANDS_STREAM,
    EVENTS_STREAM,
    LEADER_BUCKET,
    REJECTED_STREAM,
    SNAPSHOT_STORE,
    ApplyReport,
    Definition,
    KvDefinition,
    ReplicasUnavailable,
    apply_definitions,
    load_definitions,
    with_kv_ttl,
    with_replicas,
)
from events.errors import InvalidInput, NotFound, TransientError

log = structlog.get_logger("dsctl.streams")

#: JetStream keeps at most five copies of a stream
MAX_REPLICAS = 5
LEADER_STREAM = f"KV_{LEADER_BUCKET}"
#: what an executor reads and writes: the log, its commands, its lease, its checkpoint
EXECUTOR_NEEDS = (EVENTS_STREAM, COMMANDS_STREAM, f"KV_{NODE_LEASE_BUCKET}", f"KV_{CHECKPOINT_BUCKET}")
#: what the ingest service appends to
INGEST_NEEDS = (EVENTS_STREAM, REJECTED_STREAM)
_NS = 1_000_000_000


class MissingStreams(NotFound):
    """Streams or buckets a process needs are not there, and it is not the one to create them."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        listed = ", ".join(describe_resource(n) for n in names)
        super().__init__(
            f"missing in NATS: {listed}. Only the engine creates them: start one (`dsctl engine run` or "
            "`dsctl up`), or create them with `dsctl admin streams`"
        )


class SetupReport(msgspec.Struct, kw_only=True):
    streams: ApplyReport
    #: the replica count asked for (or taken from the store); existing resources may have more
    replicas: int
    #: the leader lease TTL the store has now (seconds): what the engine must run with
    lease_ttl: float
    dry_run: bool = False


def describe_resource(stream: str) -> str:
    """A stream's name the way an operator knows it: buckets and object stores by their bucket."""
    if stream.startswith("KV_"):
        return f"bucket {stream[3:]} (stream {stream})"
    if stream.startswith("OBJ_"):
        return f"object store {stream[4:]} (stream {stream})"
    return f"stream {stream}"


def check_replicas(replicas: int, where: str = "--replicas") -> int:
    if not 1 <= replicas <= MAX_REPLICAS:
        raise InvalidInput(
            f"{replicas} is not a replica count: JetStream keeps 1 to {MAX_REPLICAS} copies", where
        )
    return replicas


def cluster_size(nc: Client) -> int | None:
    """How many servers the connected JetStream cluster has, from the server's INFO (module
    docstring); None when it does not say."""
    # nats-py keeps the INFO it connected with and has no public accessor for it
    info: dict[str, Any] = getattr(nc, "_server_info", None) or {}
    if not info.get("cluster"):
        return 1
    urls = info.get("connect_urls") or []
    return len(set(urls)) or None


def all_definitions() -> list[Definition]:
    """The files in ``ops/streams`` and the snapshot object store."""
    return [*load_definitions(), SNAPSHOT_STORE]


async def _store_replicas(nc: Client, defs: Sequence[Definition], timeout: float) -> int:
    """The lowest replica count among the resources that exist (1 on a fresh store)."""
    counts = []
    for d in defs:
        try:
            counts.append(
                int((await stream_info(nc, d.name, timeout=timeout)).config.get("num_replicas") or 1)
            )
        except NotFound:
            continue
    return min(counts, default=1)


async def _leader_ttl(nc: Client, defs: Sequence[Definition], timeout: float) -> float:
    try:
        max_age = (await stream_info(nc, LEADER_STREAM, timeout=timeout)).config.get("max_age")
        ttl = float(max_age or 0) / _NS
    except NotFound:
        # a dry run on a fresh store: what ensure would create
        ttl = next(d.ttl for d in defs if isinstance(d, KvDefinition) and d.name == LEADER_STREAM)
    if ttl <= 0:
        raise InvalidInput(
            f"bucket {LEADER_BUCKET} has no TTL, so a dead leader's lease would never expire: start the "
            "engine with --lease-ttl SECONDS (or `dsctl admin streams --lease-ttl SECONDS`)"
        )
    return ttl


#: how long a cluster that refuses a placement gets to finish forming (peers still joining)
PLACEMENT_GRACE = 10.0


async def ensure(
    nc: Client,
    *,
    replicas: int | None = None,
    lease_ttl: float | None = None,
    node_lease_ttl: float | None = None,
    dry_run: bool = False,
    strict: bool = True,
    timeout: float = 5.0,
    placement_grace: float = PLACEMENT_GRACE,
) -> SetupReport:
    """Create and repair every stream, bucket and the snapshot object store (module docstring).

    Raises ``ReplicasUnavailable`` when what must be created or raised needs more servers than the
    cluster has: at once on a single server, after ``placement_grace`` seconds of refusals on a
    cluster (one still forming refuses for a moment too); and (``strict``) ``StreamDriftError`` on
    drift the server cannot fix. ``dry_run`` plans only: the report lists what is missing and what
    would change.
    """
    if lease_ttl is not None and lease_ttl <= 0:
        raise InvalidInput(f"{lease_ttl} must be greater than 0", "--lease-ttl")
    if node_lease_ttl is not None and node_lease_ttl <= 0:
        raise InvalidInput(f"{node_lease_ttl} must be greater than 0", "--node-lease-ttl")
    defs = all_definitions()
    pinned: set[str] = set()
    if lease_ttl is not None:
        defs = with_kv_ttl(defs, LEADER_BUCKET, lease_ttl)
        pinned.add(f"{LEADER_STREAM}.max_age")
    if node_lease_ttl is not None:
        # an executor renews its node's key every third of this: at 10,000 nodes and 5 s that is
        # 6,000 replicated writes a second; a large fleet sets 30-40 s (docs/deploy.md)
        defs = with_kv_ttl(defs, NODE_LEASE_BUCKET, node_lease_ttl)
        pinned.add(f"KV_{NODE_LEASE_BUCKET}.max_age")
    count = check_replicas(replicas) if replicas is not None else await _store_replicas(nc, defs, timeout)
    defs = with_replicas(defs, count)
    plan = await apply_definitions(nc, defs, strict=False, dry_run=True, pinned=pinned, timeout=timeout)
    placing = bool(plan.missing) or any(d.field == "num_replicas" for d in plan.pending)
    servers = cluster_size(nc) if count > 1 and placing else None
    if servers == 1 or (dry_run and servers is not None and servers < count):
        # a single server is definitive; a cluster's INFO is only what it knew when we connected
        raise ReplicasUnavailable(count, servers)
    if dry_run:
        report = plan
    else:
        report = await _placed(
            lambda: apply_definitions(nc, defs, strict=strict, pinned=pinned, timeout=timeout),
            count,
            servers,
            placement_grace,
        )
    if not dry_run:
        await remove_legacy_consumers(nc, timeout)
    ttl = lease_ttl if lease_ttl is not None else await _leader_ttl(nc, defs, timeout)
    return SetupReport(streams=report, replicas=count, lease_ttl=ttl, dry_run=dry_run)


#: what executors before the command feed left on DSE_COMMANDS: one durable per node (``exec-<node>``)
#: or per fleet (``exec-fleet``), each costing every server memory and CPU while it exists
LEGACY_CONSUMER_PREFIX = "exec-"


async def remove_legacy_consumers(nc: Client, timeout: float = 5.0) -> list[str]:
    """Delete the durables older executors made on ``DSE_COMMANDS`` (nothing reads them any more:
    executors read with direct gets now; docs/design.md, "Commands"). Returns their names."""
    removed: list[str] = []
    offset = 0
    while True:
        page = await api_request(nc, f"CONSUMER.NAMES.{COMMANDS_STREAM}", {"offset": offset}, timeout=timeout)
        names = page.get("consumers") or []
        for name in names:
            if str(name).startswith(LEGACY_CONSUMER_PREFIX):
                try:
                    await api_request(nc, f"CONSUMER.DELETE.{COMMANDS_STREAM}.{name}", timeout=timeout)
                except NotFound:
                    continue
                removed.append(str(name))
        offset += len(names)
        if not names or offset >= int(page.get("total", 0)):
            break
    if removed:
        log.info(
            "streams.legacy_consumers_removed", stream=COMMANDS_STREAM, count=len(removed), first=removed[:5]
        )
    return removed


async def _placed(
    apply: Callable[[], Awaitable[ApplyReport]], replicas: int, servers: int | None, grace: float
) -> ApplyReport:
    """``apply``, retried while the cluster refuses a placement for a little while: right after a
    cluster forms, its servers do not all know each other yet (seen: "this one has 2" of 3, and
    creates timing out), and an engine started with it must not give up on a cluster that is about to
    be whole. The refusal stands once the grace is over."""
    deadline = time.monotonic() + grace
    while True:
        try:
            return await apply()
        except (ReplicasUnavailable, TransientError) as err:
            if time.monotonic() >= deadline:
                if isinstance(err, ReplicasUnavailable) and servers is not None:
                    cause = err.__cause__ if err.__cause__ is not None else err
                    raise ReplicasUnavailable(replicas, servers, str(cause)) from err
                raise
            log.warning("streams.placement_retry", error=str(err))
            await asyncio.sleep(1.0)


async def check(nc: Client, *, needs: Collection[str] | None = None, timeout: float = 5.0) -> ApplyReport:
    """Read-only: raise ``MissingStreams`` naming what is missing of ``needs`` (stream names; every
    definition if None), log every difference, change nothing."""
    defs = [d for d in all_definitions() if needs is None or d.name in needs]
    report = await apply_definitions(nc, defs, strict=False, dry_run=True, timeout=timeout)
    if report.missing:
        raise MissingStreams(report.missing)
    for drift in [*report.pending, *report.drift]:
        log.warning(
            "streams.differs",
            resource=drift.resource,
            field=drift.field,
            definition=drift.want,
            server=drift.have,
            hint="the engine (or `dsctl admin streams`) repairs what it can; this process does not",
        )
    for kept in report.kept:
        log.info("streams.operator_setting", resource=kept.resource, field=kept.field, server=kept.have)
    return report
