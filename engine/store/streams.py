"""Streams and KV buckets as data (``ops/streams/*.json``), applied idempotently at start-up.

Each file is one resource: ``{"kind": "stream", "config": {...}}`` holds the server's own stream JSON
(durations in nanoseconds, as ``nats stream info --json`` prints them), so the files can be fed to the
``nats`` CLI too; ``{"kind": "kv", ...}`` describes a bucket the way nats-py's ``create_key_value`` builds
its ``KV_<bucket>`` stream.

Applying: create what is missing; compare what exists field by field with the definition; update what the
server lets us change; report, never paper over, what it does not (``deny_delete``/``deny_purge``/
``allow_msg_ttl`` cannot be switched off, storage and retention cannot change). With ``strict`` such a
drift raises ``StreamDriftError`` naming each field, because running the engine on, say, a purgeable event
log would silently break the audit promise.

Why the command stream uses limits retention, not a work queue (``docs/design.md``, "Commands"):

- A work queue allows one consumer per subject partition, so a per-node executor fleet would need one
  durable per node. nats-server 2.15 refuses the 1,001st consumer by default, and durables are expensive
  (about 430 MB and 30% of a core per server for 3,000 R3 durables, idle), and a WQ stream on R3 refuses
  R1 consumers.
- With limits retention a handful of durable pull consumers serve every executor
  (``engine/executor/command_source.py``): ``exec-<node>`` filtering ``dse.cmd.<node>`` for a node
  executor, one ``exec-fleet`` on ``dse.cmd.>`` for a simulated fleet; ``max_consumers`` (16,384) leaves
  room for one per node.
- A command is acked only after its effect is reported in ``DSE_EVENTS`` (keyed by command id, which the
  projection tracks as "in flight"); a redelivery is harmless because executors apply each command id
  once, and a command never answered is re-decided after a timeout.
- The duplicate window is short (30 s), so a re-issue after the in-flight timeout is not dropped as a
  duplicate, while a publisher's immediate retry still is. ``max_age`` (24 h) bounds the history; the
  decisions in the event log keep it forever.

Replicas are a floor, never a ceiling. Every process applies the definitions at start-up, and most of them
(an executor, a CLI command, ``dsctl up``) do not know how the store was deployed: the files say
``num_replicas: 1`` and only ``prepare(replicas=3)`` asks for more. Had a differing ``num_replicas``
counted as drift to repair, the first executor to start would have scaled every R3 stream of a cluster
down to R1, silently giving up the copies that survive a server loss. So a stream (or a bucket's
``KV_*`` stream) with more replicas than its definition is left as it is and not reported; one with
fewer is raised to the definition's count (a definition that asks for 3 is the only way to get there);
scaling down is an operator's explicit act (``nats stream edit --replicas``), not a start-up side effect.
Other fields, TTLs and limits included, are still compared and repaired as before.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import msgspec
import structlog
from nats.aio.client import Client

from engine.store.jetstream_api import JetStreamRefused, api_request, stream_info
from events.errors import DsctlError, InvalidInput, NotFound, PermanentError
from events.subjects import (
    COMMAND_SUBJECTS,
    COMMANDS_STREAM,
    EVENT_SUBJECTS,
    EVENTS_STREAM,
    REJECTED_STREAM,
    REJECTED_SUBJECTS,
)

log = structlog.get_logger()

# the stream names are part of the log contract: defined once, in events.subjects (re-exported here)
__all__ = ["COMMANDS_STREAM", "EVENTS_STREAM", "REJECTED_STREAM"]
SNAPSHOTS_BUCKET = "dse_snapshots"
LEADER_BUCKET = "dse_leader"

#: subjects each stream must capture: the code (events.subjects) and the data must agree
_CONTRACT: dict[str, tuple[str, ...]] = {
    EVENTS_STREAM: EVENT_SUBJECTS,
    COMMANDS_STREAM: COMMAND_SUBJECTS,
    REJECTED_STREAM: REJECTED_SUBJECTS,
}

#: fields whose change the server refuses (one-way switches, or storage layout)
_ONE_WAY_TRUE = frozenset({"deny_delete", "deny_purge", "allow_msg_ttl"})
_IMMUTABLE = frozenset({"name", "storage", "retention"})

_NS = 1_000_000_000
#: JetStream's "stream name already in use with a different configuration"
STREAM_NAME_IN_USE = 10058


class StreamDefinition(msgspec.Struct, frozen=True, kw_only=True, tag="stream", tag_field="kind"):
    config: dict[str, Any]
    notes: str = ""

    @property
    def name(self) -> str:
        return str(self.config["name"])

    def stream_config(self) -> dict[str, Any]:
        return dict(self.config)


class KvDefinition(msgspec.Struct, frozen=True, kw_only=True, tag="kv", tag_field="kind"):
    bucket: str
    description: str = ""
    history: int = 1
    #: seconds; 0 = keep forever
    ttl: float = 0
    #: seconds a limit/TTL delete marker lives (0 = no markers); needs nats-server 2.11
    limit_marker_ttl: float = 0
    storage: Literal["file", "memory"] = "file"
    replicas: int = 1
    max_value_size: int = -1
    max_bytes: int = -1
    direct: bool = True
    notes: str = ""

    @property
    def name(self) -> str:
        return f"KV_{self.bucket}"

    def stream_config(self) -> dict[str, Any]:
        """The backing stream, built the way nats-py 2.16 ``create_key_value`` builds it, so nats-py's
        ``js.key_value(bucket)`` binds to it unchanged."""
        duplicate_window = 120.0
        if self.ttl and self.ttl < duplicate_window:
            duplicate_window = self.ttl
        config: dict[str, Any] = {
            "name": self.name,
            "subjects": [f"$KV.{self.bucket}.>"],
            "retention": "limits",
            "storage": self.storage,
            "num_replicas": self.replicas,
            "discard": "new",
            "max_msgs": -1,
            "max_bytes": self.max_bytes,
            "max_age": int(self.ttl * _NS),
            "max_msgs_per_subject": self.history,
            "max_msg_size": self.max_value_size,
            "max_consumers": -1,
            "duplicate_window": int(duplicate_window * _NS),
            "deny_delete": True,
            "deny_purge": False,
            "allow_rollup_hdrs": True,
            "allow_msg_ttl": True,
            "allow_direct": self.direct,
        }
        if self.description:
            config["description"] = self.description
        if self.limit_marker_ttl:
            config["subject_delete_marker_ttl"] = int(self.limit_marker_ttl * _NS)
        return config


Definition = StreamDefinition | KvDefinition
_definition_decoder = msgspec.json.Decoder(Definition)


class Drift(msgspec.Struct, frozen=True, kw_only=True):
    resource: str
    field: str
    want: Any
    have: Any
    fixed: bool
    reason: str = ""

    def describe(self) -> str:
        state = "fixed" if self.fixed else "NOT fixable"
        text = f"{self.resource}.{self.field}: want {self.want!r}, have {self.have!r} ({state})"
        return f"{text}: {self.reason}" if self.reason else text


class ApplyReport(msgspec.Struct, kw_only=True):
    created: list[str] = msgspec.field(default_factory=list)
    updated: list[str] = msgspec.field(default_factory=list)
    unchanged: list[str] = msgspec.field(default_factory=list)
    drift: list[Drift] = msgspec.field(default_factory=list)

    @property
    def unfixable(self) -> list[Drift]:
        return [d for d in self.drift if not d.fixed]

    def summary(self) -> str:
        parts = [
            f"created {', '.join(self.created) or '-'}",
            f"updated {', '.join(self.updated) or '-'}",
            f"unchanged {', '.join(self.unchanged) or '-'}",
        ]
        lines = ["; ".join(parts)] + [d.describe() for d in self.drift]
        return "\n".join(lines)


class StreamDriftError(PermanentError):
    """An existing stream differs from its definition in a way the server will not change."""

    def __init__(self, report: ApplyReport) -> None:
        details = "\n  ".join(d.describe() for d in report.unfixable)
        super().__init__(
            "stream configuration drift that cannot be fixed in place (recreate the stream or change "
            f"the definition):\n  {details}"
        )
        self.report = report


def default_directory() -> Path:
    """``$DSCTL_STREAMS_DIR``, else ``ops/streams`` of this checkout."""
    override = os.environ.get("DSCTL_STREAMS_DIR")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2] / "ops" / "streams"


def load_definitions(directory: str | Path | None = None) -> list[Definition]:
    """Every ``*.json`` in the directory, sorted by name, checked against the subject contract."""
    path = Path(directory) if directory is not None else default_directory()
    files = sorted(path.glob("*.json"))
    if not files:
        raise PermanentError(f"no stream definitions (*.json) in {path}")
    defs: list[Definition] = []
    for file in files:
        try:
            defs.append(_definition_decoder.decode(file.read_bytes()))
        except msgspec.DecodeError as err:
            raise InvalidInput(f"{file}: {err}") from err
    check_contract(defs)
    return defs


def check_contract(defs: Sequence[Definition]) -> None:
    names = {d.name: d for d in defs}
    for stream, subjects in _CONTRACT.items():
        d = names.get(stream)
        if d is None:
            raise InvalidInput(f"stream {stream} has no definition")
        have = sorted(d.stream_config().get("subjects", []))
        if have != sorted(subjects):
            raise InvalidInput(f"{stream} subjects {have} differ from events.subjects {sorted(subjects)}")


def with_kv_ttl(defs: Sequence[Definition], bucket: str, ttl: float) -> list[Definition]:
    """The definitions with one bucket's TTL replaced (the leader lease TTL is a start-up setting)."""
    out: list[Definition] = []
    for d in defs:
        if isinstance(d, KvDefinition) and d.bucket == bucket:
            d = msgspec.structs.replace(d, ttl=ttl)
        out.append(d)
    return out


