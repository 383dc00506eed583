"""JSON Schema of the contract: the envelope and every event payload, keyed by tag, and the document
``dsctl schema -o json`` prints (those plus the command, the ingest request/replies and the
rejected-input record).

Every schema is generated from the Structs that decode the same bytes, so the printed contract cannot
drift from the one enforced: a new event type appears here the day it is added. The Structs say only
types, so the value rules the ingest service applies (``docs/ingest.md``, "The contract": names, label
syntax, taint effects, condition statuses, quantities, counts, envelope ids and texts, no unknown field
at the top of a payload) are laid over them here, so that a payload this schema accepts is one ingest
accepts. The few rules no JSON Schema can say (a DaemonSet spec's cross-field checks, one taint per key
and effect, the stored size, one id twice in a batch) are listed there as ingest's alone.

Patterns are anchored and end in ``$(?!\\n)``: JSON Schema's ``pattern`` is a search, and in Python's
``re`` (which the ``jsonschema`` package uses) ``$`` also matches before a final newline, so without
the lookahead ``"node-1\\n"`` would pass a schema that ingest refuses (ECMA-262's ``$`` does not, and
the lookahead is then a no-op).
"""

from __future__ import annotations

import typing
from typing import Any, Final

import msgspec

from events.envelope import Envelope
from events.ingest_wire import (
    ENGINE_ONLY,
    EXECUTOR_ONLY,
    HEADER_ROOM,
    MAX_BATCH,
    MAX_DEPTH,
    REASON_CODES,
    BatchReply,
    ErrorReply,
    IngestReply,
    IngestRequest,
    Rejection,
)
from events.k8s import TaintEffect
from events.types import BY_TAG, AnyCommand

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def anchored(body: str) -> str:
    """A ``pattern`` that matches the whole string and nothing after it (see the module docstring)."""
    return "^(?:" + body + ")$(?!\\n)"


def _string(body: str, max_length: int | None = None, min_length: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "string", "pattern": anchored(body)}
    if max_length is not None:
        out["maxLength"] = max_length
    if min_length is not None:
        out["minLength"] = min_length
    return out


# Kubernetes name syntax, as ``engine/core/names.py`` checks it (the tests compare the two)
_LABEL = "[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN = _LABEL + "(?:\\." + _LABEL + ")*"
#: a qualified name's name part and a label value: at most 63 characters, alphanumeric at both ends
_NAME_63 = "[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
DNS1123_LABEL: Final = _string(_LABEL, max_length=63)
DNS1123_SUBDOMAIN: Final = _string(_SUBDOMAIN, max_length=253)
#: a label, annotation or taint key: an optional DNS subdomain prefix of at most 253 characters and "/"
QUALIFIED_NAME: Final = _string("(?:(?=[^/]{1,253}/)" + _SUBDOMAIN + "/)?" + _NAME_63)
LABEL_VALUE: Final = _string("(?:" + _NAME_63 + ")?", max_length=63)
LABELS: Final = {"type": "object", "propertyNames": QUALIFIED_NAME, "additionalProperties": LABEL_VALUE}
#: a resource quantity without a sign but an optional "+" (``engine.core.event_validation.QUANTITY``)
QUANTITY: Final = _string(
    "\\+?(?:[0-9]+(?:\\.[0-9]*)?|\\.[0-9]+)(?:[KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?", max_length=64
)
CAPACITY: Final = {"type": "object", "propertyNames": QUALIFIED_NAME, "additionalProperties": QUANTITY}
TAINT_EFFECTS: Final = typing.get_args(TaintEffect)
CONDITION_STATUSES: Final = ("True", "False", "Unknown")
MAX_INT64: Final = 2**63 - 1
#: an event id: it travels as the ``Nats-Msg-Id`` header (empty: ingest draws one)
EVENT_ID: Final = _string("(?:[!-~]{1,128})?")
#: ``source``, ``causation_id``, ``correlation_id``: they may end up in a header or a log line
ENVELOPE_TEXT: Final = _string("[^\\x00-\\x1f\\x7f]*", max_length=253)
#: RFC 3339 with an offset: ingest refuses a time without one (it would be read as local time)
TIMESTAMP: Final = {
    **_string(
        "[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])[Tt ](?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
        "(?:\\.[0-9]+)?(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
    ),
    "format": "date-time",
}
_NON_EMPTY: Final = {"type": "string", "minLength": 1}


def _count(minimum: int) -> dict[str, Any]:
    return {"type": "integer", "minimum": minimum, "maximum": MAX_INT64}


