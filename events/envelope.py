"""The envelope every event travels in.

The payload's tag and schema version sit on the envelope, next to its ids, so a reader picks the decoder
(or the upcaster chain) before touching the payload, and so ``causation_id``/``correlation_id`` can link a
pod report back to the command, the decision and the input event that caused it.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from events.types import Event


class Envelope(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    type: str
    schema_version: int
    occurred_at: datetime
    source: str
    data: Event
    causation_id: str = ""
    correlation_id: str = ""


def wrap(
    event: Event,
    *,
    id: str,
    occurred_at: datetime,
    source: str,
    causation_id: str = "",
    correlation_id: str = "",
) -> Envelope:
    """Put ``event`` in an envelope. Ids and times are arguments: this layer reads no clock."""
    return Envelope(
        id=id,
        type=event.TAG,
        schema_version=event.VERSION,
        occurred_at=occurred_at,
        source=source,
        data=event,
        causation_id=causation_id,
        correlation_id=correlation_id or id,
    )
