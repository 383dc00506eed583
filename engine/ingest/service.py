"""The ingest service: how services that are not dsctl add facts to the log, validated, over request/reply.

Why a service and not "publish to the stream": a direct publish to ``dse.node.<name>.registered`` is
stored as it is, and a payload the codec cannot read then surfaces much later as a ``MalformedStoredEvent``
in every reader. Ingest refuses it at the door instead, says which field is wrong, and keeps the refused
input in ``DSE_REJECTED`` so that nothing is silently dropped (the caller sees the 400, an operator sees
the record).

Endpoints (a nats-py micro service, so ``nats micro ls`` / ``$SRV.PING`` / ``$SRV.INFO`` find it):

    dse.ingest.event   one event: a full envelope, or ``{"type": ..., "data": {...}}`` plus any envelope
                       fields; the service fills ``id`` (uuid4), ``occurred_at`` (now), ``source``
                       ("ingest") and ``schema_version`` (current; an older one is upcast).
                       Reply ``{"seq": N, "duplicate": bool, "id": "..."}``.
    dse.ingest.batch   JSON lines or a JSON array of the same; every item is validated before any is
                       appended (all or nothing), then reply ``{"results": [{"seq", "duplicate", "id"}]}``.

Errors are micro errors (``Nats-Service-Error-Code`` / ``Nats-Service-Error`` headers) with a JSON body
(``ErrorReply``): 400 for input that will never be accepted (recorded in ``DSE_REJECTED`` under
``dse.rejected.<reason_code>``), 503 for a store that is unavailable right now (not recorded: the caller
knows, and retries; with the same ``id`` the retry dedupes), 500 for a bug (logged).

A store that is briefly away (a server restart, a stream leader election) is retried within the
request's budget (``append_budget``, 4 s: under the 5 s a caller such as ``IngestClient`` waits for the
answer, so the caller hears a 503 naming the cause rather than a timeout); only then is the answer 503.
A batch retried after a partial failure re-sends only the events not yet stored, so each keeps the
sequence and ``duplicate`` flag of its own first append.

A caller's ``id`` becomes the ``Nats-Msg-Id``, so retries inside the stream's duplicate window are stored
once and answered with the original sequence. Without an ``id`` every request is a new event.

Requests on one endpoint are handled one at a time (nats-py runs a subscription's callbacks in order),
which keeps the append order equal to the arrival order for a publisher that does not wait for replies;
run more instances (one queue group) for throughput.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib.metadata
import re
import signal
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Final, TextIO

import msgspec
import nats.micro
import structlog
from nats.aio.client import Client
from nats.micro.request import Request
from nats.micro.service import EndpointStats, Service

from engine.core import names
from engine.core.daemonset_validation import check_labels, check_name, check_spec
from engine.core.defaults import with_daemonset_defaults
from engine.core.tolerations import TAINT_EFFECTS
from engine.core.validation import Checker, ManifestInvalid, join
from engine.runtime.retry import Deadline
from engine.store.connection import close, connect
from engine.store.event_store import (
    AppendResult,
    EventStore,
    JetStreamEventStore,
    SettlingStore,
    append_within,
    retry_transient,
)
from engine.store.jetstream_api import api_request, check_error, translate_errors
from engine.store.settings import NatsSettings
from engine.store.streams import EVENTS_STREAM, REJECTED_STREAM, apply_definitions, load_definitions
from events.codec import decode_payload
from events.envelope import Envelope
from events.errors import (
    DsctlError,
    InvalidInput,
    MalformedEvent,
    NotFound,
    TransientError,
)
from events.k8s import NodeCondition, Taint
from events.subjects import PREFIX, rejected_subject
from events.types import (
    BY_TAG,
    DaemonSetApplied,
    DaemonSetDeleted,
    DecisionRecorded,
    Event,
    LeaderElected,
    NodeConditionChanged,
    NodeLabelsChanged,
    NodeRegistered,
    NodeTaintsChanged,
    PodCreated,
    PodEvent,
)

log = structlog.get_logger("dsctl.ingest")

SERVICE_NAME: Final = "dsctl-ingest"
SERVICE_DESCRIPTION: Final = (
    "Validates events from other services, appends them to the dsctl event log and replies with the "
    "stream sequence; refused input is kept in DSE_REJECTED"
)
EVENT_SUBJECT: Final = f"{PREFIX}.ingest.event"
BATCH_SUBJECT: Final = f"{PREFIX}.ingest.batch"
DEFAULT_SOURCE: Final = "ingest"
#: tags only the engine may write: a forged decision would be "explained" and replayed as if the
#: engine had made it, and a forged election would fence the real leader out
ENGINE_ONLY: Final = frozenset({DecisionRecorded.TAG, LeaderElected.TAG})
MAX_BATCH: Final = 1000
#: how long one request may wait for a store that is away before the answer is 503
APPEND_BUDGET: Final = 4.0
#: a refused input is kept up to this size (the record must fit the server's max payload, 1 MiB default)
MAX_KEPT_INPUT: Final = 256 * 1024
_MAX_DESCRIPTION = 1000
_MAX_LISTED_ERRORS = 50

# reason codes: the last token of ``dse.rejected.<code>``
MALFORMED: Final = "malformed"  # not JSON, wrong shape, wrong type, unknown field, unknown event type
INVALID: Final = "invalid"  # decodes, but breaks a rule (names, label syntax, taint effects, ...)
ENGINE_ONLY_CODE: Final = "engine_only"
TOO_LARGE: Final = "too_large"


def service_version() -> str:
    """The package version: micro services must carry a semver, and this one changes with the contract."""
    try:
        return importlib.metadata.version("dsctl")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


# --- wire types ---------------------------------------------------------------------------------------


class IngestRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What ``dse.ingest.event`` accepts: an envelope whose every field but ``type`` and ``data`` is
    optional. Unknown fields are refused: a misspelt ``corelation_id`` must not vanish silently."""

    type: str
    data: msgspec.Raw
    id: str = ""
    schema_version: int | None = None
    occurred_at: Annotated[datetime, msgspec.Meta(tz=True)] | None = None
    source: str = ""
    causation_id: str = ""
    correlation_id: str = ""


