"""Admission: turn the bytes of an ingest request into the envelope that will be stored, or refuse them.

One request: check its size and nesting depth on the bytes (before any decoder sees them), decode it as
``events.ingest_wire.IngestRequest``, refuse engine-only, executor-only and unknown types, decode the
payload at the version given (an older one is upcast), refuse unknown payload fields, check the
envelope fields and the event (``event_validation``), complete what the caller left out: ``id`` (from
``new_id``), ``occurred_at`` (``now``), ``source`` (``"ingest"``), ``correlation_id`` (the id), and
last check that the envelope as it will be stored fits the server's max_payload and that its subject is
one NATS will take. So everything the store could refuse about the event itself is refused here, with
a field or a limit, and kept as a rejection, instead of failing the append.

A batch: JSON lines or a JSON array, at most ``MAX_BATCH`` items, all or nothing: every item is admitted
before any is appended, a refusal lists every bad item with its index (and line), and one id twice in a
batch is refused (the server's atomic batch publish refuses a batch holding a duplicate id, and one
event cannot be two items).

Why the depth is checked on the bytes: msgspec decodes nested arrays recursively, and a request of
10,000 ``[`` raised ``RecursionError`` (an answer 500). ``exceeds_depth`` strips the strings (one linear
regular-expression pass: an unterminated string runs to the end) and then measures the nesting of the
brackets left with at most ``limit + 1`` passes of ``bytes.replace``, all at C speed.

Why pure: ``now`` and ``new_id`` are arguments (this layer reads no clock and draws no randomness), and
the server's max_payload arrives in ``Limits``, so the service's answers for a given input are
table-tested without a server, and the same admission can serve any other door into the log.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Final

import msgspec

from engine.core.event_validation import check_envelope_fields, check_event
from engine.core.refusals import MAX_LISTED_ERRORS, Refused, over_limit, refusal, split_msgspec
from engine.core.validation import Checker
from events.codec import child_path, decode_payload, encode
from events.envelope import Envelope
from events.errors import InvalidInput, MalformedEvent
from events.ingest_wire import (
    DEFAULT_SOURCE,
    ENGINE_ONLY,
    ENGINE_ONLY_CODE,
    EXECUTOR_ONLY,
    EXECUTOR_ONLY_CODE,
    HEADER_ROOM,
    INVALID,
    MAX_BATCH,
    MAX_DEPTH,
    MAX_REQUEST_BYTES,
    IngestRequest,
)
from events.subjects import subject_for
from events.types import BY_TAG, Event

_request_decoder = msgspec.json.Decoder(IngestRequest)
_array_decoder = msgspec.json.Decoder(list[msgspec.Raw])

#: a JSON string, escapes included; one that is never closed runs to the end of the input (so a failed
#: match never restarts at every later quote: the pass stays linear on any input)
_STRING: Final = re.compile(rb'"(?:[^"\\]|\\.)*+(?:"|\\?\Z)', re.DOTALL)
#: brackets kept, as ``[`` and ``]`` whatever their kind; every other byte deleted
_BRACKETS: Final = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS: Final = bytes(b for b in range(256) if b not in b"[]{}")
#: a subject token NATS accepts in a publish
_SUBJECT_TOKEN: Final = re.compile(r"[^\s.*>]+")


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """What one request may be. ``max_payload`` is the server's (``nc.max_payload``, 1 MiB unless the
    operator raised it); the service passes it, and a stored event must fit in it less ``HEADER_ROOM``."""

    max_request_bytes: int = MAX_REQUEST_BYTES
    max_depth: int = MAX_DEPTH
    max_payload: int = MAX_REQUEST_BYTES
    max_batch: int = MAX_BATCH

    @property
    def max_stored_bytes(self) -> int:
        return self.max_payload - HEADER_ROOM


DEFAULT_LIMITS: Final = Limits()


def _field_names(cls: type[Event]) -> frozenset[str]:
    return frozenset(f.encode_name for f in msgspec.structs.fields(cls))


_FIELDS: dict[str, frozenset[str]] = {tag: _field_names(cls) for tag, cls in BY_TAG.items()}


def exceeds_depth(data: bytes | bytearray | memoryview, limit: int) -> bool:
    """Whether arrays and objects nest more than ``limit`` deep in ``data`` (JSON or not: brackets inside
    strings do not count, and unbalanced input is measured as generously as the decoder would recurse)."""
    raw = bytes(data)
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    brackets = _STRING.sub(b"", raw).translate(_BRACKETS, _NOT_BRACKETS)
    # each pass removes the innermost pairs, so a balanced input needs as many passes as it is deep
    passes = 0
    while b"[]" in brackets:
        passes += 1
        if passes > limit:
            return True
        brackets = brackets.replace(b"[]", b"")
    # what is left is unbalanced (``]]][[``): every ``[`` left still opened a level the decoder entered
    return passes + brackets.count(b"[") > limit


def _malformed(err: msgspec.DecodeError, data: bytes | msgspec.Raw, root: str = "$") -> MalformedEvent:
    """The refusal of bytes that do not decode, naming the field, or where no field can be named (the
    bytes are not JSON), the byte: msgspec says so for a syntax error, not for invalid UTF-8."""
    reason, path = split_msgspec(err, root)
    if reason == "Invalid UTF-8 encoded string":
        try:
            bytes(data).decode("utf-8")
        except UnicodeDecodeError as bad:
            reason = f"{reason} (byte {bad.start}" + (")" if root == "$" else f" of {root})")
    return MalformedEvent(reason, path)


def check_size_and_depth(data: bytes | msgspec.Raw, limits: Limits, *, depth: int | None = None) -> None:
    """Refuse a request over the byte or nesting limit, before anything decodes it."""
    view = memoryview(data)
    if view.nbytes > limits.max_request_bytes:
        raise over_limit("max_request_bytes", limits.max_request_bytes, f"the request is {view.nbytes} bytes")
    allowed = limits.max_depth if depth is None else depth
    if exceeds_depth(view, allowed):
        raise over_limit(
            "max_depth", limits.max_depth, "arrays and objects nest deeper than the service reads"
        )


def envelope_from(
    data: bytes | msgspec.Raw,
    *,
    now: datetime,
    new_id: Callable[[], str],
    limits: Limits = DEFAULT_LIMITS,
) -> Envelope:
    """Decode, check and complete one ingest request into the envelope that will be stored.

    Raises ``InvalidInput`` (``MalformedEvent`` for what does not decode) naming the JSON path, or
    ``Refused`` naming the limit (``max_depth 64``) for an input over one."""
    check_size_and_depth(data, limits)
    try:
        request = _request_decoder.decode(data)
    except msgspec.DecodeError as err:
        raise _malformed(err, data) from err
    if request.type in ENGINE_ONLY:
        raise Refused(ENGINE_ONLY_CODE, f"{request.type!r} is written by the engine only", "$.type")
    if request.type in EXECUTOR_ONLY:
        raise Refused(
            EXECUTOR_ONLY_CODE,
            f"{request.type!r} is reported by the pod's node executor only: pod facts never come "
            "through ingest",
            "$.type",
        )
    cls = BY_TAG.get(request.type)
    if cls is None:
        known = ", ".join(sorted(set(BY_TAG) - ENGINE_ONLY - EXECUTOR_ONLY))
        raise MalformedEvent(f"unknown event type {request.type!r} (known: {known})", "$.type")
    version = cls.VERSION if request.schema_version is None else request.schema_version
    payload = decode_payload(request.type, version, request.data)
    if version == cls.VERSION:
        # older versions go through upcasters, whose input shapes are not the current fields; this full
        # decode also finds what the typed one skipped unread (invalid UTF-8 in an unknown nested key)
        try:
            raw = msgspec.json.decode(request.data)
        except msgspec.DecodeError as err:
            raise _malformed(err, request.data, "$.data") from err
        unknown = sorted(set(raw) - _FIELDS[request.type]) if isinstance(raw, dict) else []
        if unknown:
            raise MalformedEvent(
                f"Object contains unknown field `{unknown[0]}`", child_path("$.data", unknown[0])
            )
    c = Checker()
    check_envelope_fields(c, request)
    c.raise_if_any(kind=request.type)
    check_event(payload)
    event_id = request.id or new_id()
    envelope = Envelope(
        id=event_id,
        type=request.type,
        schema_version=payload.VERSION,
        occurred_at=request.occurred_at or now,
        source=request.source or DEFAULT_SOURCE,
        data=payload,
        causation_id=request.causation_id,
        correlation_id=request.correlation_id or event_id,
    )
    check_storable(envelope, limits)
    return envelope


def check_storable(envelope: Envelope, limits: Limits) -> None:
    """What the server would refuse about the append itself: a message over its max_payload (with room
    for the headers), or a subject it does not take. Both were answers 500 before they were checked."""
    stored = len(encode(envelope))
    if stored > limits.max_stored_bytes:
        raise over_limit(
            "max_payload",
            limits.max_payload,
            f"the event as stored would be {stored} bytes, over the server's maximum message size "
            f"less {HEADER_ROOM} bytes for headers",
        )
    subject = subject_for(envelope.data)
    if not all(_SUBJECT_TOKEN.fullmatch(t) for t in subject.split(".")):
        raise Refused(INVALID, f"would be stored on {subject!r}, which is not a NATS subject", "$.data")


def split_batch(data: bytes, limits: Limits = DEFAULT_LIMITS) -> list[tuple[int | None, bytes | msgspec.Raw]]:
    """A batch's items with their line numbers: a JSON array (no lines), or JSON lines (blank ones
    skipped). An array is checked for depth as a whole (one level more, its own) before it is split."""
    body = data.strip()
    items: list[tuple[int | None, bytes | msgspec.Raw]]
    if body.startswith(b"["):
        check_size_and_depth(body, limits, depth=limits.max_depth + 1)
        try:
            items = [(None, item) for item in _array_decoder.decode(body)]
        except msgspec.DecodeError as err:
            raise _malformed(err, body) from err
    else:
        items = [(n, line) for n, line in enumerate(data.split(b"\n"), start=1) if line.strip()]
    if not items:
        raise MalformedEvent("empty batch: send JSON lines or a JSON array of events", "$")
    return items


def envelopes_from_batch(
    data: bytes,
    *,
    now: datetime,
    new_id: Callable[[], str],
    limits: Limits = DEFAULT_LIMITS,
) -> list[Envelope]:
    """Every item of a batch, or ``Refused`` listing the problems of every bad item (none is kept)."""
    if len(data) > limits.max_request_bytes:
        raise over_limit("max_request_bytes", limits.max_request_bytes, f"the batch is {len(data)} bytes")
    items = split_batch(data, limits)
    if len(items) > limits.max_batch:
        raise over_limit(
            "max_batch",
            limits.max_batch,
            f"a batch holds at most {limits.max_batch} events, this one {len(items)}",
        )
    envelopes: list[Envelope] = []
    problems: list[Refused] = []
    first_with: dict[str, int] = {}
    for index, (line, item) in enumerate(items):
        try:
            envelope = envelope_from(item, now=now, new_id=new_id, limits=limits)
        except InvalidInput as err:
            problems.append(refusal(err, index=index, line=line))
            continue
        earlier = first_with.setdefault(envelope.id, index)
        if earlier != index:
            twice = Refused(
                INVALID,
                f"Duplicate value: {envelope.id!r} is also the id of item {earlier}: a batch holds each "
                "event once",
                "$.id",
            )
            problems.append(refusal(twice, index=index, line=line))
        envelopes.append(envelope)
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
