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
                       appended, then all are appended as one atomic batch (``atomic.py``): all or
                       nothing. Reply ``{"results": [{"seq", "duplicate", "id"}]}``.

Errors are micro errors (``Nats-Service-Error-Code`` / ``Nats-Service-Error`` headers) with a JSON body
(``ErrorReply``): 400 for input that will never be accepted (recorded in ``DSE_REJECTED`` under
``dse.rejected.<reason_code>``), 503 for a store that is unavailable right now (not recorded: the caller
knows, and retries; with the same ``id`` the retry dedupes), 500 for a bug (logged). Whatever the
store would refuse about an event itself (its size against the server's max_payload, its subject) is
checked by the admission before appending, so no input is answered 500 (docs/ingest.md, "Errors").

A store that is briefly away (a server restart, a stream leader election) is retried within the
request's budget (``append_budget``, 4 s: under the 5 s a caller such as ``IngestClient`` waits for the
answer, so the caller hears a 503 naming the cause rather than a timeout); only then is the answer 503.
A batch is stored as a whole or not at all, so a retry after a failure re-sends all of it; events
already stored within the duplicate window (a retry after a lost ack, an id sent before) are answered
as duplicates with their original sequence.

A caller's ``id`` becomes the ``Nats-Msg-Id``, so retries inside the stream's duplicate window are stored
once and answered with the original sequence. Without an ``id`` every request is a new event.

What is accepted and how a refusal is worded are decided by pure code (``engine.core.admission``,
``engine.core.event_validation``, ``engine.core.refusals``) on the wire shapes of ``events.ingest_wire``;
this module is the effects around them: the micro service, appending within a budget, recording refused
input, and the ``dsctl ingest run`` process (which checks that the two streams it writes to exist and
exits naming the missing ones: the engine, or ``dsctl admin streams``, creates them).

Limits come from the server the service is connected to (``Limits``: its max_payload), and every
refusal, of any kind, is kept in ``DSE_REJECTED``: the record is cut to fit the server's max_payload,
and recording it is retried within ``rejected_timeout`` while the stream is briefly away.