class IngestReply(msgspec.Struct, frozen=True):
    """Where the event is: its stream sequence, and whether it was already there (a retried ``id``)."""

    seq: int
    duplicate: bool
    id: str


class BatchReply(msgspec.Struct, frozen=True):
    results: list[IngestReply]


class ErrorDetail(msgspec.Struct, frozen=True, omit_defaults=True):
    field: str
    reason: str
    #: for a batch: the item's position (0-based) and, for JSON lines, its line (1-based)
    index: int | None = None
    line: int | None = None


class ErrorReply(msgspec.Struct, frozen=True, kw_only=True):
    """The body of an error reply (the micro headers carry ``code`` and ``description`` too)."""

    code: int
    reason_code: str
    description: str
    field: str
    errors: list[ErrorDetail] = []


class Rejection(msgspec.Struct, frozen=True, kw_only=True):
    """A record in ``DSE_REJECTED``. ``input`` is the request body as UTF-8 text, or base64 when it is
    not valid UTF-8 (``input_encoding`` says which), so the exact bytes can be recovered and replayed."""

    reason: str
    field: str
    reason_code: str
    endpoint: str
    received_at: datetime
    input: str
    input_encoding: str = "utf-8"
    input_truncated: bool = False
    errors: list[ErrorDetail] = []


_request_decoder = msgspec.json.Decoder(IngestRequest)
_array_decoder = msgspec.json.Decoder(list[msgspec.Raw])
_encoder = msgspec.json.Encoder()


# --- refusals ------------------------------------------------------------------------------------------


