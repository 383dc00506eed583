"""The query service: ``get``, ``describe``, ``explain`` and ``rollout history`` answered from the live
projection of a running engine, over NATS request/reply.

Why: every CLI read used to rebuild the state from the log (seconds at 10,000 pods, growing with the
log), while an engine already holds that state folded up to the tail. The service is a nats-py micro
service (``$SRV.PING``/``$SRV.INFO``/``nats micro ls`` find it, as they find the ingest service), one
endpoint per verb on ``dse.query.<verb>``, in one queue group so that any engine (leader or follower:
both follow the whole log) answers. What an answer says is decided by the ``Answerer`` handed in (the
CLI's own verb code, ``engine.cli.answers``); this module only waits for the projection to cover what
the client has seen, bounds the time, and sends the reply in parts that fit the server's max_payload
(docs/console.md, "The query service").

An answer is never stale behind the client: the request names the last sequence the client saw, and a
projection that does not reach it within ``catch_up`` is answered ``unavailable``, so the client reads
the log itself rather than showing less than it knows was written.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import time
from collections.abc import Awaitable, Callable

import msgspec
import nats.micro
import structlog
from nats.aio.client import Client
from nats.micro.request import Request
from nats.micro.service import EndpointStats, Service

from engine.query.index import DecisionIndex
from engine.query.protocol import (
    AUDIT,
    PART_HEADER,
    QUEUE_GROUP,
    SERVICE_NAME,
    VERBS,
    QueryReply,
    QueryRequest,
    decode_request,
    encode,
    subject,
)
from engine.store.projector import Projector
from projections.model import ClusterState

log = structlog.get_logger("dsctl.query")

#: computes one answer on the live state (the state argument is the projection's, never a copy)
Answerer = Callable[[QueryRequest, ClusterState], Awaitable[QueryReply]]
#: room left in a part for the headers and the subject
_PART_ROOM = 4096


class _Counters(msgspec.Struct, kw_only=True):
    answered: int = 0
    unavailable: int = 0
    failed: int = 0


def _version() -> str:
    try:
        return importlib.metadata.version("dsctl")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


class QueryService:
    def __init__(
        self,
        nc: Client,
        projector: Projector,
        answer: Answerer,
        *,
        catch_up: float = 2.0,
        queue_group: str = QUEUE_GROUP,
    ) -> None:
        self._nc = nc
        self._projector = projector
        self._answer = answer
        self._catch_up = catch_up
        self._queue_group = queue_group
        self._service: Service | None = None
        self.counters = _Counters()
        #: node -> decisions naming it, for ``audit --node`` (read from the log by its own follower)
        self.index = DecisionIndex(projector.store)
        self._indexing: asyncio.Task[None] | None = None

    @property
    def id(self) -> str:
        return self._service.id if self._service is not None else ""

    async def start(self) -> None:
        self._service = await nats.micro.add_service(
            self._nc,
            name=SERVICE_NAME,
            version=_version(),
            description="Answers dsctl get, describe, explain and rollout history from an engine's live "
            "projection",
            metadata={"subjects": "dse.query.<verb>", "verbs": ",".join(VERBS)},
            queue_group=self._queue_group,
            stats_handler=self._stats,
        )
        try:
            for verb in (*VERBS, AUDIT):
                await self._service.add_endpoint(
                    name=verb, subject=subject(verb), handler=self._handle, metadata={"verb": verb}
                )
        except BaseException:
            await self.stop()
            raise
        self._indexing = asyncio.ensure_future(self.index.run())
        await self._nc.flush()
        log.info("query.started", service=SERVICE_NAME, id=self.id)

    async def stop(self) -> None:
        indexing, self._indexing = self._indexing, None
        if indexing is not None:
            indexing.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await indexing
        service, self._service = self._service, None
        if service is None:
            return
        try:
            await service.stop()
        except Exception as err:  # the connection may already be gone, and the subscriptions with it
            log.debug("query.stop_incomplete", error=f"{type(err).__name__}: {err}")
        log.info("query.stopped", **msgspec.structs.asdict(self.counters))

    def _stats(self, endpoint: EndpointStats) -> dict[str, int]:
        return msgspec.structs.asdict(self.counters)

    async def _handle(self, request: Request) -> None:
        started = time.perf_counter()
        try:
            reply = await self._compute(bytes(request.data or b""))
        except Exception as err:  # a bug: answered, so the client falls back instead of waiting
            log.exception("query.bug")
            self.counters.failed += 1
            reply = QueryReply(unavailable=f"the query service failed: {type(err).__name__}: {err}")
        try:
            await self._send(request, encode(reply))
        except Exception:  # replying failed (connection closing): nothing more to do for this one
            log.exception("query.reply_failed")
        log.debug("query.handled", seconds=round(time.perf_counter() - started, 6))

    async def _compute(self, data: bytes) -> QueryReply:
        try:
            req = decode_request(data)
        except msgspec.DecodeError as err:
            self.counters.failed += 1
            return QueryReply(unavailable=f"malformed query: {err}")
        untrusted = self._projector.untrusted
        if untrusted is not None:  # never answer from a state whose log cannot be trusted (tamper evidence)
            self.counters.unavailable += 1
            return QueryReply(unavailable=f"this engine no longer trusts the log it follows: {untrusted}")
        if req.verb == AUDIT:
            node = req.args.get("node")
            if not isinstance(node, str) or not node:
                return QueryReply(unavailable="audit needs a node")
            self.counters.answered += 1
            return QueryReply(seqs=self.index.lookup(node), covered=self.index.covered)
        if req.verb not in VERBS:
            self.counters.unavailable += 1
            return QueryReply(unavailable=f"unknown verb {req.verb!r}")
        if not await self._projector.wait_for(req.min_seq, timeout=self._catch_up):
            self.counters.unavailable += 1
            seq = self._projector.state.seq
            return QueryReply(unavailable=f"the projection is at {seq}, behind {req.min_seq}", seq=seq)
        state = self._projector.state
        seq = state.seq
        reply = await self._answer(req, state)
        reply.seq = seq
        self.counters.answered += 1
        return reply

    async def _send(self, request: Request, body: bytes) -> None:
        reply_to = request._msg.reply
        if not reply_to:
            return
        size = max(1024, self._nc.max_payload - _PART_ROOM)
        parts = [body[i : i + size] for i in range(0, len(body), size)] or [b""]
        for i, part in enumerate(parts, 1):
            await self._nc.publish(reply_to, part, headers={PART_HEADER: f"{i}/{len(parts)}"})


async def serve_queries(
    nc: Client, projector: Projector, answer: Answerer, *, catch_up: float = 2.0
) -> QueryService:
    """Start the query service on ``nc`` over ``projector`` (an engine's);
    ``await service.stop()`` ends it."""
    service = QueryService(nc, projector, answer, catch_up=catch_up)
    await service.start()
    return service


async def stop_quietly(service: QueryService | None) -> None:
    if service is not None:
        with contextlib.suppress(Exception):
            await service.stop()
