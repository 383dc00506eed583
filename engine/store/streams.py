"""Applying the definitions (``engine/store/definitions.py``: the streams and buckets as data) to a
server: done by the engine's start-up and ``dsctl admin streams`` (``engine/store/setup.py``), only
checked by every other process.

Applying: create what is missing; compare what exists field by field with the definition; update what the
server lets us change; report, never paper over, what it does not (``deny_delete``/``deny_purge``/
``allow_msg_ttl`` cannot be switched off, storage and retention cannot change). With ``strict`` such a
drift raises ``StreamDriftError`` naming each field, because running the engine on, say, a purgeable event
log would silently break the audit promise.

Why the command stream uses limits retention, not a work queue (``docs/design.md``, "Commands"):

- A work queue allows one consumer per subject partition, so a per-node executor fleet would need one
  consumer per node, and consumers are expensive at fleet scale whatever their kind (docs/jetstream.md
  §7): 2,000 R3 durables cost 313-343 MB and a fifth of a core per server, idle; 10,000 ephemeral R1
  pull consumers 235 MB per server.
- With limits retention nobody has to consume: executors read their node's subject with batched direct
  gets from a checkpoint of their own, woken by a plain subscription (``engine/executor/command_feed.py``).
- A command counts as done once its effect is reported in ``DSE_EVENTS`` (keyed by command id, which the
  projection tracks as "in flight"); reading one again is harmless because executors apply each command
  id once, and a command never answered is re-decided after a timeout.
- The duplicate window is short (30 s), so a re-issue after the in-flight timeout is not dropped as a
  duplicate, while a publisher's immediate retry still is. ``max_age`` (24 h) bounds the history; the
  decisions in the event log keep it forever.

Who owns which field. Only the engine and ``dsctl admin streams`` create or change definitions
(``engine/store/setup.py``: ``ensure``); executors, ingest and the CLI only read them (``check``). Even
``ensure`` changes only the fields that are *ours*, the ones the code relies on; the others are the
operator's once the stream exists:

- **ours, enforced** (repaired in place when the server allows, reported when it does not): subjects,
  retention, storage, discard, duplicate_window, deny_delete, deny_purge, allow_rollup_hdrs,
  allow_msg_ttl, allow_direct, max_msgs_per_subject (a bucket's history), subject_delete_marker_ttl,
  description; and ``num_replicas`` as a floor.
- **the operator's, kept** (``OPERATOR_LIMITS``: max_age, max_bytes, max_msgs, max_msg_size,
  max_consumers; a bucket's TTL is its max_age; replicas above the definition's): a stream is created
  with the definition's values, and a different value found later is reported under ``kept`` and left
  alone, because it was set by someone (``nats stream edit``, an engine's ``--lease-ttl``) for a reason
  a start-up cannot know. A value the caller asks for explicitly (``pinned``, e.g. the leader bucket's
  max_age for ``--lease-ttl``) is enforced.
- **except on the event log** (``LIMITS_ENFORCED_ON``): ``DSE_EVENTS`` having no limits is part of the
  log contract (README); an aged-out or discarded event makes every fold from the start wrong and every
  ``replay verify`` fail, so its limits are ours.

Replicas are a floor, never a ceiling. Most processes do not know how the store was deployed (the files
say ``num_replicas: 1``; only ``--replicas N`` asks for more). Had a differing ``num_replicas`` counted as
drift to repair, the first engine started without the flag would have scaled every R3 stream of a
cluster down to R1, silently giving up the copies that survive a server loss. So a stream (or a bucket's
``KV_*`` stream) with more replicas than asked is kept (listed under ``kept``); one with fewer is raised
to the count asked for; scaling down is an operator's explicit act (``nats stream edit --replicas``),
not a start-up side effect.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Sequence
from typing import Any

import msgspec
import structlog
from nats.aio.client import Client

from engine.store.definitions import (
    _NS,
    LEADER_BUCKET,
    SNAPSHOT_STORE,
    SNAPSHOTS_BUCKET,
    Definition,
    KvDefinition,
    StreamDefinition,
    check_contract,
    default_directory,
    load_definitions,
    with_kv_ttl,
    with_replicas,
)
from engine.store.jetstream_api import JetStreamRefused, api_request, stream_info
from events.errors import DsctlError, InvalidInput, NotFound, PermanentError
from events.subjects import (
    COMMANDS_STREAM,
    EVENTS_STREAM,
    REJECTED_STREAM,
)

log = structlog.get_logger()

# the stream names are part of the log contract: defined once, in events.subjects (re-exported here)
__all__ = [
    "COMMANDS_STREAM",
    "EVENTS_STREAM",
    "LEADER_BUCKET",
    "REJECTED_STREAM",
    "SNAPSHOTS_BUCKET",
    "SNAPSHOT_STORE",
    "Definition",
    "KvDefinition",
    "StreamDefinition",
    "check_contract",
    "default_directory",
    "load_definitions",
    "with_kv_ttl",
    "with_replicas",
]
#: fields whose change the server refuses (one-way switches, or storage layout)
_ONE_WAY_TRUE = frozenset({"deny_delete", "deny_purge", "allow_msg_ttl"})
_IMMUTABLE = frozenset({"name", "storage", "retention"})
#: limits that are the operator's once a stream exists (module docstring): found different, kept
OPERATOR_LIMITS = frozenset({"max_age", "max_bytes", "max_msgs", "max_msg_size", "max_consumers"})
#: resources whose limits are ours all the same: the event log must never lose an event
LIMITS_ENFORCED_ON = frozenset({EVENTS_STREAM})
#: fields holding nanoseconds, shown in seconds
_DURATIONS = frozenset({"max_age", "duplicate_window", "subject_delete_marker_ttl"})
#: the server's refusals of a placement: "replicas > 1 not supported in non-clustered mode" (10074) and
#: "no suitable peers for placement" (10005)
_NO_PLACEMENT = frozenset({10074, 10005})

#: JetStream's "stream name already in use with a different configuration"
STREAM_NAME_IN_USE = 10058


class Drift(msgspec.Struct, frozen=True, kw_only=True):
    resource: str
    field: str
    want: Any
    have: Any
    fixed: bool
    reason: str = ""

    def describe(self, state: str | None = None) -> str:
        state = state or ("fixed" if self.fixed else "NOT fixable")
        want, have = show(self.field, self.want), show(self.field, self.have)
        text = f"{self.resource}.{self.field}: want {want}, have {have} ({state})"
        return f"{text}: {self.reason}" if self.reason else text


def show(field: str, value: Any) -> str:
    """A field's value for people: durations in seconds (the server's JSON has nanoseconds)."""
    if field in _DURATIONS and isinstance(value, int) and value:
        return f"{value / _NS:g}s"
    return repr(value)


class ApplyReport(msgspec.Struct, kw_only=True):
    """What applying (or, with ``dry_run``, planning) did: ``drift`` is ours (fixed or not fixable),
    ``kept`` the operator's differences left alone; a dry run lists ``missing`` resources and the
    ``pending`` fixes it would make instead of making them."""

    created: list[str] = msgspec.field(default_factory=list)
    updated: list[str] = msgspec.field(default_factory=list)
    unchanged: list[str] = msgspec.field(default_factory=list)
    drift: list[Drift] = msgspec.field(default_factory=list)
    kept: list[Drift] = msgspec.field(default_factory=list)
    missing: list[str] = msgspec.field(default_factory=list)
    pending: list[Drift] = msgspec.field(default_factory=list)

    @property
    def unfixable(self) -> list[Drift]:
        return [d for d in self.drift if not d.fixed]

    def summary(self) -> str:
        parts = [
            f"created {', '.join(self.created) or '-'}",
            f"updated {', '.join(self.updated) or '-'}",
            f"unchanged {', '.join(self.unchanged) or '-'}",
        ]
        if self.missing:
            parts.append(f"missing {', '.join(self.missing)}")
        lines = ["; ".join(parts)] + [d.describe() for d in self.drift]
        lines += [d.describe("would fix") for d in self.pending]
        lines += [d.describe("kept") for d in self.kept]
        return "\n".join(lines)


class ReplicasUnavailable(InvalidInput):
    """More replicas asked for than the JetStream cluster has servers to place them on."""

    def __init__(self, replicas: int, servers: int | None, detail: str = "") -> None:
        have = f"this one has {servers}" if servers is not None else "the server refused the placement"
        text = f"--replicas {replicas} needs a JetStream cluster of at least {replicas} servers; {have}"
        super().__init__(f"{text} ({detail})" if detail else text)
        self.replicas = replicas
        self.servers = servers


class StreamDriftError(PermanentError):
    """An existing stream differs from its definition in a way the server will not change."""

    def __init__(self, report: ApplyReport) -> None:
        details = "\n  ".join(d.describe() for d in report.unfixable)
        super().__init__(
            "stream configuration drift that cannot be fixed in place (recreate the stream or change "
            f"the definition):\n  {details}"
        )
        self.report = report


def _same(field: str, want: Any, have: Any) -> bool:
    if field == "subjects" and isinstance(want, list) and isinstance(have, list):
        return sorted(want) == sorted(have)
    if field == "description":
        return (want or "") == (have or "")
    return bool(want == have)


def for_update(current: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
    """A ``STREAM.UPDATE`` body: the server's configuration with ``desired`` fields changed."""
    merged = {**current, **desired}
    # the server adds its own _nats.* metadata; sending it back is refused by the strict API
    meta = {k: v for k, v in (merged.get("metadata") or {}).items() if not k.startswith("_nats.")}
    if meta:
        merged["metadata"] = meta
    else:
        merged.pop("metadata", None)
    return merged


