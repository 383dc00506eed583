"""The one codec: JSON on the wire (any language can publish), msgspec for speed.

Decoding is two-step but never decodes a byte twice: the envelope is decoded with its payload left as
``msgspec.Raw``, then the payload goes through the decoder for its tag (or, for an older schema version,
through the upcasters first). Every decoding error becomes ``MalformedEvent`` naming the field.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

import msgspec

from events.envelope import Envelope
from events.errors import MalformedEvent
from events.types import BY_TAG, AnyCommand, Event
from events.upcasting import upcast


class _WireEnvelope(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    type: str
    schema_version: int
    occurred_at: datetime
    source: str
    data: msgspec.Raw
    causation_id: str = ""
    correlation_id: str = ""


_encoder = msgspec.json.Encoder()
_wire_decoder = msgspec.json.Decoder(_WireEnvelope)
_payload_decoders: dict[str, msgspec.json.Decoder[Any]] = {
    tag: msgspec.json.Decoder(cls) for tag, cls in BY_TAG.items()
}
_command_decoder = msgspec.json.Decoder(AnyCommand)


#: msgspec's messages that name a field of the object at the path, not the object itself
_NAMES_A_FIELD = re.compile(r"Object (?:contains unknown|missing required) field `(.*)`", re.DOTALL)
_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def child_path(path: str, name: str) -> str:
    """``$.data`` + ``name`` -> ``$.data.name``; a name that is not a plain word is quoted
    (``$["a b"]``), so the path stays one unambiguous JSONPath whatever the caller sent."""
    if _PLAIN_NAME.fullmatch(name):
        return f"{path}.{name}"
    return f"{path}[{json.dumps(name)}]"


def named_field(reason: str, path: str) -> str:
    """The path of the field a decode error is about: an unknown or missing field is named by its own
    path (``$.colour``), not by the object holding it (``$``)."""
    m = _NAMES_A_FIELD.fullmatch(reason)
    return child_path(path, m.group(1)) if m else path


def _field_of(err: Exception, prefix: str) -> tuple[str, str]:
    """Split msgspec's "... - at `$.x.y`" into (reason, path) with our own prefix."""
    text = str(err)
    if " - at `" in text:
        reason, _, rest = text.partition(" - at `")
        path = rest.rstrip("`")
        return reason, named_field(reason, prefix + path[1:])
    return text, named_field(text, prefix)


def encode(envelope: Envelope) -> bytes:
    return _encoder.encode(envelope)


def decode(data: bytes | bytearray | memoryview) -> Envelope:
    try:
        wire = _wire_decoder.decode(data)
    except msgspec.DecodeError as err:
        reason, path = _field_of(err, "$")
        raise MalformedEvent(reason, path) from err
    payload = decode_payload(wire.type, wire.schema_version, wire.data)
    return Envelope(
        id=wire.id,
        type=wire.type,
        schema_version=payload.VERSION,  # after upcasting, the payload is in the current shape
        occurred_at=wire.occurred_at,
        source=wire.source,
        causation_id=wire.causation_id,
        correlation_id=wire.correlation_id,
        data=payload,
    )


def decode_payload(tag: str, version: int, raw: bytes | msgspec.Raw) -> Event:
    cls = BY_TAG.get(tag)
    if cls is None:
        raise MalformedEvent(f"unknown event type {tag!r}", "$.type")
    try:
        if version == cls.VERSION:
            event: Event = _payload_decoders[tag].decode(raw)
            return event
        if version > cls.VERSION or version < 1:
            raise MalformedEvent(
                f"schema version {version} of {tag!r} is not known (current is {cls.VERSION})",
                "$.schema_version",
            )
        payload = msgspec.json.decode(raw)
        if not isinstance(payload, dict):
            raise MalformedEvent("expected an object", "$.data")
        upcasted = upcast(tag, version, cls.VERSION, payload)
        return msgspec.convert(upcasted, cls)
    except msgspec.DecodeError as err:
        reason, path = _field_of(err, "$.data")
        raise MalformedEvent(reason, path) from err
    except msgspec.ValidationError as err:  # from convert
        reason, path = _field_of(err, "$.data")
        raise MalformedEvent(reason, path) from err


def encode_command(command: AnyCommand) -> bytes:
    return _encoder.encode(command)


def decode_command(data: bytes | bytearray | memoryview) -> AnyCommand:
    try:
        cmd: AnyCommand = _command_decoder.decode(data)
        return cmd
    except msgspec.DecodeError as err:
        reason, path = _field_of(err, "$")
        raise MalformedEvent(reason, path) from err
