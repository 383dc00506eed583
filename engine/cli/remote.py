"""Asking a running engine's query service instead of rebuilding the state from the log.

A read goes to the service when one answers and the present is asked for; it falls back to the log
(the caller's own code) when no engine answers, when the engine's projection is behind what this client
has seen, or when ``DSCTL_QUERY=log`` says so. The answer is the verb's own output, computed by the same
code on the engine's live state, so it prints exactly what the fallback would (docs/console.md, "The
query service").
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, TextIO

from engine.query.protocol import PART_HEADER, QueryReply, QueryRequest, decode_reply, encode, subject
from engine.store.event_store import EventStore
from events import errors

#: ``DSCTL_QUERY=log`` makes every read rebuild from the log (to compare, or to distrust an engine)
MODE_ENV = "DSCTL_QUERY"
#: how long to wait for a whole answer; past it, the log is read instead
ASK_TIMEOUT = 15.0
#: how long to wait for the first part: a publish the server refused (a role without ``dse.query.>``)
#: gets no answer at all, and must not cost the user more than this before the log is read
FIRST_PART_TIMEOUT = 3.0

_ERRORS: dict[str, type[errors.DsctlError]] = {
    cls.__name__: cls
    for cls in (
        errors.DsctlError,
        errors.TransientError,
        errors.ConflictError,
        errors.PermanentError,
        errors.InvalidInput,
        errors.NotFound,
    )
}


def service_wanted() -> bool:
    return os.environ.get(MODE_ENV, "").strip().lower() != "log"


async def ask(
    nc: Any, verb: str, args: dict[str, Any], min_seq: int, *, timeout: float = ASK_TIMEOUT
) -> QueryReply | None:
    """The service's reply, or None when no engine answers (no responders, or not in time)."""
    inbox = nc.new_inbox()
    parts: dict[int, bytes] = {}
    total = 0
    done = asyncio.Event()
    started = asyncio.Event()
    absent = False

    async def on_part(msg: Any) -> None:
        nonlocal total, absent
        started.set()
        headers = msg.headers or {}
        if headers.get("Status") == "503":  # no responders: no query service on this deployment
            absent = True
            done.set()
            return
        index, _, count = headers.get(PART_HEADER, "1/1").partition("/")
        try:
            parts[int(index)] = msg.data
            total = int(count)
        except ValueError:
            absent = True
            done.set()
            return
        if len(parts) >= total:
            done.set()

    sub = await nc.subscribe(inbox, cb=on_part)
    try:
        request = QueryRequest(verb=verb, args=args, min_seq=min_seq)
        await nc.publish(subject(verb), encode(request), reply=inbox)
        try:
            async with asyncio.timeout(min(timeout, FIRST_PART_TIMEOUT)):
                await started.wait()
            async with asyncio.timeout(timeout):
                await done.wait()
        except TimeoutError:
            return None
    finally:
        await sub.unsubscribe()
    if absent:
        return None
    try:
        return decode_reply(b"".join(parts[i] for i in range(1, total + 1)))
    except Exception:
        return None


def print_reply(reply: QueryReply, out: TextIO, err: TextIO) -> int:
    """Print what the verb printed, or raise what it raised: the user cannot tell the paths apart."""
    if reply.out:
        out.write(reply.out)
        out.flush()
    if reply.err:
        err.write(reply.err)
        err.flush()
    if reply.error_kind:
        raise _ERRORS.get(reply.error_kind, errors.DsctlError)(reply.error)
    return reply.code


async def via_service(
    nc: Any, store: EventStore, verb: str, args: dict[str, Any], out: TextIO, err: TextIO
) -> int | None:
    """The verb answered by an engine (its exit code), or None: then the caller reads the log."""
    if nc is None or not service_wanted():
        return None
    reply = await ask(nc, verb, args, await store.last_seq())
    if reply is None or reply.unavailable:
        return None
    return print_reply(reply, out, err)