Requests on one endpoint are handled one at a time (nats-py runs a subscription's callbacks in order),
which keeps the append order equal to the arrival order for a publisher that does not wait for replies;
run more instances (one queue group) for throughput.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Final

import msgspec
import nats.micro
import structlog
from nats.aio.client import Client
from nats.micro.request import Request
from nats.micro.service import EndpointStats, Service

from engine.core.admission import DEFAULT_LIMITS, Limits, envelope_from, envelopes_from_batch
from engine.core.event_validation import CONTROL
from engine.core.refusals import Refused, clipped, refusal, rejection_record
from engine.ingest.atomic import AtomicBatches, BatchesUnavailable
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
from engine.store.jetstream_api import check_error, translate_errors
from engine.store.settings import NatsSettings
from engine.store.setup import INGEST_NEEDS, check
from events.envelope import Envelope
from events.errors import DsctlError, InvalidInput, TransientError
from events.ingest_wire import (
    FAILED,
    HEADER_ROOM,
    INTERNAL,
    SERVICE_NAME,
    UNAVAILABLE,
    BatchReply,
    ErrorDetail,
    ErrorReply,
    IngestReply,
)
from events.subjects import (
    INGEST_BATCH_SUBJECT,
    INGEST_EVENT_SUBJECT,
    REJECTED_STREAM,
    rejected_subject,
)

log = structlog.get_logger("dsctl.ingest")

SERVICE_DESCRIPTION: Final = (
    "Validates events from other services, appends them to the dsctl event log and replies with the "
    "stream sequence; refused input is kept in DSE_REJECTED"
)
#: how long one request may wait for a store that is away before the answer is 503
APPEND_BUDGET: Final = 4.0
_MAX_DESCRIPTION = 1000

_encoder = msgspec.json.Encoder()


def service_version() -> str:
    """The package version: micro services must carry a semver, and this one changes with the contract."""
    try:
        return importlib.metadata.version("dsctl")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


def _new_id() -> str:
    """An id for an event that came without one: every such request is a new event."""
    return str(uuid.uuid4())


def _header_safe(text: str) -> str:
    """Error descriptions echo user input and travel in a header: no CR/LF, bounded length."""
    text = CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
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
        self.limits = DEFAULT_LIMITS
        # batches go in atomically on the JetStream store; another store (in memory) appends a validated
        # batch as a whole anyway
        self._batches = (
            AtomicBatches(nc, store, stream=store.stream, clock=clock)
            if isinstance(store, JetStreamEventStore)
            else None
        )

    @property
    def id(self) -> str:
        return self._service.id if self._service is not None else ""

    @property
    def subjects(self) -> tuple[str, str]:
        return (INGEST_EVENT_SUBJECT, INGEST_BATCH_SUBJECT)

    def info(self) -> dict[str, Any]:
        """What ``$SRV.INFO`` answers."""
        if self._service is None:
            return {}
        result: dict[str, Any] = self._service.info().to_dict()
        return result

    async def start(self) -> None:
        # the server's max_payload bounds a request, and a stored event (with room for its headers)
        self.limits = Limits(max_request_bytes=self._nc.max_payload, max_payload=self._nc.max_payload)
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
                subject=INGEST_EVENT_SUBJECT,
                handler=self._on_event,
                metadata={"request": "one event or envelope (JSON)", "reply": '{"seq","duplicate","id"}'},
            )
            await self._service.add_endpoint(
                name="batch",
                subject=INGEST_BATCH_SUBJECT,
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
        await self._handle(request, INGEST_EVENT_SUBJECT, self._append_one)

    async def _on_batch(self, request: Request) -> None:
        await self._handle(request, INGEST_BATCH_SUBJECT, self._append_batch)

    async def _append_one(self, data: bytes) -> bytes:
        envelope = envelope_from(data, now=self._clock(), new_id=_new_id, limits=self.limits)
        result = await append_within(self._store, envelope, Deadline(self._append_budget))
        self._count(result.duplicate)
        log.info(
            "ingest.accepted", type=envelope.type, id=envelope.id, seq=result.seq, duplicate=result.duplicate
        )
        return _encoder.encode(IngestReply(result.seq, result.duplicate, envelope.id))

    async def _append_batch(self, data: bytes) -> bytes:
        envelopes = envelopes_from_batch(data, now=self._clock(), new_id=_new_id, limits=self.limits)
        if self._batches is not None:
            results = await self._batches.append(envelopes, Deadline(self._append_budget))
        else:
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
        """For a store other than JetStream's: every envelope appended, retried within the budget; a
        retry re-sends only what is not stored yet (when the store says which:
        ``append_many_settled``), else the rest as a whole."""
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
            if _replayed(request):
                # a JetStream consumer's delivery (its reply subject acks it): someone with read access to
                # a stream had the server copy stored records onto our subject. Not a publisher's request:
                # kept as refused, never appended, and not answered (the answer would ack the delivery).
                refused = clipped(refusal(InvalidInput(REPLAYED_TEXT, "reply")))
                self.counters.rejected += 1
                log.warning("ingest.replayed_refused", endpoint=endpoint)
                await self._keep_rejected(endpoint, data, refused)
                return
            try:
                body: bytes = await work(data)
            except InvalidInput as err:
                refused = clipped(refusal(err))
                self.counters.rejected += 1
                log.warning(
                    "ingest.rejected", endpoint=endpoint, reason_code=refused.reason_code, field=refused.field
                )
                await self._keep_rejected(endpoint, data, refused)
                await self._reply_error(
                    request, 400, refused.reason_code, str(refused), refused.field, refused.errors,
                    limit=refused.limit,
                )  # fmt: skip
                return
            except TransientError as err:
                self.counters.unavailable += 1
                log.warning("ingest.unavailable", endpoint=endpoint, error=str(err))
                await self._reply_error(request, 503, UNAVAILABLE, f"{err}; retry with the same id", "", [])
                return
            except BatchesUnavailable as err:
                self.counters.unavailable += 1
                log.error("ingest.batches_unavailable", endpoint=endpoint, error=str(err))
                await self._reply_error(request, 503, UNAVAILABLE, str(err), "", [])
                return
            except DsctlError as err:
                self.counters.failed += 1
                log.error("ingest.failed", endpoint=endpoint, error=f"{type(err).__name__}: {err}")
                await self._reply_error(request, 500, FAILED, str(err), "", [])
                return
            except Exception as err:  # a bug: answer and keep serving
                self.counters.failed += 1
                log.exception("ingest.bug", endpoint=endpoint)
                await self._reply_error(request, 500, INTERNAL, f"{type(err).__name__}: {err}", "", [])
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
        *,
        limit: str = "",
    ) -> None:
        body = ErrorReply(
            code=code,
            reason_code=reason_code,
            description=description,
            field=field,
            errors=errors,
            limit=limit,
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

    async def _keep_rejected(self, endpoint: str, data: bytes, refused: Refused) -> None:
        record = rejection_record(
            endpoint,
            data,
            refused,
            received_at=self._clock(),
            max_bytes=self._nc.max_payload - HEADER_ROOM,
        )
        subject = rejected_subject(refused.reason_code)
        payload = _encoder.encode(record)
        context = f"record rejected input on {subject}"

        async def record_it() -> None:
            with translate_errors(context):
                ack = await self._nc.request(subject, payload, timeout=self._rejected_timeout)
            if ack.headers and ack.headers.get("Status") == "503":
                raise TransientError(f"no stream for {subject} (is {REJECTED_STREAM} there?)")
            check_error(context, ack.data)

        try:
            # a stream briefly away (a leader election) is waited for: the refusal must not be lost
            await retry_transient(context, record_it, Deadline(self._rejected_timeout))
        except DsctlError as err:
            # the caller still gets its 400, so the input is not dropped silently; the log says the
            # record is missing
            self.counters.rejections_lost += 1
            log.error("ingest.rejection_not_recorded", subject=subject, error=str(err))


REPLAYED_TEXT = (
    "a message delivered by a JetStream consumer (reply subject $JS.ACK.*) is a replay of stored records, "
    "not a request"
)


def _replayed(request: Request) -> bool:
    """nats-py's micro ``Request`` keeps the reply subject on its message only."""
    msg = getattr(request, "_msg", None)
    reply = getattr(msg, "reply", "") or ""
    return str(reply).startswith("$JS.ACK.")


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


async def run_ingest(settings: NatsSettings) -> int:
    """``dsctl ingest run``: serve until SIGINT/SIGTERM."""
    nc = await connect(settings)
    try:
        # the engine owns the streams (engine/store/setup.py): ingest only checks they are there
        await check(nc, needs=INGEST_NEEDS)
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
