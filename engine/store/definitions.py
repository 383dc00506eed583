"""The streams, KV buckets and the snapshot object store dsctl needs, as data: the definitions in
``ops/streams/*.json`` (and the one object store defined in code), how they are read, and the variants a
deployment asks for (a lease TTL, a replica count). Applying them to a server is ``streams``'s job.

Each file is one resource: ``{"kind": "stream", "config": {...}}`` holds the server's own stream JSON
(durations in nanoseconds, as ``nats stream info --json`` prints them); ``{"kind": "kv", ...}`` describes
a bucket the way nats-py's ``create_key_value`` builds its ``KV_<bucket>`` stream.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import msgspec

from events.errors import InvalidInput, PermanentError
from events.subjects import (
    COMMAND_SUBJECTS,
    COMMANDS_STREAM,
    EVENT_SUBJECTS,
    EVENTS_STREAM,
    REJECTED_STREAM,
    REJECTED_SUBJECTS,
)

SNAPSHOTS_BUCKET = "dse_snapshots"
LEADER_BUCKET = "dse_leader"
CHECKPOINT_BUCKET = "dse_executor_checkpoints"

#: subjects each stream must capture: the code (events.subjects) and the data must agree
_CONTRACT: dict[str, tuple[str, ...]] = {
    EVENTS_STREAM: EVENT_SUBJECTS,
    COMMANDS_STREAM: COMMAND_SUBJECTS,
    REJECTED_STREAM: REJECTED_SUBJECTS,
}

_NS = 1_000_000_000


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

#: The snapshot object store's stream, laid out the way nats-py 2.16 ``create_object_store`` lays it
#: out (so ``js.object_store(SNAPSHOTS_BUCKET)`` binds to it). Defined here rather than in
#: ``ops/streams``: its shape is nats-py's, not ours to tune; what ``setup.ensure`` adds is its replicas.
SNAPSHOT_STORE = StreamDefinition(
    config={
        "name": f"OBJ_{SNAPSHOTS_BUCKET}",
        "description": "dsctl projection snapshots",
        "subjects": [f"$O.{SNAPSHOTS_BUCKET}.C.>", f"$O.{SNAPSHOTS_BUCKET}.M.>"],
        "retention": "limits",
        "storage": "file",
        "num_replicas": 1,
        "discard": "new",
        "max_age": 0,
        "max_bytes": -1,
        "allow_rollup_hdrs": True,
        "allow_direct": True,
    },
    notes="Projection snapshots (engine/store/projector.py ObjectSnapshots), chunked by nats-py.",
)
_definition_decoder = msgspec.json.Decoder(Definition)


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
