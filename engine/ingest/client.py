"""A typed Python client for the ingest service (``engine/ingest/service.py``; the wire types it
speaks are ``events.ingest_wire``).

Why a client when the protocol is plain JSON over request/reply: it turns the service's answers into the
project's error tree (a 400 is ``IngestRefused``, an ``InvalidInput`` with the field; a 503, a timeout or
no service at all is ``TransientError``), and it makes retries safe by choosing the event id *before* the
first attempt, so a retry after a lost reply is deduplicated by the server instead of stored twice.

Retries: a transient failure (503 from a service whose store is away, no answer, no service) is retried
with backoff until ``deadline`` (15 s) has passed, then raised as ``DeadlineExceeded`` naming how long
it tried and the last failure; ``attempts`` caps the number of tries as well, when given. Each request
waits at most ``timeout`` and never past the deadline.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime

import msgspec
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from engine.runtime.retry import Backoff, Deadline
from engine.store.event_store import DEFAULT_DEADLINE
from events.envelope import Envelope
from events.errors import DeadlineExceeded, InvalidInput, PermanentError, TransientError
from events.ingest_wire import BatchReply, ErrorDetail, ErrorReply, IngestReply
from events.subjects import INGEST_BATCH_SUBJECT, INGEST_EVENT_SUBJECT
from events.types import Event

__all__ = ["IngestClient", "IngestRefused", "IngestReply"]


class IngestRefused(InvalidInput):
    """The service refused the input (400). ``field`` is the first bad field's JSON path (``$[i]...`` for
    a batch), ``errors`` every problem, ``reason_code`` the ``dse.rejected.<code>`` it was recorded under,
    ``limit`` the limit exceeded for a ``too_large`` refusal (``"max_depth 64"``)."""

    def __init__(
        self,
        description: str,
        field: str,
        reason_code: str,
        errors: Sequence[ErrorDetail],
        limit: str = "",
    ) -> None:
        super().__init__(description, field)
        self.args = (description,)  # the service's description already names the field
        self.reason_code = reason_code
        self.errors = list(errors)
        self.limit = limit


class _Request(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    type: str
    data: Event
    schema_version: int
    id: str = ""
    occurred_at: datetime | None = None
    source: str = ""
    causation_id: str = ""
    correlation_id: str = ""


_encoder = msgspec.json.Encoder()
_reply_decoder = msgspec.json.Decoder(IngestReply)
_batch_decoder = msgspec.json.Decoder(BatchReply)
_error_decoder = msgspec.json.Decoder(ErrorReply)


def _request_for(
    event: Event,
    *,
    id: str,
    source: str,
    causation_id: str,
    correlation_id: str,
    occurred_at: datetime | None,
) -> _Request:
    return _Request(
        type=event.TAG,
        data=event,
        schema_version=event.VERSION,
        id=id,
        occurred_at=occurred_at,
        source=source,
        causation_id=causation_id,
        correlation_id=correlation_id,
    )


def _from_envelope(envelope: Envelope) -> _Request:
    return _Request(
        type=envelope.type,
        data=envelope.data,
        schema_version=envelope.data.VERSION,
        id=envelope.id,
        occurred_at=envelope.occurred_at,
        source=envelope.source,
        causation_id=envelope.causation_id,
        correlation_id=envelope.correlation_id,
    )


class IngestClient:
    """``await IngestClient(nc).publish(NodeRegistered(name="n1"))`` -> ``IngestReply(seq, duplicate, id)``.

    Retries (``deadline``, ``attempts``) apply to ``publish`` and ``publish_many`` (ids fixed up front,
    so retries dedupe); ``publish_raw`` sends bytes the client cannot give an id to, so it tries once.
    ``backoff`` is the first pause; pauses double up to 2 s.
    """

    def __init__(
        self,
        nc: Client,
        *,
        timeout: float = 5.0,
        attempts: int | None = None,
        backoff: float = 0.2,
        deadline: float = DEFAULT_DEADLINE,
        source: str = "",
    ) -> None:
        self._nc = nc
        self._timeout = timeout
        self._attempts = None if attempts is None else max(1, attempts)
        self._backoff = Backoff(initial=backoff, cap=max(backoff, 2.0))
        self._deadline = deadline
        self._source = source

    async def publish(
        self,
        event: Event,
        *,
        id: str | None = None,
        source: str = "",
        causation_id: str = "",
        correlation_id: str = "",
        occurred_at: datetime | None = None,
    ) -> IngestReply:
        request = _request_for(
            event,
            id=id or str(uuid.uuid4()),
            source=source or self._source,
            causation_id=causation_id,
            correlation_id=correlation_id,
            occurred_at=occurred_at,
        )
        msg = await self._retrying(INGEST_EVENT_SUBJECT, _encoder.encode(request))
        return _reply_decoder.decode(msg.data)

    async def publish_raw(self, data: bytes) -> IngestReply:
        """Send one request body as it is (e.g. a line of a JSON-lines file)."""
        msg = await self._request(INGEST_EVENT_SUBJECT, data)
        return _reply_decoder.decode(msg.data)

    async def publish_many(self, items: Iterable[Event | Envelope], *, source: str = "") -> list[IngestReply]:
        """One batch: validated as a whole, appended only if every item is valid. An ``Envelope`` is sent
        with its own id and times; a bare ``Event`` gets a fresh id."""
        requests = [
            _from_envelope(item)
            if isinstance(item, Envelope)
            else _request_for(
                item,
                id=str(uuid.uuid4()),
                source=source or self._source,
                causation_id="",
                correlation_id="",
                occurred_at=None,
            )
            for item in items
        ]
        if not requests:
            return []
        msg = await self._retrying(INGEST_BATCH_SUBJECT, _encoder.encode(requests))
        return _batch_decoder.decode(msg.data).results

    async def publish_many_raw(self, data: bytes) -> list[IngestReply]:
        """One batch body as it is (JSON lines or a JSON array)."""
        msg = await self._request(INGEST_BATCH_SUBJECT, data)
        return _batch_decoder.decode(msg.data).results

    async def _retrying(self, subject: str, data: bytes) -> Msg:
        deadline = Deadline(self._deadline)
        limit = self._attempts if self._attempts is not None else 1_000_000  # the deadline ends it first
        for attempt in range(1, limit + 1):
            try:
                return await self._request(subject, data, timeout=min(self._timeout, deadline.remaining()))
            except TransientError as err:
                if attempt == limit:
                    raise
                remaining = deadline.remaining()
                if remaining <= 0.05:  # too little left for one more request to be answered
                    raise DeadlineExceeded(
                        f"{subject}: not accepted within {self._deadline:g}s ({attempt} attempts): {err}"
                    ) from err
                await asyncio.sleep(min(self._backoff.delay(attempt), remaining))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _request(self, subject: str, data: bytes, *, timeout: float | None = None) -> Msg:
        timeout = self._timeout if timeout is None else max(timeout, 0.05)
        try:
            msg = await self._nc.request(subject, data, timeout=timeout)
        except nats.errors.NoRespondersError as err:
            raise TransientError(
                f"no ingest service answers on {subject} (is `dsctl ingest run` up?)"
            ) from err
        except (nats.errors.TimeoutError, TimeoutError) as err:
            raise TransientError(f"no answer on {subject} within {timeout:g}s") from err
        except (nats.errors.Error, ConnectionError) as err:
            raise TransientError(f"request on {subject}: {type(err).__name__}: {err}") from err
        _raise_for_error(subject, msg)
        return msg


def _raise_for_error(subject: str, msg: Msg) -> None:
    headers = msg.headers or {}
    code = headers.get("Nats-Service-Error-Code")
    if code is None:
        return
    description = headers.get("Nats-Service-Error", "")
    try:
        body = _error_decoder.decode(msg.data)
    except msgspec.DecodeError:
        body = ErrorReply(code=_int(code), reason_code="", description=description, field="")
    text = body.description or description or f"error {code}"
    if code == "400":
        raise IngestRefused(text, body.field, body.reason_code, body.errors, body.limit)
    if code in ("503", "408"):
        raise TransientError(f"{subject}: {text}")
    raise PermanentError(f"{subject}: service error {code}: {text}")


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 0
