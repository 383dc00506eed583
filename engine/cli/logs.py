"""``dsctl logs POD [-f] [--tail N]``: a pod's log, asked of the executor serving its node over NATS
request/reply (engine/executor/pod_logs.py), so it works from any machine that reaches the bus: the
process driver's output file, the simulated driver's lifecycle lines.

The pod is looked up in the log (its own report subjects, as ``delete pod`` does) to learn its node and
uid; then the node's executor is asked. No answer within ``ANSWER_TIMEOUT`` seconds (or the server saying
nobody listens) is an error naming the node, not a hang. ``-f`` asks again from the cursor each answer
ends with, until the pod has stopped (the answer says ``ended``) or Ctrl-C.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, TextIO

import msgspec
from nats.errors import TimeoutError as NatsTimeout

from engine.cli.operations import find_pod
from engine.executor.pod_logs import LogPart, LogRequest, decode_part, encode_request
from engine.store.event_store import JetStreamEventStore
from events.errors import InvalidInput, NotFound, TransientError
from events.subjects import logs_reply, logs_request

#: how long the executor has to start answering a request
ANSWER_TIMEOUT = 5.0


class NoExecutor(TransientError):
    """Nobody answers for the pod's node (no executor runs for it, or it does not reach the bus)."""


async def logs(nc: Any, pod: str, namespace: str, *, follow: bool, tail: int, out: TextIO) -> int:
    if tail < -1:
        raise InvalidInput(f"--tail must be 0 or more (or -1 for every line), not {tail}", "--tail")
    store = JetStreamEventStore(nc)
    try:
        found = await find_pod(store, pod, namespace)
    finally:
        await store.close()
    req = LogRequest(
        id="",
        node=found.node,
        namespace=found.namespace,
        name=found.name,
        uid=found.uid,
        tail=tail,
        follow=follow,
    )
    async for text in read_log(nc, req):  # Ctrl-C: `dsctl` exits 130, as any command it interrupts
        out.write(text)
        out.flush()
    return 0


async def read_log(nc: Any, req: LogRequest, *, timeout: float = ANSWER_TIMEOUT) -> AsyncGenerator[str, None]:
    """The pod's log as the node's executor sends it, text part by text part (see the module notes)."""
    reader = secrets.token_hex(8)
    reply = logs_reply(req.node, reader)
    subject = logs_request(req.node)
    sub = await nc.subscribe(reply)
    try:
        cursor = req.cursor
        for asked in itertools.count(1):
            ask = msgspec.structs.replace(req, id=f"{reader}-{asked}", cursor=cursor)
            await nc.publish(subject, encode_request(ask), reply=reply)
            final: LogPart | None = None
            async for part in _parts(sub, ask, timeout):
                if part.text:
                    yield part.text
                cursor, final = part.cursor, part
            assert final is not None and final.last
            if final.ended or not (req.follow or final.more):
                return
    finally:
        await sub.unsubscribe()


async def _parts(sub: Any, ask: LogRequest, timeout: float) -> AsyncIterator[LogPart]:
    """The parts of one answer, from the first responder only (a fleet and a node's executor may both
    answer for a moment), until the one marked ``last``."""
    responder = ""
    wait = timeout
    while True:
        try:
            msg = await sub.next_msg(timeout=wait)
        except NatsTimeout:
            if not responder:
                raise NoExecutor(
                    f"no executor answers for node {ask.node}: none answered within {timeout:g} s "
                    "(no executor serves the node, or it does not reach NATS)"
                ) from None
            raise NoExecutor(
                f"no executor answers for node {ask.node}: its executor stopped answering mid-log"
            ) from None
        if msg.headers and msg.headers.get("Status") == "503":
            raise NoExecutor(
                f"no executor answers for node {ask.node}: nobody serves {logs_request(ask.node)} "
                "(no executor runs for the node)"
            )
        try:
            part = decode_part(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue  # not an answer of ours
        if part.request != ask.id or (responder and part.responder != responder):
            continue
        responder = part.responder
        if part.error:
            raise NotFound(part.error)
        yield part
        if part.last:
            return
        # a follow's answer may be silent for a whole window while the pod writes nothing
        wait = ask.window + timeout if ask.follow else timeout
