"""What an ingest test looks at: the answer a caller got, and what the two streams hold afterwards (the
events in ``DSE_EVENTS``, the records in ``DSE_REJECTED``), read from the server, never from the
service's own counters."""

from __future__ import annotations

import json
from typing import Any

import msgspec

from engine.store.streams import EVENTS_STREAM, REJECTED_STREAM
from events.ingest_wire import Rejection
from events.subjects import INGEST_EVENT_SUBJECT


class Answer(msgspec.Struct, frozen=True):
    """An ingest reply: ``code`` is the micro error code (None on success), ``body`` the decoded JSON."""

    code: str | None
    body: dict[str, Any]
    description: str = ""


async def ask(nc: Any, data: bytes, subject: str = INGEST_EVENT_SUBJECT, timeout: float = 10) -> Answer:
    msg = await nc.request(subject, data, timeout=timeout)
    headers = msg.headers or {}
    return Answer(
        headers.get("Nats-Service-Error-Code"), json.loads(msg.data), headers.get("Nats-Service-Error", "")
    )


async def rejected(nc: Any) -> list[tuple[str, Rejection]]:
    """Every record in ``DSE_REJECTED`` with its subject, in order."""
    js = nc.jetstream()
    info = await js.stream_info(REJECTED_STREAM)
    out = []
    if info.state.messages == 0:
        return out
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(REJECTED_STREAM, seq)
        out.append((msg.subject, msgspec.json.decode(msg.data, type=Rejection)))
    return out


async def rejected_counts(nc: Any) -> dict[str, int]:
    """How many records ``DSE_REJECTED`` holds per subject (``dse.rejected.<reason_code>``)."""
    info = await nc.jetstream().stream_info(REJECTED_STREAM, subjects_filter=">")
    return dict(info.state.subjects or {})


async def events_count(nc: Any) -> int:
    return int((await nc.jetstream().stream_info(EVENTS_STREAM)).state.messages)
