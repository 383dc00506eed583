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

from events.types import DecisionRecorded, LeaderElected

#: the micro service's name (``nats micro info dsctl-ingest``): callers find it by this name
SERVICE_NAME: Final = "dsctl-ingest"
#: what an event without a ``source`` is stored with
DEFAULT_SOURCE: Final = "ingest"
#: tags only the engine may write: a forged decision would be "explained" and replayed as if the
#: engine had made it, and a forged election would fence the real leader out
ENGINE_ONLY: Final = frozenset({DecisionRecorded.TAG, LeaderElected.TAG})
#: the most items one batch may hold (a batch is validated as a whole, in memory)
MAX_BATCH: Final = 1000

# reason codes of a 400: the last token of ``dse.rejected.<code>``
MALFORMED: Final = "malformed"  # not JSON, wrong shape, wrong type, unknown field, unknown event type
INVALID: Final = "invalid"  # decodes, but breaks a rule (names, label syntax, taint effects, ...)
ENGINE_ONLY_CODE: Final = "engine_only"
TOO_LARGE: Final = "too_large"
# reason codes of the other errors (not recorded: nothing was wrong with the input)
UNAVAILABLE: Final = "unavailable"  # 503: the store is away; retry with the same id
FAILED: Final = "failed"  # 500: the store refused an append it should have taken
INTERNAL: Final = "internal"  # 500: a bug in the service


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