def _replicas_kept(desired: dict[str, Any], current: dict[str, Any]) -> int | None:
    """The server's replica count when it differs from the definition's but already meets it as a
    floor (so it is kept), else None. The server stores 0 ("the default") as 1."""
    want, have = desired.get("num_replicas"), current.get("num_replicas")
    if isinstance(want, int) and isinstance(have, int) and have != want and have >= max(want, 1):
        return have
    return None


def _operators(name: str, field: str, pinned: Collection[str]) -> bool:
    """Whether a differing field is the operator's to keep (module docstring: who owns which field)."""
    return field in OPERATOR_LIMITS and name not in LIMITS_ENFORCED_ON and f"{name}.{field}" not in pinned


def _with_current_ttl(d: Definition, current: dict[str, Any], pinned: Collection[str]) -> Definition:
    """A bucket's definition with the TTL the server has, unless the caller pinned it: the TTL is the
    operator's (an engine started with ``--lease-ttl 2`` set it), and the duplicate window is derived
    from it, so it must be re-derived from the kept TTL, not compared with the file's."""
    have = current.get("max_age")
    if not isinstance(d, KvDefinition) or f"{d.name}.max_age" in pinned or not isinstance(have, int):
        return d
    return msgspec.structs.replace(d, ttl=have / _NS)


