"""Batched direct gets: read the messages of one subject (or subject tree) from a stream sequence on,
with no consumer on the server.

Why: a JetStream consumer per reader costs the cluster memory and CPU for as long as the reader lives
(10,000 ephemeral pull consumers, R1 in memory, held about 235 MB per server of a 3-node cluster; see
docs/jetstream.md §7). A batched direct get (nats-server 2.11) is a request: the server answers with up
to ``batch`` messages at or after ``seq`` on ``next_by_subj``, then a ``204 EOB`` status carrying how many
are left (``Nats-Num-Pending``); ``404`` means none. Between requests the server keeps nothing.

Replicas answer direct gets too (``allow_direct``), so a read right after a write may not see it yet:
callers that know a message exists retry after a moment. nats-py 2.16 has no batched direct get; this
is the raw request (``docs/jetstream.md §0.2``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from engine.store.jetstream_api import API_PREFIX, api_request, translate_errors
from events.errors import DsctlError, NotFound, PermanentError, TransientError

#: how many messages one request asks for at most
DEFAULT_BATCH = 256


class RawMessage(msgspec.Struct, frozen=True, kw_only=True):
    seq: int
    subject: str
    headers: dict[str, str]
    data: bytes
    #: when the server stored it (RFC 3339, the server's clock)
    stored_at: str


class DirectBatch(msgspec.Struct, frozen=True, kw_only=True):
    messages: list[RawMessage]
    #: messages on the subject after the last one returned
    pending: int

    @property
    def last_seq(self) -> int | None:
        return self.messages[-1].seq if self.messages else None


def _request(seq: int, subject: str, batch: int) -> bytes:
    return msgspec.json.encode({"seq": seq, "next_by_subj": subject, "batch": batch})


class _LeaderMessage(msgspec.Struct, frozen=True):
    subject: str
    seq: int
    time: str = ""
    hdrs: str = ""
    data: str = ""


_leader_decoder = msgspec.json.Decoder(_LeaderMessage)


def _parse_headers(block: bytes) -> dict[str, str]:
    """``NATS/1.0\r\nKey: value\r\n...`` (the stored header block) as a dict."""
    out: dict[str, str] = {}
    for line in block.decode("utf-8", "replace").split("\r\n")[1:]:
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def _header(headers: dict[str, str], name: str) -> str:
    """nats-py keys some headers by its ``Header`` enum, whose hash is not its text's."""
    for key, value in headers.items():
        if str(getattr(key, "value", key)) == name:
            return value
    return ""


def _status(msg: Msg) -> str:
    return _header(msg.headers or {}, "Status")


class DirectReader:
    """Batched direct gets over one connection, all answered on one wildcard inbox subscription.

    A subscription per request would mean a SUB and an UNSUB per read, which every server of a cluster
    hears about (interest is propagated over the routes): 10,000 executors polling would keep all three
    busy with it. One reader per connection, shared by every executor on it, subscribes once (nats-py
    re-subscribes after a reconnect) and routes each answer by the last token of its reply subject.
    """

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._prefix = nc.new_inbox()
        self._sub: Subscription | None = None
        self._waiting: dict[str, asyncio.Queue[Msg]] = {}
        self._next = 0

    async def _route(self, msg: Msg) -> None:
        queue = self._waiting.get(msg.subject.rsplit(".", 1)[-1])
        if queue is not None:  # else a late answer to a read that timed out
            queue.put_nowait(msg)

    async def read_after(
        self, stream: str, subject: str, seq: int, *, batch: int = DEFAULT_BATCH, timeout: float = 2.0
    ) -> DirectBatch:
        """Up to ``batch`` messages on ``subject`` (wildcards allowed) at or after ``seq``, in order.

        Raises TransientError when no server answers (no stream leader yet, a connection down) or the
        answer stops half-way; PermanentError when the server refuses the request itself.
        """
        context = f"direct get on {stream} ({subject} from {seq})"
        if self._sub is None:
            with translate_errors(context):
                self._sub = await self._nc.subscribe(f"{self._prefix}.*", cb=self._route)
        self._next += 1
        token = str(self._next)
        queue: asyncio.Queue[Msg] = asyncio.Queue()
        self._waiting[token] = queue
        messages: list[RawMessage] = []
        try:
            with translate_errors(context):
                await self._nc.publish(
                    f"{API_PREFIX}.DIRECT.GET.{stream}",
                    _request(seq, subject, batch),
                    reply=f"{self._prefix}.{token}",
                )
                while True:
                    # asyncio.timeout, not wait_for: on Python 3.11 wait_for drops a cancel that
                    # arrives just as the answer does, and the caller's loop then never stops
                    async with asyncio.timeout(timeout):
                        msg = await queue.get()
                    status = _status(msg)
                    headers = msg.headers or {}
                    if status == "204":
                        return DirectBatch(messages=messages, pending=int(headers.get("Nats-Num-Pending", 0)))
                    if status == "404":
                        return DirectBatch(messages=messages, pending=0)
                    if status == "503":
                        raise TransientError(
                            f"{context}: no responders (no stream leader, or direct gets off)"
                        )
                    if status:
                        description = _header(headers, "Description")
                        raise PermanentError(
                            f"{context}: the server answered {status} {description}".rstrip()
                        )
                    messages.append(
                        RawMessage(
                            seq=int(headers["Nats-Sequence"]),
                            subject=headers.get("Nats-Subject", ""),
                            headers=dict(headers),
                            data=msg.data,
                            stored_at=headers.get("Nats-Time-Stamp", ""),
                        )
                    )
        finally:
            del self._waiting[token]

    async def read_from_leader(
        self, stream: str, subject: str, seq: int, *, timeout: float = 2.0
    ) -> DirectBatch:
        """The next message on ``subject`` at or after ``seq`` as the stream leader has it (one message:
        the leader-only ``STREAM.MSG.GET`` has no batches). For when a replica answering direct gets is
        known to lag behind a message a wake-up announced."""
        try:
            reply = await api_request(
                self._nc, f"STREAM.MSG.GET.{stream}", {"seq": seq, "next_by_subj": subject}, timeout=timeout
            )
        except NotFound:
            return DirectBatch(messages=[], pending=0)
        stored = _leader_decoder.decode(msgspec.json.encode(reply["message"]))
        message = RawMessage(
            seq=stored.seq,
            subject=stored.subject,
            headers=_parse_headers(base64.b64decode(stored.hdrs)) if stored.hdrs else {},
            data=base64.b64decode(stored.data) if stored.data else b"",
            stored_at=stored.time,
        )
        return DirectBatch(messages=[message], pending=1)  # unknown: the caller reads on

    async def close(self) -> None:
        if self._sub is not None:
            with translate_errors("direct get reader"):
                await self._sub.unsubscribe()
            self._sub = None


async def read_after(
    nc: Client,
    stream: str,
    subject: str,
    seq: int,
    *,
    batch: int = DEFAULT_BATCH,
    timeout: float = 2.0,
) -> DirectBatch:
    """One read with a reader of its own (for one-off reads; executors share a ``DirectReader``)."""
    reader = DirectReader(nc)
    try:
        return await reader.read_after(stream, subject, seq, batch=batch, timeout=timeout)
    finally:
        with contextlib.suppress(DsctlError):
            await reader.close()
