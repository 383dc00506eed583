"""The ingest service's wire contract: what a request may hold, what the answers and the rejected-input
records look like, and the reason codes a refusal carries.

Why in ``events/``: these shapes are read by services in other languages (through ``dsctl schema``), by
the typed client and by the service itself, so they belong with the rest of the vocabulary rather than
to the process that happens to serve them; the shell imports them, never the other way round.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Final

import msgspec

from events.types import BY_TAG, DecisionRecorded, LeaderElected

#: the micro service's name (``nats micro info dsctl-ingest``): callers find it by this name
SERVICE_NAME: Final = "dsctl-ingest"
#: what an event without a ``source`` is stored with
DEFAULT_SOURCE: Final = "ingest"
#: tags only the engine may write: a forged decision would be "explained" and replayed as if the
#: engine had made it, and a forged election would fence the real leader out
ENGINE_ONLY: Final = frozenset({DecisionRecorded.TAG, LeaderElected.TAG})
#: tags only a node's executor may write (it appends them to the stream itself, never through ingest):
#: a pod fact from anyone else would make the engine believe a live pod gone, or a missing one running,
#: and act on it (a second pod on a node whose first is still running)
EXECUTOR_ONLY: Final = frozenset(tag for tag in BY_TAG if tag.startswith("pod."))

# limits, checked before decoding (depth, size) and before appending (stored size); a refusal for one
# names it in ``limit`` as "<name> <value>"
#: the most items one batch may hold: also the server's most messages in one atomic batch publish
MAX_BATCH: Final = 1000
#: how deeply arrays and objects may nest in one event (the deepest valid DaemonSet is far shallower);
#: checked on the bytes, so a 10,000-level input never reaches a recursive decoder
MAX_DEPTH: Final = 64
#: the largest request body the pure admission takes (the service uses the server's max_payload)
MAX_REQUEST_BYTES: Final = 1024 * 1024
#: room left for the headers (``Nats-Msg-Id``, the batch headers) under the server's max_payload: a
#: stored event must fit in ``max_payload - HEADER_ROOM`` bytes
HEADER_ROOM: Final = 1024

# reason codes of a 400: the last token of ``dse.rejected.<code>``
MALFORMED: Final = "malformed"  # not JSON, wrong shape, wrong type, unknown field, unknown event type
INVALID: Final = "invalid"  # decodes, but breaks a rule (names, label syntax, taint effects, ...)
ENGINE_ONLY_CODE: Final = "engine_only"  # decision.recorded, leader.elected
EXECUTOR_ONLY_CODE: Final = "executor_only"  # pod.*: reported by executors only
TOO_LARGE: Final = "too_large"  # over a limit: batch items, request bytes, nesting depth, stored size
# reason codes of the other errors (not recorded: nothing was wrong with the input)
UNAVAILABLE: Final = "unavailable"  # 503: the store is away; retry with the same id
FAILED: Final = "failed"  # 500: the store refused an append it should have taken
INTERNAL: Final = "internal"  # 500: a bug in the service

#: every reason code a 400 carries, with what it means (printed in the contract and docs/ingest.md)
REASON_CODES: Final = {
    MALFORMED: "not JSON, wrong shape or type, unknown field, unknown event type",
    INVALID: "decodes, but breaks a rule (names, labels, taints, quantities, a DaemonSet spec dsctl "
    "apply would refuse, an id that cannot be a header, one id twice in a batch)",
    ENGINE_ONLY_CODE: "decision.recorded and leader.elected are written by the engine only",
    EXECUTOR_ONLY_CODE: "pod.* facts are reported by the node's executor only",
    TOO_LARGE: "over a limit, named in `limit`: max_batch, max_request_bytes, max_depth, max_payload",
}


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
    #: the limit exceeded, as "<name> <value>" (``max_depth 64``), for a ``too_large`` refusal
    limit: str = ""


class ErrorReply(msgspec.Struct, frozen=True, kw_only=True):
    """The body of an error reply (the micro headers carry ``code`` and ``description`` too)."""

    code: int
    reason_code: str
    description: str
    field: str
    errors: list[ErrorDetail] = []
    #: the limit exceeded (``max_depth 64``), when that is why it was refused
    limit: str = ""


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
    limit: str = ""
