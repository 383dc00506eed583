"""Admission: turn the bytes of an ingest request into the envelope that will be stored, or refuse them.

One request: decode it as ``events.ingest_wire.IngestRequest``, refuse engine-only and unknown types,
decode the payload at the version given (an older one is upcast), refuse unknown payload fields, check
the envelope fields and the event (``event_validation``), then complete what the caller left out: ``id``
(from ``new_id``), ``occurred_at`` (``now``), ``source`` (``"ingest"``), ``correlation_id`` (the id).

A batch: JSON lines or a JSON array, at most ``MAX_BATCH`` items, all or nothing: every item is admitted
before any is appended, and a refusal lists every bad item with its index (and line).

Why pure: ``now`` and ``new_id`` are arguments (this layer reads no clock and draws no randomness), so
the service's answers for a given input are table-tested without a server, and the same admission can
serve any other door into the log.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import msgspec

from engine.core.event_validation import check_envelope_fields, check_event
from engine.core.refusals import MAX_LISTED_ERRORS, Refused, refusal, split_msgspec
from engine.core.validation import Checker
from events.codec import decode_payload
from events.envelope import Envelope
from events.errors import InvalidInput, MalformedEvent
from events.ingest_wire import (
    DEFAULT_SOURCE,
    ENGINE_ONLY,
    ENGINE_ONLY_CODE,
    INVALID,
    MAX_BATCH,
    TOO_LARGE,
    IngestRequest,
)
from events.types import BY_TAG, Event

_request_decoder = msgspec.json.Decoder(IngestRequest)
_array_decoder = msgspec.json.Decoder(list[msgspec.Raw])


def _field_names(cls: type[Event]) -> frozenset[str]:
    return frozenset(f.encode_name for f in msgspec.structs.fields(cls))


_FIELDS: dict[str, frozenset[str]] = {tag: _field_names(cls) for tag, cls in BY_TAG.items()}


def envelope_from(data: bytes | msgspec.Raw, *, now: datetime, new_id: Callable[[], str]) -> Envelope:
    """Decode, check and complete one ingest request into the envelope that will be stored.

    Raises ``InvalidInput`` (``MalformedEvent`` for what does not decode) naming the JSON path."""
    try:
        request = _request_decoder.decode(data)
    except msgspec.DecodeError as err:
        raise MalformedEvent(*split_msgspec(err)) from err
    if request.type in ENGINE_ONLY:
        raise Refused(ENGINE_ONLY_CODE, f"{request.type!r} is written by the engine only", "$.type")
    cls = BY_TAG.get(request.type)
    if cls is None:
        known = ", ".join(sorted(set(BY_TAG) - ENGINE_ONLY))
        raise MalformedEvent(f"unknown event type {request.type!r} (known: {known})", "$.type")
    version = cls.VERSION if request.schema_version is None else request.schema_version
    payload = decode_payload(request.type, version, request.data)
    if version == cls.VERSION:
        # older versions go through upcasters, whose input shapes are not the current fields
        raw = msgspec.json.decode(request.data)
        unknown = sorted(set(raw) - _FIELDS[request.type]) if isinstance(raw, dict) else []
        if unknown:
            raise MalformedEvent(f"Object contains unknown field `{unknown[0]}`", f"$.data.{unknown[0]}")
    c = Checker()
    check_envelope_fields(c, request)
    c.raise_if_any(kind=request.type)
    check_event(payload)
    event_id = request.id or new_id()
    return Envelope(
        id=event_id,
        type=request.type,
        schema_version=payload.VERSION,
        occurred_at=request.occurred_at or now,
        source=request.source or DEFAULT_SOURCE,
        data=payload,
        causation_id=request.causation_id,
        correlation_id=request.correlation_id or event_id,
    )


def split_batch(data: bytes) -> list[tuple[int | None, bytes | msgspec.Raw]]:
    """A batch's items with their line numbers: a JSON array (no lines), or JSON lines (blank ones
    skipped)."""
    body = data.strip()
    items: list[tuple[int | None, bytes | msgspec.Raw]]
    if body.startswith(b"["):
        try:
            items = [(None, item) for item in _array_decoder.decode(body)]
        except msgspec.DecodeError as err:
            raise MalformedEvent(*split_msgspec(err)) from err
    else:
        items = [(n, line) for n, line in enumerate(data.split(b"\n"), start=1) if line.strip()]
    if not items:
        raise MalformedEvent("empty batch: send JSON lines or a JSON array of events", "$")
    return items


def envelopes_from_batch(data: bytes, *, now: datetime, new_id: Callable[[], str]) -> list[Envelope]:
    """Every item of a batch, or ``Refused`` listing the problems of every bad item (none is kept)."""
    items = split_batch(data)
    if len(items) > MAX_BATCH:
        raise Refused(TOO_LARGE, f"a batch holds at most {MAX_BATCH} events, this one {len(items)}", "$")
    envelopes: list[Envelope] = []
    problems: list[Refused] = []
    for index, (line, item) in enumerate(items):
        try:
            envelopes.append(envelope_from(item, now=now, new_id=new_id))
        except InvalidInput as err:
            problems.append(refusal(err, index=index, line=line))
    if problems:
        details = [d for p in problems for d in p.errors]
        first = problems[0]
        where = ", ".join(
            f"item {d.index}" + (f" (line {d.line})" if d.line is not None else "")
            for d in [p.errors[0] for p in problems[:5]]
        )
        message = f"{len(problems)} of {len(items)} events refused, none appended ({where}): {first.reason}"
        codes = {p.reason_code for p in problems}
        code = first.reason_code if len(codes) == 1 else INVALID
        raise Refused(code, message, first.field, details[:MAX_LISTED_ERRORS])
    return envelopes
