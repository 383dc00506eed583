"""JSON Schema of the contract: the envelope and every event payload, keyed by tag."""

from __future__ import annotations

from typing import Any

import msgspec

from events.envelope import Envelope
from events.types import BY_TAG, AnyCommand


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
