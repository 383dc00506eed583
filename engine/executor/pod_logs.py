"""``dsctl logs``, the executor's side: a pod's log, read by its driver, answered over NATS
request/reply, so it works from any machine that reaches the bus (as ``kubectl logs`` asks the kubelet).

**The exchange.** A reader publishes a ``LogRequest`` on ``dse.logs.<node>`` (``subjects.logs_request``)
with a reply subject of its own under ``dse.logs.<node>.<reader>`` (``subjects.logs_reply``). The
executor serving the node (or a fleet, for a node without one) answers with ``LogPart`` messages, in
order, the first at once (empty if need be: it tells the reader an executor is there), the last marked
``last``: the text since the cursor, each part at most ``part_bytes`` of text (JSON escapes a control
byte in six characters, so an eighth of the server's max_payload), at most ``MAX_PARTS`` parts per
answer (``more``: ask again from the cursor).

**Following** (``-f``): one request is served for the window it asks (at most ``FOLLOW_WINDOW``
seconds; new lines sent as they come, read every ``POLL_SECONDS``), then its answer ends and the reader
asks again from the cursor it got. A reader that went away (Ctrl-C, a lost machine) therefore costs the
executor at most one window: its next request is the keepalive. When the pod has stopped, the rest of
its output is sent and the answer says ``ended``: the reader stops.

**Who answers.** A node's executor only for its node; a fleet (subscribed to every node) only for the
nodes it serves (not those with an executor of their own, ``Executor.serves``). Each part names its
``responder``, so a reader keeps to one while a fleet and a new node executor overlap for a moment. At
most ``MAX_READERS`` answers run at once; a request past that is answered with an error at once.

Why the replies are not in the reader's inbox: answering there needs ``allow_responses``, and an
executor receives messages whose reply subject is someone else's (the engine's JetStream publishes of
its commands): with it the executor could answer those too. Under its node's own subject tree, the
permission says exactly what it may answer (engine/security/roles.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import msgspec
import structlog

from engine.executor.drivers.base import KeepsLogs, LocalPod, LogRead
from engine.executor.executor import Executor
from events.subjects import logs_reply, logs_request

log = structlog.get_logger("dsctl.executor")

#: how long one follow request is served before the reader must ask again (its keepalive)
FOLLOW_WINDOW = 10.0
#: how often a follow looks for new output
POLL_SECONDS = 0.25
#: parts per answer; past it the answer ends with ``more`` and the reader asks again
MAX_PARTS = 256
#: answers served at once by one executor
MAX_READERS = 32
#: text per part, at most (and at most an eighth of the server's max_payload)
PART_BYTES = 128 * 1024
#: a pod in one of these phases writes no more output
ENDED_PHASES = frozenset({"Succeeded", "Failed", "Deleted"})


class LogRequest(msgspec.Struct, kw_only=True):
    """What a reader asks: one pod's log (``uid``: that pod, not a later one of the same name), its last
    ``tail`` lines (-1: all) or, on a follow's later requests, from ``cursor`` on."""

    id: str
    node: str
    namespace: str
    name: str
    uid: str = ""
    tail: int = -1
    follow: bool = False
    cursor: int | None = None
    #: how long a follow's request may be served (the reader waits that long for the next part); the
    #: executor serves at most ``FOLLOW_WINDOW``
    window: float = FOLLOW_WINDOW


