"""Raw JetStream API calls and the one place where NATS failures become the project's error tree.

Why raw ``$JS.API.*`` requests instead of nats-py's ``JetStreamManager``: the stream definitions in
``ops/streams`` are kept in the server's own JSON form, so sending them as-is keeps them exact (the 2.12+
strict API rejects unknown fields, and nats-py's dataclasses convert durations and drop fields it does
not know). The responses carry ``err_code``, which is what the mapping below needs.

Mapping (``docs/jetstream.md §1.2``, ``§1.3``):

    10071 wrong last sequence, 10070 wrong last msg id     -> ConflictError (re-read, retry now)
    404 / 10059 stream, 10014 consumer, 10037 message      -> NotFound
    503 (10008 "JetStream system temporarily unavailable",
    10023, 10077, ...), the clustered "not leader" family
    (10009, 10007, 10041), no responders (status 503 on a
    publish: no stream leader answers the subject),
    timeouts, not connected / reconnecting / closed        -> TransientError (retry with backoff)
    anything else the server refuses (10057 delete on a
    deny_delete stream, 10110 purge, 10052 config change)  -> PermanentError
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client

from events.errors import ConflictError, DsctlError, NotFound, PermanentError, TransientError

API_PREFIX = "$JS.API"
CONFLICT_CODES = frozenset({10070, 10071})
NOT_FOUND_CODES = frozenset({10014, 10037, 10059})
#: answered with code 500 but about the cluster's state, not the request: "JetStream cluster can not
#: handle request" (10009, a server that lost or never had the leadership), "not assigned to this
#: server" (10007) and raft errors (10041) all go away once a leader is elected; "duplicate message id
#: is in process" (10158, a 409) means the first attempt's outcome is not known yet (a leader cut off
#: from its peers cannot commit it): retrying later either stores it or answers "duplicate"
TRANSIENT_CODES = frozenset({10007, 10009, 10041, 10158})


class JetStreamConflict(ConflictError):
    """The server refused an expected-sequence (or expected-msg-id) check."""

    def __init__(self, message: str, err_code: int) -> None:
        super().__init__(message)
        self.err_code = err_code


class JetStreamRefused(PermanentError):
    """The server refused the request for a reason a retry will not change."""

    def __init__(self, message: str, err_code: int) -> None:
        super().__init__(message)
        self.err_code = err_code


class JetStreamNotFound(NotFound):
    def __init__(self, message: str, err_code: int) -> None:
        super().__init__(message)
        self.err_code = err_code


class JetStreamUnavailable(TransientError):
    """No answer, no JetStream leader, or no connection: the same request may succeed later."""


class ApiError(msgspec.Struct, frozen=True):
    code: int = 0
    err_code: int = 0
    description: str = ""


class _Envelope(msgspec.Struct, frozen=True):
    error: ApiError | None = None


_error_decoder = msgspec.json.Decoder(_Envelope)


def error_for(context: str, err: ApiError) -> DsctlError:
    """Turn a JetStream API error object into the project's error, with ``context`` leading the text."""
    text = f"{context}: {err.description} (code {err.code}, err_code {err.err_code})"
    if err.err_code in CONFLICT_CODES:
        return JetStreamConflict(text, err.err_code)
    if err.err_code in NOT_FOUND_CODES or err.code == 404:
        return JetStreamNotFound(text, err.err_code)
    if err.code == 503 or err.err_code in TRANSIENT_CODES:
        return JetStreamUnavailable(text)
    return JetStreamRefused(text, err.err_code)