_NODE_NAMED: Final = {"name": DNS1123_SUBDOMAIN}
_POD_NAMED: Final = {"node": DNS1123_SUBDOMAIN, "namespace": DNS1123_LABEL, "name": DNS1123_SUBDOMAIN}
_DAEMONSET_NAMED: Final = {"namespace": DNS1123_LABEL, "name": DNS1123_SUBDOMAIN, "uid": _NON_EMPTY}

#: the value rules of ``engine.core.event_validation.check_event``, by ``$defs`` name and property
VALUE_RULES: Final[dict[str, dict[str, dict[str, Any]]]] = {
    "NodeRegistered": {**_NODE_NAMED, "labels": LABELS, "capacity": CAPACITY},
    "NodeLabelsChanged": {**_NODE_NAMED, "labels": LABELS},
    "NodeTaintsChanged": _NODE_NAMED,
    "NodeCordoned": _NODE_NAMED,
    "NodeUncordoned": _NODE_NAMED,
    "NodeConditionChanged": _NODE_NAMED,
    "NodeRemoved": _NODE_NAMED,
    "Taint": {
        "key": QUALIFIED_NAME,
        "value": LABEL_VALUE,
        "effect": {"type": "string", "enum": list(TAINT_EFFECTS)},
    },
    "NodeCondition": {"type": _NON_EMPTY, "status": {"type": "string", "enum": list(CONDITION_STATUSES)}},
    "DaemonSetApplied": {
        **_DAEMONSET_NAMED,
        "generation": _count(1),
        "template_hash": _NON_EMPTY,
        "labels": LABELS,
    },
    "DaemonSetDeleted": _DAEMONSET_NAMED,
    **{
        cls.__name__: _POD_NAMED
        for cls in BY_TAG.values()
        if cls.TAG.startswith("pod.") and cls.__name__ != "PodCreated"
    },
    "PodCreated": {**_POD_NAMED, "uid": _NON_EMPTY, "labels": LABELS},
    "PodFailed": {**_POD_NAMED, "exit_code": _count(0)},
    "PodSucceeded": {**_POD_NAMED, "exit_code": _count(0)},
    "PodTerminating": {**_POD_NAMED, "grace_period_seconds": _count(0)},
}


def _constrain(prop: dict[str, Any], rule: dict[str, Any]) -> dict[str, Any]:
    """``rule`` laid over one property's schema; an optional one (``anyOf`` with null) gets it on its
    non-null branch, so ``null`` stays allowed."""
    if "anyOf" in prop:
        branches = [b if b.get("type") == "null" else {**b, **rule} for b in prop["anyOf"]]
        return {**prop, "anyOf": branches}
    return {**prop, **rule}


def with_value_rules(schema: dict[str, Any]) -> dict[str, Any]:
    """A msgspec schema with ``VALUE_RULES`` applied to its ``$defs``, and every event payload closed
    (``additionalProperties: false``): ingest refuses an unknown field at the top of ``data``. Nested
    objects stay open, because ingest ignores unknown fields there (a taint's ``timeAdded``-like
    extensions from newer Kubernetes versions)."""
    defs = dict(schema.get("$defs", {}))
    payloads = {cls.__name__ for cls in BY_TAG.values()}
    for name, definition in defs.items():
        rules = VALUE_RULES.get(name, {})
        properties = {
            prop: _constrain(value, rules[prop]) if prop in rules else value
            for prop, value in definition.get("properties", {}).items()
        }
        updated = {**definition, "properties": properties} if "properties" in definition else dict(definition)
        if name in payloads:
            updated["additionalProperties"] = False
        defs[name] = updated
    return {**schema, "$defs": defs} if defs else dict(schema)


def event_schemas() -> dict[str, dict[str, Any]]:
    """One self-contained JSON Schema per event tag (with ``x-schema-version``)."""
    out: dict[str, dict[str, Any]] = {}
    for tag, cls in sorted(BY_TAG.items()):
        schema = with_value_rules(msgspec.json.schema(cls))
        schema["title"] = tag
        schema["x-schema-version"] = cls.VERSION
        out[tag] = schema
    return out


def envelope_schema() -> dict[str, Any]:
    schema = msgspec.json.schema(Envelope)
    schema["title"] = "envelope"
    return schema


def command_schema() -> dict[str, Any]:
    return msgspec.json.schema(AnyCommand)


def titled(cls: type[Any], title: str) -> dict[str, Any]:
    """The schema of one Struct, with a title of our choosing (msgspec leaves it out)."""
    doc = msgspec.json.schema(cls)
    doc["title"] = title
    return doc


def plain(doc: dict[str, Any]) -> dict[str, Any]:
    """JSON types only (msgspec's schemas carry tuples as defaults), so the value equals its printout."""
    result: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(doc))
    return result