def with_replicas(defs: Sequence[Definition], replicas: int) -> list[Definition]:
    """The definitions with every stream and bucket at ``replicas`` copies (a clustered deployment)."""
    out: list[Definition] = []
    for d in defs:
        if isinstance(d, KvDefinition):
            d = msgspec.structs.replace(d, replicas=replicas)
        else:
            d = msgspec.structs.replace(d, config={**d.config, "num_replicas": replicas})
        out.append(d)
    return out


def _same(field: str, want: Any, have: Any) -> bool:
    if field == "subjects" and isinstance(want, list) and isinstance(have, list):
        return sorted(want) == sorted(have)
    if field == "description":
        return (want or "") == (have or "")
    return bool(want == have)


def _for_update(current: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
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


async def _apply_one(nc: Client, d: Definition, report: ApplyReport, timeout: float) -> None:
    desired = d.stream_config()
    name = d.name
    try:
        current = (await stream_info(nc, name, timeout=timeout)).config
    except NotFound:
        try:
            await api_request(nc, f"STREAM.CREATE.{name}", desired, timeout=timeout)
        except JetStreamRefused as err:
            if err.err_code != STREAM_NAME_IN_USE:
                raise
            # another process (an engine and an executor starting together) created it first, with
            # its own settings: treat it as existing, like any stream found at start-up
            current = (await stream_info(nc, name, timeout=timeout)).config
        else:
            report.created.append(name)
            log.info("streams.created", stream=name)
            return
    differing = {
        field: (want, current.get(field))
        for field, want in desired.items()
        if not _same(field, want, current.get(field))
    }
    kept = _replicas_kept(desired, current)
    if kept is not None:
        # replicas are a floor (module docstring): more copies on the server than asked is not drift
        differing.pop("num_replicas", None)
        log.debug("streams.replicas_kept", stream=name, have=kept, definition=desired.get("num_replicas"))
    if not differing:
        report.unchanged.append(name)
        return
    fixable: dict[str, Any] = {}
    for field, (want, have) in differing.items():
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
        return
    try:
        # refused one-way fields keep their current values, so the rest can still be fixed
        await api_request(nc, f"STREAM.UPDATE.{name}", _for_update(current, fixable), timeout=timeout)
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
) -> ApplyReport:
    """Create or update every stream and bucket; raise ``StreamDriftError`` on unfixable drift if strict."""
    report = ApplyReport()
    for d in load_definitions() if defs is None else defs:
        await _apply_one(nc, d, report, timeout)
    for drift in report.unfixable:
        log.error(
            "streams.drift", resource=drift.resource, field=drift.field, want=drift.want, have=drift.have
        )
    if strict and report.unfixable:
        raise StreamDriftError(report)
    return report


async def delete_streams(nc: Client, defs: Sequence[Definition], *, timeout: float = 5.0) -> None:
    """Delete every defined stream that exists (tests, and ``dsctl down --wipe``). Irreversible."""
    for d in defs:
        with contextlib.suppress(NotFound):
            await api_request(nc, f"STREAM.DELETE.{d.name}", timeout=timeout)