def translate(context: str, exc: BaseException) -> DsctlError | None:
    """Map a nats-py exception to the project's error, or None when it is not a NATS failure."""
    if isinstance(exc, DsctlError):
        return exc
    if isinstance(exc, nats.js.errors.APIError):
        return error_for(
            context,
            ApiError(code=exc.code or 0, err_code=exc.err_code or 0, description=exc.description or ""),
        )
    if isinstance(exc, nats.errors.NoRespondersError | nats.js.errors.NoStreamResponseError):
        return JetStreamUnavailable(f"{context}: no responders (JetStream not enabled, or no stream leader)")
    if isinstance(exc, nats.errors.TimeoutError | asyncio.TimeoutError | TimeoutError):
        return JetStreamUnavailable(f"{context}: timed out waiting for the server")
    if isinstance(
        exc,
        nats.errors.ConnectionClosedError
        | nats.errors.ConnectionReconnectingError
        | nats.errors.ConnectionDrainingError
        | nats.errors.StaleConnectionError
        | nats.errors.OutboundBufferLimitError
        | nats.errors.NoServersError
        | nats.errors.FlushTimeoutError
        | nats.js.errors.TooManyStalledMsgsError
        | ConnectionError,
    ):
        return JetStreamUnavailable(f"{context}: connection problem: {type(exc).__name__}: {exc}")
    if isinstance(exc, nats.errors.Error):
        return PermanentError(f"{context}: {type(exc).__name__}: {exc}")
    return None


@contextmanager
def translate_errors(context: str) -> Iterator[None]:
    """Run a nats-py call and re-raise its failure as the project's error (the cause is chained)."""
    try:
        yield
    except Exception as exc:
        mapped = translate(context, exc)
        if mapped is None or mapped is exc:
            raise
        raise mapped from exc


def check_error(context: str, payload: bytes) -> None:
    """Raise the mapped error if ``payload`` is a JetStream API error response."""
    try:
        env = _error_decoder.decode(payload)
    except msgspec.DecodeError as err:
        raise PermanentError(f"{context}: unreadable response from the server: {err}") from err
    if env.error is not None:
        raise error_for(context, env.error)


async def _api_call(nc: Client, subject: str, body: Any, timeout: float, prefix: str) -> bytes:
    """The raw response to one ``$JS.API.<subject>`` request, once it is known not to be an error."""
    payload = b"" if body is None else msgspec.json.encode(body)
    with translate_errors(f"JetStream API {subject}"):
        msg = await nc.request(f"{prefix}.{subject}", payload, timeout=timeout)
    check_error(f"JetStream API {subject}", msg.data)
    return msg.data


async def api_request(
    nc: Client, subject: str, body: Any = None, *, timeout: float = 5.0, prefix: str = API_PREFIX
) -> dict[str, Any]:
    """One ``$JS.API.<subject>`` request; returns the decoded JSON response or raises a mapped error."""
    response: dict[str, Any] = msgspec.json.decode(await _api_call(nc, subject, body, timeout, prefix))
    return response


class PeerInfo(msgspec.Struct, frozen=True):
    """A stream replica other than the leader, as ``STREAM.INFO`` reports it."""

    name: str = ""
    current: bool = False
    offline: bool = False
    lag: int = 0


class ClusterInfo(msgspec.Struct, frozen=True):
    #: "" while the stream has no leader
    leader: str = ""
    replicas: tuple[PeerInfo, ...] = ()


class StreamState(msgspec.Struct, frozen=True):
    messages: int = 0
    first_seq: int = 0
    last_seq: int = 0


class StreamInfo(msgspec.Struct, frozen=True):
    """The parts of a ``STREAM.INFO`` answer this project reads (the rest is ignored when decoding)."""

    config: dict[str, Any] = msgspec.field(default_factory=dict)
    state: StreamState = StreamState()
    #: absent on a server that is not clustered
    cluster: ClusterInfo | None = None


async def stream_info(nc: Client, stream: str, *, timeout: float = 5.0) -> StreamInfo:
    """``STREAM.INFO.<stream>``, decoded: the stream's configuration, sequences and placement. Raises
    ``NotFound`` for a stream that does not exist."""
    data = await _api_call(nc, f"STREAM.INFO.{stream}", None, timeout, API_PREFIX)
    try:
        return msgspec.json.decode(data, type=StreamInfo)
    except msgspec.ValidationError as err:
        raise PermanentError(f"JetStream API STREAM.INFO.{stream}: unexpected answer: {err}") from err
