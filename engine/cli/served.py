"""The CLI's reads as the engine's query service answers them, and the client side that asks it first.

``answer`` runs inside the engine: the verb's own function (``get``, ``describe``, ``explain``,
``rollout history``), with its output captured, under ``answering_from`` so its ``load_state`` is the
live projection instead of a rebuild. The wrappers below (``describe``, ``explain_pod``,
``explain_node``, ``rollout_history``) are what the dispatcher calls: the service when it answers and
the present is asked, the log otherwise (docs/console.md, "The query service").
"""

from __future__ import annotations

import io
from datetime import datetime
from typing import Any, TextIO

import msgspec

from engine.cli import describe as describe_verb
from engine.cli import explain as explain_verb
from engine.cli import get as get_verb
from engine.cli import rollout as rollout_verb
from engine.cli.queries import answering_from
from engine.cli.remote import via_service
from engine.console.server import Console, serve_console
from engine.core.arguments import Kind
from engine.query.protocol import QueryReply, QueryRequest
from engine.query.service import QueryService, serve_queries
from engine.store.event_store import EventStore
from engine.store.projector import Projector
from events.errors import DsctlError, InvalidInput
from projections.model import ClusterState


class Answers:
    """The engine side: ``answer`` is the query service's ``Answerer``; ``store`` reads the log for what
    the projection does not hold (a DaemonSet's Events, a pod's reports)."""

    def __init__(self, store: EventStore, nc: Any) -> None:
        self.store = store
        self.nc = nc

    async def answer(self, req: QueryRequest, state: ClusterState) -> QueryReply:
        out, err = io.StringIO(), io.StringIO()
        a = req.args
        try:
            with answering_from(state):
                code = await self._run(req.verb, a, out, err)
        except DsctlError as e:
            return QueryReply(
                out=out.getvalue(), err=err.getvalue(), error_kind=type(e).__name__, error=str(e)
            )
        except (KeyError, TypeError, ValueError, msgspec.ValidationError) as e:
            return QueryReply(unavailable=f"bad arguments for {req.verb}: {e}")
        return QueryReply(out=out.getvalue(), err=err.getvalue(), code=code)

    async def _run(self, verb: str, a: dict[str, Any], out: TextIO, err: TextIO) -> int:
        store, nc = self.store, self.nc
        if verb == "get":
            q = msgspec.convert(a["query"], get_verb.Query)
            return await get_verb.get(
                store,
                nc,
                q,
                a["fmt"],
                out,
                err,
                show_labels=bool(a.get("show_labels")),
                no_headers=bool(a.get("no_headers")),
                sort_by=a.get("sort_by") or None,
            )
        if verb == "describe":
            return await describe_verb.describe(store, nc, a["kind"], a["name"], a["namespace"], out)
        if verb == "explain":
            if a["type"] == "pod":
                return await explain_verb.explain_pod(store, a["name"], a["namespace"], out)
            return await explain_verb.explain_node(store, nc, a["name"], a["ds"], out)
        if verb == "rollout" and a.get("action") == "history":
            return await rollout_verb.rollout_history(
                store, a["name"], a["namespace"], a.get("revision"), out
            )
        raise InvalidInput(f"the query service does not answer {verb} {a.get('action', '')}".strip())


# --- the client side: the service first, the log otherwise ------------------------------------------------


async def describe(
    store: EventStore, nc: Any, kind: Kind, name: str, namespace: str, out: TextIO, *, at: Any = None
) -> int:
    if at is None:
        args = {"kind": kind, "name": name, "namespace": namespace}
        code = await via_service(nc, store, "describe", args, out, _stderr())
        if code is not None:
            return code
    return await describe_verb.describe(store, nc, kind, name, namespace, out, at=at)


async def explain_pod(store: EventStore, nc: Any, name: str, namespace: str, out: TextIO) -> int:
    args = {"type": "pod", "name": name, "namespace": namespace}
    code = await via_service(nc, store, "explain", args, out, _stderr())
    if code is not None:
        return code
    return await explain_verb.explain_pod(store, name, namespace, out)


async def explain_node(
    store: EventStore, nc: Any, node: str, ds_ref: str, out: TextIO, *, at: int | datetime | None = None
) -> int:
    if at is None:
        args = {"type": "node", "name": node, "ds": ds_ref, "namespace": ""}
        code = await via_service(nc, store, "explain", args, out, _stderr())
        if code is not None:
            return code
    return await explain_verb.explain_node(store, nc, node, ds_ref, out, at=at)


async def rollout_history(
    store: EventStore, nc: Any, name: str, namespace: str, revision: int | None, out: TextIO
) -> int:
    args = {"action": "history", "name": name, "namespace": namespace, "revision": revision}
    code = await via_service(nc, store, "rollout", args, out, _stderr())
    if code is not None:
        return code
    return await rollout_verb.rollout_history(store, name, namespace, revision, out)


def _stderr() -> TextIO:
    import sys

    return sys.stderr


# --- beside an engine: what ``dsctl up`` and ``dsctl engine run`` start -----------------------------------


class ReadServices:
    """The query service and (optionally) the web console over one engine's projection."""

    def __init__(self, query: QueryService, console: Console | None) -> None:
        self.query = query
        self.console = console

    @property
    def console_url(self) -> str:
        return self.console.url if self.console is not None else ""

    async def stop(self) -> None:
        if self.console is not None:
            await self.console.stop()
        await self.query.stop()


async def serve_reads(
    nc: Any,
    projector: Projector,
    *,
    console: bool = True,
    console_host: str = "127.0.0.1",
    console_port: int = 0,
) -> ReadServices:
    """Start the query service (and the console) beside an engine, over its projection; the engine's
    own connection serves them (docs/console.md)."""
    query = await serve_queries(nc, projector, Answers(projector.store, nc).answer)
    web = None
    if console:
        try:
            web = await serve_console(
                projector.store, projector, host=console_host, port=console_port, index=query.index
            )
        except BaseException:
            await query.stop()
            raise
    return ReadServices(query, web)