async def _apply_one(
    nc: Client,
    d: Definition,
    report: ApplyReport,
    timeout: float,
    *,
    dry_run: bool = False,
    pinned: Collection[str] = (),
) -> None:
    name = d.name
    desired = d.stream_config()
    try:
        current = (await stream_info(nc, name, timeout=timeout)).config
    except NotFound:
        if dry_run:
            report.missing.append(name)
            return
        try:
            await api_request(nc, f"STREAM.CREATE.{name}", desired, timeout=timeout)
        except JetStreamRefused as err:
            replicas = desired.get("num_replicas") or 1
            if err.err_code in _NO_PLACEMENT and replicas > 1:
                raise ReplicasUnavailable(replicas, None, f"creating {name}: {err}") from err
            if err.err_code != STREAM_NAME_IN_USE:
                raise
            # another process (two engines starting together) created it first, with its own
            # settings: treat it as existing, like any stream found at start-up
            current = (await stream_info(nc, name, timeout=timeout)).config
        else:
            report.created.append(name)
            log.info("streams.created", stream=name, replicas=desired.get("num_replicas"))
            return
    adopted = _with_current_ttl(d, current, pinned)
    if adopted is not d:
        if isinstance(d, KvDefinition) and isinstance(adopted, KvDefinition) and adopted.ttl != d.ttl:
            reason = "the bucket's TTL is the operator's"
            report.kept.append(
                Drift(resource=name, field="max_age", want=desired["max_age"], have=current["max_age"],
                      fixed=False, reason=reason)
            )  # fmt: skip
        desired = adopted.stream_config()
    differing = {
        field: (want, current.get(field))
        for field, want in desired.items()
        if not _same(field, want, current.get(field))
    }
    kept = _replicas_kept(desired, current)
    if kept is not None:
        # replicas are a floor (module docstring): more copies on the server than asked is not drift
        differing.pop("num_replicas", None)
        report.kept.append(
            Drift(resource=name, field="num_replicas", want=desired.get("num_replicas"), have=kept,
                  fixed=False, reason="replicas are a floor")
        )  # fmt: skip
    fixable: dict[str, Any] = {}
    for field, (want, have) in differing.items():
        if _operators(name, field, pinned):
            report.kept.append(
                Drift(resource=name, field=field, want=want, have=have, fixed=False,
                      reason="a limit is the operator's")
            )  # fmt: skip
            continue
        if field in _IMMUTABLE:
            reason = "the server cannot change this on an existing stream"
        elif field in _ONE_WAY_TRUE and have and not want:
            reason = "this switch cannot be turned off once on"
        else:
            fixable[field] = want
            continue
        report.drift.append(
            Drift(resource=name, field=field, want=want, have=have, fixed=False, reason=reason)
        )
    if not fixable:
        report.unchanged.append(name)
        return
    if dry_run:
        report.pending.extend(
            Drift(resource=name, field=f, want=w, have=current.get(f), fixed=False)
            for f, w in fixable.items()
        )
        return
    try:
        # refused one-way fields keep their current values, so the rest can still be fixed
        await api_request(nc, f"STREAM.UPDATE.{name}", for_update(current, fixable), timeout=timeout)
    except DsctlError as err:
        for field, want in fixable.items():
            report.drift.append(
                Drift(
                    resource=name,
                    field=field,
                    want=want,
                    have=current.get(field),
                    fixed=False,
                    reason=str(err),
                )
            )
        return
    for field, want in fixable.items():
        report.drift.append(Drift(resource=name, field=field, want=want, have=current.get(field), fixed=True))
    report.updated.append(name)
    log.info("streams.updated", stream=name, fields=sorted(fixable))