class Refused(InvalidInput):
    """An input the service will never accept. ``reason_code`` names the ``dse.rejected.<code>`` subject;
    ``errors`` lists every problem found (a batch can have many)."""

    def __init__(
        self, reason_code: str, message: str, field: str, errors: Sequence[ErrorDetail] = ()
    ) -> None:
        super().__init__(message, field)
        if field and field in message:  # already says where: do not repeat it
            self.args = (message,)
        self.reason_code = reason_code
        self.errors = list(errors) or [ErrorDetail(field=field, reason=message)]


def _refusal(err: InvalidInput, *, index: int | None = None, line: int | None = None) -> Refused:
    """Name the problem (and where in a batch it was) in the one shape the service replies with."""
    if isinstance(err, Refused) and index is None:
        return err
    code = err.reason_code if isinstance(err, Refused) else _code_of(err)
    field = err.field or "$"
    if isinstance(err, ManifestInvalid):
        details = [ErrorDetail(field=e.path or "$", reason=e.message) for e in err.errors]
    elif isinstance(err, Refused):
        details = err.errors
    else:
        details = [ErrorDetail(field=field, reason=err.reason)]
    if index is not None:
        details = [
            ErrorDetail(field=f"$[{index}]{d.field[1:]}", reason=d.reason, index=index, line=line)
            for d in details
        ]
        field = f"$[{index}]{field[1:]}"
    message = "; ".join(f"{d.field}: {d.reason}" for d in details[:5])
    if len(details) > 5:
        message += f"; and {len(details) - 5} more"
    return Refused(code, message, field, details)


def _clip(text: str, limit: int = 2000) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _clipped(refusal: Refused) -> Refused:
    """Bounded texts: a reason may quote the input (an unknown field's name), and the reply and the
    rejected record must stay far below the server's max payload whatever the input was."""
    details = [
        ErrorDetail(field=_clip(d.field, 500), reason=_clip(d.reason), index=d.index, line=d.line)
        for d in refusal.errors[:_MAX_LISTED_ERRORS]
    ]
    return Refused(refusal.reason_code, _clip(refusal.reason), _clip(refusal.field, 500), details)


def _code_of(err: InvalidInput) -> str:
    if isinstance(err, MalformedEvent):
        return MALFORMED
    return INVALID


def _split_msgspec(err: Exception) -> tuple[str, str]:
    """msgspec says "reason - at `$.x`"; the service wants (reason, path) with the path always set."""
    text = str(err)
    reason, sep, rest = text.partition(" - at `")
    return (reason, rest.rstrip("`")) if sep else (text, "$")


# --- validation ------------------------------------------------------------------------------------------


_ID = re.compile(r"^[!-~]{1,128}$")  # printable ASCII, no spaces: it travels as the Nats-Msg-Id header
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONDITION_STATUSES = ("True", "False", "Unknown")


def _field_names(cls: type[Event]) -> frozenset[str]:
    return frozenset(f.encode_name for f in msgspec.structs.fields(cls))


_FIELDS: dict[str, frozenset[str]] = {tag: _field_names(cls) for tag, cls in BY_TAG.items()}


def _check_envelope_fields(c: Checker, request: IngestRequest) -> None:
    if request.id and not _ID.match(request.id):
        c.invalid("$.id", request.id, "must be 1-128 printable ASCII characters without spaces")
    for path, value in (
        ("$.source", request.source),
        ("$.causation_id", request.causation_id),
        ("$.correlation_id", request.correlation_id),
    ):
        if len(value) > 253 or _CONTROL.search(value):
            c.invalid(path, value, "must be at most 253 characters, without control characters")


def _check_taints(c: Checker, taints: Sequence[Taint], path: str) -> None:
    seen: set[tuple[str, str]] = set()
    for i, taint in enumerate(taints):
        p = join(path, i)
        for problem in names.qualified_name(taint.key):
            c.invalid(join(p, "key"), taint.key, problem)
        for problem in names.label_value(taint.value):
            c.invalid(join(p, "value"), taint.value, problem)
        if taint.effect not in TAINT_EFFECTS:
            c.unsupported(join(p, "effect"), taint.effect, TAINT_EFFECTS)
        if (taint.key, taint.effect) in seen:
            c.add(
                p, f'Duplicate value: "{taint.key}:{taint.effect}": taints must be unique by key and effect'
            )
        seen.add((taint.key, taint.effect))