def json_schema_document(version: str) -> dict[str, Any]:
    """Every schema of the contract, self-contained, keyed by what it describes. ``version`` is the
    package's (the caller reads it: this layer does no I/O)."""
    return plain(
        {
            "$schema": JSON_SCHEMA_DIALECT,
            "title": "dsctl event contract",
            "version": version,
            "events": event_schemas(),
            "envelope": envelope_schema(),
            "command": command_schema(),
            "ingest": {
                "request": titled(IngestRequest, "ingest request"),
                "reply": titled(IngestReply, "ingest reply"),
                "batch_reply": titled(BatchReply, "ingest batch reply"),
                "error": titled(ErrorReply, "ingest error"),
            },
            # what another service sends: one event (the body of dse.ingest.event, or a line of a
            # batch), and a batch as a JSON array
            "ingest_line": ingest_line_schema(),
            "ingest_batch": ingest_batch_schema(),
            "rejected": titled(Rejection, "rejected input"),
            # types the ingest service refuses from publishers (reason codes engine_only, executor_only)
            "engine_only": sorted(ENGINE_ONLY),
            "executor_only": sorted(EXECUTOR_ONLY),
            "reason_codes": dict(REASON_CODES),
            # what a request may be; a refusal over one names it in `limit` ("max_depth 64"); the
            # request and a stored event are bounded by the server's max_payload (less header_room)
            "limits": {"max_batch": MAX_BATCH, "max_depth": MAX_DEPTH, "header_room": HEADER_ROOM},
        }
    )


def ingested_tags() -> list[str]:
    """The types the ingest service takes from publishers (not engine-only, not executor-only)."""
    return sorted(set(BY_TAG) - ENGINE_ONLY - EXECUTOR_ONLY)


def ingest_line_schema() -> dict[str, Any]:
    """One ingest request, as a line of a batch or the body of ``dse.ingest.event``: the envelope with
    ``type`` and ``data``, one ``oneOf`` branch per type keyed by its ``type`` const. A payload at the
    current ``schema_version`` (or with none) is checked against its event schema; one at an older
    version is an object that ingest upcasts (its old shape is described in ``docs/ingest.md``)."""
    defs: dict[str, Any] = {}
    branches: list[dict[str, Any]] = []
    for tag in ingested_tags():
        cls = BY_TAG[tag]
        event = event_schemas()[tag]
        for name, definition in event.get("$defs", {}).items():
            if name == cls.__name__:
                definition = {**definition, "x-schema-version": cls.VERSION}
            if defs.setdefault(name, definition) != definition:
                raise ValueError(f"two different schemas are both named {name!r}")
        branches.append(
            {
                "properties": {
                    "type": {"const": tag},
                    "schema_version": {"enum": [cls.VERSION, None]},
                    "data": {"$ref": event["$ref"]},
                },
            }
        )
        for old in range(1, cls.VERSION):
            branches.append(
                {
                    "properties": {
                        "type": {"const": tag},
                        "schema_version": {"const": old},
                        "data": {"type": "object"},
                    },
                    "required": ["schema_version"],
                }
            )
    request = msgspec.json.schema(IngestRequest)["$defs"]["IngestRequest"]
    properties = {
        **request["properties"],
        "type": {"type": "string", "enum": ingested_tags()},
        "data": {"type": "object"},
        "id": {**request["properties"]["id"], **EVENT_ID},
        "schema_version": _constrain(request["properties"]["schema_version"], {"minimum": 1}),
        "occurred_at": _constrain(request["properties"]["occurred_at"], TIMESTAMP),
        **{
            field: {**request["properties"][field], **ENVELOPE_TEXT}
            for field in ("source", "causation_id", "correlation_id")
        },
    }
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "title": "ingest line",
        "description": "One event for the ingest service: the body of a request to dse.ingest.event, or "
        "one line (one item) of a batch to dse.ingest.batch. Every field but `type` and `data` may be "
        "left out: ingest fills in id, occurred_at, source and correlation_id.",
        "type": "object",
        "properties": properties,
        "required": request["required"],
        "additionalProperties": False,
        "oneOf": branches,
        "$defs": defs,
    }


def ingest_batch_schema() -> dict[str, Any]:
    """A batch sent as a JSON array (the JSON-lines form is the same items, one per line)."""
    line = ingest_line_schema()
    defs = line.pop("$defs")
    line.pop("$schema")
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "title": "ingest batch",
        "description": f"A JSON array of ingest lines, 1 to {MAX_BATCH} of them, each id at most once; "
        "or the same lines as JSON lines (one per line, blank lines skipped).",
        "type": "array",
        "items": {"$ref": "#/$defs/IngestLine"},
        "minItems": 1,
        "maxItems": MAX_BATCH,
        "$defs": {**defs, "IngestLine": line},
    }