class LogPart(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One message of an answer (see the module notes)."""

    request: str
    responder: str
    text: str = ""
    cursor: int = 0
    last: bool = False
    more: bool = False
    ended: bool = False
    error: str = ""


def part_bytes(max_payload: int) -> int:
    return max(1024, min(PART_BYTES, max_payload // 8))


def encode_request(req: LogRequest) -> bytes:
    return msgspec.json.encode(req)


def decode_part(data: bytes) -> LogPart:
    return msgspec.json.decode(data, type=LogPart)


class PodLogServer:
    """Answers log requests for one executor's pods until cancelled (``run``)."""

    def __init__(self, nc: Any, executor: Executor, *, node: str | None, responder: str) -> None:
        self.nc = nc
        self.executor = executor
        self.node = node
        self.responder = responder
        self._answers: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        sub = await self.nc.subscribe(logs_request(self.node), cb=self._received)
        try:
            await asyncio.Event().wait()
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            answers = list(self._answers)
            for task in answers:
                task.cancel()
            for task in answers:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    def _mine(self, subject: str, reply: str, req: LogRequest) -> bool:
        """Whether this executor answers: its node, served, asked on that node's subject, with a reply
        subject under that node's answers (the only ones it may publish)."""
        if self.node is not None and req.node != self.node:
            return False
        if self.node is None and not self.executor.serves(req.node):
            return False
        prefix = logs_reply(req.node, "")
        return (
            subject == logs_request(req.node)
            and reply.startswith(prefix)
            and len(reply) > len(prefix)
            and "." not in reply[len(prefix) :]
        )

    async def _received(self, msg: Any) -> None:
        try:
            req = msgspec.json.decode(msg.data, type=LogRequest)
        except (msgspec.DecodeError, msgspec.ValidationError) as err:
            log.info("logs.bad_request", subject=msg.subject, error=str(err))
            return  # no node of its own to check the reply against: not answered
        if not msg.reply or not self._mine(msg.subject, msg.reply, req):
            return
        if len(self._answers) >= MAX_READERS:
            await self._send(
                msg.reply,
                LogPart(
                    request=req.id,
                    responder=self.responder,
                    last=True,
                    error=f"node {req.node}'s executor is serving {MAX_READERS} log readers already: "
                    "try again shortly",
                ),
            )
            return
        task = asyncio.ensure_future(self._answer(msg.reply, req))
        self._answers.add(task)
        task.add_done_callback(self._answered)

    def _answered(self, task: asyncio.Task[None]) -> None:
        self._answers.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("logs.answer_failed", error=repr(task.exception()))

    def _pod(self, req: LogRequest) -> LocalPod | None:
        pod = self.executor.pods.get(f"{req.namespace}/{req.name}")
        if pod is None or (req.uid and pod.uid != req.uid):
            return None  # gone, or a later pod of the same name: the one asked for runs no more
        return pod

    async def _send(self, reply: str, part: LogPart) -> None:
        await self.nc.publish(reply, msgspec.json.encode(part))

    async def _answer(self, reply: str, req: LogRequest) -> None:
        def part(**fields: Any) -> LogPart:
            return LogPart(request=req.id, responder=self.responder, **fields)

        driver = self.executor.driver
        key = f"{req.namespace}/{req.name}"
        if not isinstance(driver, KeepsLogs):
            error = f"the {driver.name} driver of node {req.node} keeps no pod logs"
            await self._send(reply, part(last=True, error=error))
            return
        limit = part_bytes(int(self.nc.max_payload or 1024 * 1024))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, min(req.window, FOLLOW_WINDOW))
        cursor, sent = req.cursor, 0
        while True:
            pod = self._pod(req)
            ended = pod is None or pod.phase in ENDED_PHASES  # read after this: the output is complete
            read = await driver.read_log(
                req.namespace,
                req.name,
                cursor=cursor,
                tail=req.tail,
                limit=limit,
                partial=ended or not req.follow,
                pod=pod,
            )
            if read is None and pod is not None:
                read = LogRead(text="", cursor=cursor or 0)  # its pod has written nothing yet
            if read is None:
                error = (
                    f"no log of pod {key} on node {req.node} (its executor never ran it, or no longer "
                    "keeps it)"
                )
                await self._send(reply, part(last=True, error=error, cursor=cursor or 0))
                return
            cursor = read.cursor
            caught_up = not read.more
            more = read.more and sent + 1 >= MAX_PARTS
            final = more or (caught_up and (not req.follow or ended or loop.time() >= deadline))
            if read.text or final or sent == 0:  # the first part at once: the reader knows it is heard
                await self._send(
                    reply,
                    part(
                        text=read.text,
                        cursor=cursor,
                        last=final,
                        more=more,
                        ended=final and ended and caught_up,
                    ),
                )
                sent += 1
            if final:
                return
            if caught_up:
                await asyncio.sleep(POLL_SECONDS)