async def apply_definitions(
    nc: Client,
    defs: Sequence[Definition] | None = None,
    *,
    strict: bool = True,
    timeout: float = 5.0,
    dry_run: bool = False,
    pinned: Collection[str] = (),
) -> ApplyReport:
    """Create or update every stream and bucket; raise ``StreamDriftError`` on unfixable drift if strict.

    ``dry_run`` reads only: what is missing and what would be fixed are listed, nothing is written.
    ``pinned`` names operator fields the caller asked for explicitly (``"KV_dse_leader.max_age"``),
    which are then enforced like ours. Callers other than the engine and ``dsctl admin streams`` go
    through ``engine.store.setup.check`` instead (dry run, never raising on drift).
    """
    report = ApplyReport()
    for d in load_definitions() if defs is None else defs:
        await _apply_one(nc, d, report, timeout, dry_run=dry_run, pinned=pinned)
    if dry_run:
        return report  # the caller says what it found, at the level its role calls for
    for drift in report.unfixable:
        log.error(
            "streams.drift", resource=drift.resource, field=drift.field, want=drift.want, have=drift.have
        )
    for kept in report.kept:
        log.info("streams.kept", resource=kept.resource, field=kept.field, have=kept.have, reason=kept.reason)
    if strict and report.unfixable:
        raise StreamDriftError(report)
    return report


async def delete_streams(nc: Client, defs: Sequence[Definition], *, timeout: float = 5.0) -> None:
    """Delete every defined stream that exists (tests, and ``dsctl down --wipe``). Irreversible."""
    for d in defs:
        with contextlib.suppress(NotFound):
            await api_request(nc, f"STREAM.DELETE.{d.name}", timeout=timeout)