def _check_condition(c: Checker, condition: NodeCondition, path: str) -> None:
    if not condition.type:
        c.required(join(path, "type"))
    if condition.status not in _CONDITION_STATUSES:
        c.unsupported(join(path, "status"), condition.status, _CONDITION_STATUSES)


def check_event(event: Event) -> None:
    """The rules the API server would apply to the same object, on a decoded payload; raises
    ``ManifestInvalid`` listing every problem with its ``$.data...`` path."""
    c = Checker()
    if event.TAG.startswith("node."):
        check_name(c, getattr(event, "name"), "$.data.name")  # noqa: B009 - every node fact has a name
    match event:
        case NodeRegistered():
            check_labels(c, event.labels, "$.data.labels")
            _check_taints(c, event.taints, "$.data.taints")
            for i, condition in enumerate(event.conditions):
                _check_condition(c, condition, join("$.data.conditions", i))
        case NodeLabelsChanged():
            check_labels(c, event.labels, "$.data.labels")
        case NodeTaintsChanged():
            _check_taints(c, event.taints, "$.data.taints")
        case NodeConditionChanged():
            _check_condition(c, event.condition, "$.data.condition")
        case DaemonSetApplied() | DaemonSetDeleted():
            check_name(c, event.namespace, "$.data.namespace", label=True)
            check_name(c, event.name, "$.data.name")
            if not event.uid:
                c.required("$.data.uid")
        case PodEvent():
            check_name(c, event.node, "$.data.node")
            check_name(c, event.namespace, "$.data.namespace", label=True)
            check_name(c, event.name, "$.data.name")
    match event:
        case DaemonSetApplied():
            if event.generation < 1:
                c.invalid("$.data.generation", event.generation, "must be greater than or equal to 1")
            if not event.template_hash:
                c.required("$.data.template_hash")
            check_labels(c, event.labels, "$.data.labels")
            # the same checks `dsctl apply` runs, so the engine never reconciles a spec it would refuse
            inner = Checker()
            check_spec(inner, with_daemonset_defaults({"spec": msgspec.to_builtins(event.spec)})["spec"])
            for e in inner.errors:
                c.add("$.data." + e.path if e.path else "$.data.spec", e.message)
        case PodCreated():
            if not event.uid:
                c.required("$.data.uid")
            check_labels(c, event.labels, "$.data.labels")
        case _:
            pass
    c.raise_if_any(kind=event.TAG, name=str(getattr(event, "name", "")))


def envelope_from(
    data: bytes | msgspec.Raw, *, now: datetime, new_id: Callable[[], str] = lambda: str(uuid.uuid4())
) -> Envelope:
    """Decode, check and complete one ingest request into the envelope that will be stored.

    Raises ``InvalidInput`` (``MalformedEvent`` for what does not decode) naming the JSON path."""
    try:
        request = _request_decoder.decode(data)
    except msgspec.DecodeError as err:
        raise MalformedEvent(*_split_msgspec(err)) from err
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
    _check_envelope_fields(c, request)
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
            raise MalformedEvent(*_split_msgspec(err)) from err
    else:
        items = [(n, line) for n, line in enumerate(data.split(b"\n"), start=1) if line.strip()]
    if not items:
        raise MalformedEvent("empty batch: send JSON lines or a JSON array of events", "$")
    return items


def envelopes_from_batch(data: bytes, *, now: datetime) -> list[Envelope]:
    """Every item of a batch, or ``Refused`` listing the problems of every bad item (none is kept)."""
    items = split_batch(data)
    if len(items) > MAX_BATCH:
        raise Refused(TOO_LARGE, f"a batch holds at most {MAX_BATCH} events, this one {len(items)}", "$")
    envelopes: list[Envelope] = []
    problems: list[Refused] = []
    for index, (line, item) in enumerate(items):
        try:
            envelopes.append(envelope_from(item, now=now))
        except InvalidInput as err:
            problems.append(_refusal(err, index=index, line=line))
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
        raise Refused(code, message, first.field, details[:_MAX_LISTED_ERRORS])
    return envelopes


