"""The one codec: JSON on the wire (any language can publish), msgspec for speed.

Decoding takes one pass for an event in its current schema version: the envelope's ``type`` is the tag
of a msgspec tagged union of one wire struct per event type, so the payload is decoded straight into its
class (docs/benchmarks.md, ``rebuild``). Anything that pass does not take (an older schema version, an
unknown type, any error) goes the careful way: the envelope decoded with its payload left as
``msgspec.Raw``, then the payload through the decoder for its tag (or, for an older schema version,
through the upcasters first). Both give the same envelope; every decoding error becomes
``MalformedEvent`` naming the field.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any, Union

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


def _tagged_wire(tag: str, cls: type[Event]) -> type[msgspec.Struct]:
    """The envelope of one event type with ``type`` as its tag: decoding the union of these picks the
    payload's class from the envelope's own ``type`` field, wherever it stands in the object."""
    return msgspec.defstruct(
        f"_Wire_{cls.__name__}",
        [
            ("id", str),
            ("schema_version", int),
            ("occurred_at", datetime),
            ("source", str),
            ("data", cls),
            ("causation_id", str, ""),
            ("correlation_id", str, ""),
        ],
        tag_field="type",
        tag=tag,
        frozen=True,
        kw_only=True,
        gc=False,
    )


_TAGGED_WIRES = tuple(_tagged_wire(tag, cls) for tag, cls in BY_TAG.items())
_one_pass_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(Union[_TAGGED_WIRES])  # noqa: UP007


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
        one = _one_pass_decoder.decode(data)
    except msgspec.DecodeError:
        return decode_two_pass(data)  # it names what is wrong, or upcasts
    payload: Event = one.data
    if one.schema_version != payload.VERSION:
        return decode_two_pass(data)  # an older shape: through the upcasters
    return Envelope(
        id=one.id,
        type=payload.TAG,
        schema_version=one.schema_version,
        occurred_at=one.occurred_at,
        source=one.source,
        causation_id=one.causation_id,
        correlation_id=one.correlation_id,
        data=payload,
    )


def decode_two_pass(data: bytes | bytearray | memoryview) -> Envelope:
    """``decode`` without the one-pass union: what it falls back to, and the reference it is tested
    against."""
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
