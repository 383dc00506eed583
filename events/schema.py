"""JSON Schema of the contract: the envelope and every event payload, keyed by tag, and the document
``dsctl schema -o json`` prints (those plus the command, the ingest request/replies and the
rejected-input record).

Every schema is generated from the Structs that decode the same bytes, so the printed contract cannot
drift from the one enforced: a new event type appears here the day it is added.
"""

from __future__ import annotations

from typing import Any

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
from events.types import BY_TAG, AnyCommand

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def event_schemas() -> dict[str, dict[str, Any]]:
    """One self-contained JSON Schema per event tag (with ``x-schema-version``)."""
    out: dict[str, dict[str, Any]] = {}
    for tag, cls in sorted(BY_TAG.items()):
        schema = msgspec.json.schema(cls)
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