# --- the service ------------------------------------------------------------------------------------------


def _header_safe(text: str) -> str:
    """Error descriptions echo user input and travel in a header: no CR/LF, bounded length."""
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return text if len(text) <= _MAX_DESCRIPTION else text[: _MAX_DESCRIPTION - 3] + "..."


class _Counters(msgspec.Struct, kw_only=True):
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    unavailable: int = 0
    failed: int = 0
    rejections_lost: int = 0


class IngestService:
    """A running ingest service (see ``serve_ingest``). ``stop`` lets the request in hand finish."""

    def __init__(
        self,
        nc: Client,
        store: EventStore,
        *,
        queue_group: str | None = None,
        rejected_timeout: float = 5.0,
        append_budget: float = APPEND_BUDGET,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._nc = nc
        self._store = store
        self._queue_group = queue_group
        self._rejected_timeout = rejected_timeout
        self._append_budget = append_budget
        self._clock = clock
        self._service: Service | None = None
        self._busy = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.counters = _Counters()

    @property
    def id(self) -> str:
        return self._service.id if self._service is not None else ""

    @property
    def subjects(self) -> tuple[str, str]:
        return (EVENT_SUBJECT, BATCH_SUBJECT)

    def info(self) -> dict[str, Any]:
        """What ``$SRV.INFO`` answers."""
        if self._service is None:
            return {}
        result: dict[str, Any] = self._service.info().to_dict()
        return result

    async def start(self) -> None:
        self._service = await nats.micro.add_service(
            self._nc,
            name=SERVICE_NAME,
            version=service_version(),
            description=SERVICE_DESCRIPTION,
            metadata={"contract": "dsctl schema -o asyncapi", "rejected_stream": REJECTED_STREAM},
            queue_group=self._queue_group,
            stats_handler=self._stats,
        )
        try:
            await self._service.add_endpoint(
                name="event",
                subject=EVENT_SUBJECT,
                handler=self._on_event,
                metadata={"request": "one event or envelope (JSON)", "reply": '{"seq","duplicate","id"}'},
            )
            await self._service.add_endpoint(
                name="batch",
                subject=BATCH_SUBJECT,
                handler=self._on_batch,
                metadata={"request": "JSON lines or a JSON array of events", "reply": '{"results": [...]}'},
            )
        except BaseException:
            await self.stop()
            raise
        await self._nc.flush()
        log.info("ingest.started", service=SERVICE_NAME, id=self.id, subjects=list(self.subjects))

    async def stop(self, timeout: float = 5.0) -> None:
        service, self._service = self._service, None
        if service is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        try:
            await service.stop()
        except Exception as err:  # the connection may already be gone; the subscriptions go with it
            log.debug("ingest.stop_incomplete", error=f"{type(err).__name__}: {err}")
        log.info("ingest.stopped", service=SERVICE_NAME, **msgspec.structs.asdict(self.counters))

    def _stats(self, endpoint: EndpointStats) -> dict[str, int]:
        # the micro error counters only see handlers that raise; ours answer every error themselves
        return msgspec.structs.asdict(self.counters)

    async def _on_event(self, request: Request) -> None:
        await self._handle(request, EVENT_SUBJECT, self._append_one)

    async def _on_batch(self, request: Request) -> None:
        await self._handle(request, BATCH_SUBJECT, self._append_batch)

    async def _append_one(self, data: bytes) -> bytes:
        envelope = envelope_from(data, now=self._clock())
        result = await append_within(self._store, envelope, Deadline(self._append_budget))
        self._count(result.duplicate)
        log.info(
            "ingest.accepted", type=envelope.type, id=envelope.id, seq=result.seq, duplicate=result.duplicate
        )
        return _encoder.encode(IngestReply(result.seq, result.duplicate, envelope.id))

    async def _append_batch(self, data: bytes) -> bytes:
        envelopes = envelopes_from_batch(data, now=self._clock())
        results = await self._append_all(envelopes)
        for r in results:
            self._count(r.duplicate)
        log.info(
            "ingest.batch_accepted",
            events=len(results),
            duplicates=sum(r.duplicate for r in results),
            first_seq=results[0].seq,
            last_seq=results[-1].seq,
        )
        return _encoder.encode(
            BatchReply(
                [IngestReply(r.seq, r.duplicate, e.id) for r, e in zip(results, envelopes, strict=True)]
            )
        )

    async def _append_all(self, envelopes: list[Envelope]) -> list[AppendResult]:
        """Every envelope appended, retried within the budget; a retry re-sends only what is not stored
        yet (when the store says which: ``append_many_settled``), else the rest as a whole."""
        results: list[AppendResult | None] = [None] * len(envelopes)
        store = self._store

        async def attempt() -> list[AppendResult]:
            todo = [i for i, r in enumerate(results) if r is None]
            batch = [envelopes[i] for i in todo]
            outcomes: list[AppendResult | DsctlError]
            if isinstance(store, SettlingStore):
                outcomes = await store.append_many_settled(batch)
            else:
                outcomes = list(await store.append_many(batch))
            failures: list[DsctlError] = []
            for index, outcome in zip(todo, outcomes, strict=True):
                if isinstance(outcome, AppendResult):
                    results[index] = outcome
                else:
                    failures.append(outcome)
            # a refusal ends the request at once (500); only transient failures are worth the wait
            refused = [f for f in failures if not isinstance(f, TransientError)]
            if refused:
                raise refused[0]
            if failures:
                raise failures[0]
            return [r for r in results if r is not None]

        return await retry_transient(
            f"append a batch of {len(envelopes)}", attempt, Deadline(self._append_budget)
        )

    def _count(self, duplicate: bool) -> None:
        if duplicate:
            self.counters.duplicates += 1
        else:
            self.counters.accepted += 1

    async def _handle(
        self, request: Request, endpoint: str, work: Callable[[bytes], Awaitable[bytes]]
    ) -> None:
        """Never raises (bar cancellation): every outcome is a reply, and every refusal is recorded."""
        self._busy += 1
        self._idle.clear()
        started = time.perf_counter()
        try:
            data = bytes(request.data or b"")
            try:
                body: bytes = await work(data)
            except InvalidInput as err:
                refusal = _clipped(_refusal(err))
                self.counters.rejected += 1
                log.warning(
                    "ingest.rejected", endpoint=endpoint, reason_code=refusal.reason_code, field=refusal.field
                )
                await self._keep_rejected(endpoint, data, refusal)
                await self._reply_error(
                    request, 400, refusal.reason_code, str(refusal), refusal.field, refusal.errors
                )
                return
            except TransientError as err:
                self.counters.unavailable += 1
                log.warning("ingest.unavailable", endpoint=endpoint, error=str(err))
                await self._reply_error(request, 503, "unavailable", f"{err}; retry with the same id", "", [])
                return
            except DsctlError as err:
                self.counters.failed += 1
                log.error("ingest.failed", endpoint=endpoint, error=f"{type(err).__name__}: {err}")
                await self._reply_error(request, 500, "failed", str(err), "", [])
                return
            except Exception as err:  # a bug: answer and keep serving
                self.counters.failed += 1
                log.exception("ingest.bug", endpoint=endpoint)
                await self._reply_error(request, 500, "internal", f"{type(err).__name__}: {err}", "", [])
                return
            await self._respond(request, body, None)
        except Exception:  # replying itself failed (connection closing): nothing more to do for this one
            log.exception("ingest.reply_failed", endpoint=endpoint)
        finally:
            self._busy -= 1
            if self._busy == 0:
                self._idle.set()
            log.debug("ingest.handled", endpoint=endpoint, seconds=round(time.perf_counter() - started, 6))

    async def _reply_error(
        self,
        request: Request,
        code: int,
        reason_code: str,
        description: str,
        field: str,
        errors: list[ErrorDetail],
    ) -> None:
        body = ErrorReply(
            code=code, reason_code=reason_code, description=description, field=field, errors=errors
        )
        headers = {"Nats-Service-Error": _header_safe(description), "Nats-Service-Error-Code": str(code)}
        await self._respond(request, _encoder.encode(body), headers)

    @staticmethod
    async def _respond(request: Request, body: bytes, headers: dict[str, str] | None) -> None:
        # a plain publish (no reply subject) is still validated and appended or recorded; only the
        # answer has nowhere to go
        try:
            await request.respond(body, headers=headers)
        except ValueError:
            log.debug("ingest.no_reply_subject")

    async def _keep_rejected(self, endpoint: str, data: bytes, refusal: Refused) -> None:
        kept = data[:MAX_KEPT_INPUT]
        try:
            text, encoding = kept.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            text, encoding = base64.b64encode(kept).decode("ascii"), "base64"
        record = Rejection(
            reason=refusal.reason,
            field=refusal.field,
            reason_code=refusal.reason_code,
            endpoint=endpoint,
            received_at=self._clock(),
            input=text,
            input_encoding=encoding,
            input_truncated=len(data) > MAX_KEPT_INPUT,
            errors=refusal.errors[:_MAX_LISTED_ERRORS],
        )
        subject = rejected_subject(refusal.reason_code)
        try:
            with translate_errors(f"record rejected input on {subject}"):
                ack = await self._nc.request(subject, _encoder.encode(record), timeout=self._rejected_timeout)
            if ack.headers and ack.headers.get("Status") == "503":
                raise TransientError(f"no stream for {subject} (is {REJECTED_STREAM} there?)")
            check_error(f"record rejected input on {subject}", ack.data)
        except DsctlError as err:
            # the caller still gets its 400, so the input is not dropped silently; the log says the
            # record is missing
            self.counters.rejections_lost += 1
            log.error("ingest.rejection_not_recorded", subject=subject, error=str(err))


async def serve_ingest(
    nc: Client,
    store: EventStore,
    *,
    queue_group: str | None = None,
    rejected_timeout: float = 5.0,
    append_budget: float = APPEND_BUDGET,
) -> IngestService:
    """Start the ingest service on ``nc``, appending through ``store``; ``await handle.stop()`` ends it."""
    service = IngestService(
        nc,
        store,
        queue_group=queue_group,
        rejected_timeout=rejected_timeout,
        append_budget=append_budget,
    )
    await service.start()
    return service


async def _create_missing_streams(nc: Client) -> None:
    """Create the two streams ingest writes to if they are missing, so an ingest started before the
    engine does not answer every request with 503; existing ones are left exactly as they are (their
    configuration, e.g. replicas in a cluster, belongs to whoever set up the engine)."""
    for definition in load_definitions():
        if definition.name not in (EVENTS_STREAM, REJECTED_STREAM):
            continue
        try:
            await api_request(nc, f"STREAM.INFO.{definition.name}")
        except NotFound:
            await apply_definitions(nc, [definition])


async def run_ingest(settings: NatsSettings) -> int:
    """``dsctl ingest run``: serve until SIGINT/SIGTERM."""
    nc = await connect(settings)
    try:
        await _create_missing_streams(nc)
        store = JetStreamEventStore(nc)
        service = await serve_ingest(nc, store)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        handled: list[signal.Signals] = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
                handled.append(sig)
        try:
            await stop.wait()
        finally:
            for sig in handled:
                loop.remove_signal_handler(sig)
            await service.stop()
            await store.close()
        with contextlib.suppress(Exception):
            await nc.drain()
    finally:
        await close(nc)
    return 0


async def publish_file(nc: Client, path: str | Path, *, out: TextIO) -> int:
    """``dsctl events publish -f FILE``: see ``engine.ingest.contract.publish_file`` (imported here on
    call, because the client it uses imports this module)."""
    from engine.ingest.contract import publish_file as publish

    return await publish(nc, path, out=out)
