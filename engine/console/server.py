"""The console's HTTP server: static files from package data, a JSON API over the live projection and
the log, and server-sent events that say when the log moved (docs/console.md).

Plain asyncio, no framework: the console is read-only, serves one person's browser on 127.0.0.1 by
default, and the whole protocol it needs is GET, a few headers and a stream (a dependency would be
larger than this module). Every answer is computed from the projection it is given (the engine's own,
or one ``dsctl console`` keeps following) or read from the log; nothing here writes.

Time travel (``?at=SEQ``) rebuilds the state at that sequence from the log (the last two are kept), as
``dsctl get --at`` does; the timeline pages at or before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.parse
from collections import OrderedDict
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import msgspec
import structlog

from engine.console import views
from engine.console.timeline import Timeline, summarise
from engine.query.index import DecisionIndex
from engine.store.event_store import EventStore, StoredEvent
from engine.store.projector import Projector
from events.errors import DsctlError
from events.subjects import daemonset_tree, pod_filters
from events.types import CreatePod, DaemonSetApplied, DecisionRecorded
from projections.model import ClusterState

log = structlog.get_logger("dsctl.console")

_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml"}  # fmt: skip
_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
#: commands of one decision whose executor reports the decision page reads
REPORTS_FOR = 20
SHOWN = 500


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Console:
    def __init__(
        self,
        store: EventStore,
        projector: Projector,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        index: DecisionIndex | None = None,
    ) -> None:
        self.store = store
        self.projector = projector
        self.host = host
        self.port = port
        self.timeline = Timeline(store, index)
        self.eligibility = views.Eligibility()
        self._past: OrderedDict[int, ClusterState] = OrderedDict()
        self._past_lock = asyncio.Lock()
        self._server: asyncio.Server | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        #: connections being served (an event stream lasts until the browser leaves, or ``stop``)
        self._clients: set[asyncio.Task[Any]] = set()
        self._closing = False

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._client, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        self._tasks.append(asyncio.ensure_future(self.timeline.run()))
        log.info("console.started", url=self.url)
        return self.url

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None
        # connections end by themselves once told to (an event stream checks ``_closing``): a cancelled
        # connection task makes asyncio's stream protocol log an error for it
        self._closing = True
        if self._clients:
            await asyncio.wait(set(self._clients), timeout=2)
        tasks = [*self._tasks, *(t for t in self._clients if not t.done())]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        self._clients.clear()

    # --- HTTP -----------------------------------------------------------------------------------------

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._clients.add(task)
        try:
            line = await asyncio.wait_for(reader.readline(), 10)
            while True:  # headers are not needed: drain them
                header = await asyncio.wait_for(reader.readline(), 10)
                if header in (b"\r\n", b"\n", b""):
                    break
            parts = line.decode("latin-1").split()
            if len(parts) < 2 or parts[0] not in ("GET", "HEAD"):
                await self._send(writer, 405, b"only GET", "text/plain")
                return
            url = urllib.parse.urlsplit(parts[1])
            query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
            if url.path == "/api/stream":
                await self._stream(writer)
                return
            try:
                status, body, ctype = await self._route(url.path, query)
            except HttpError as err:
                status, body, ctype = err.status, json.dumps({"error": str(err)}).encode(), "application/json"
            except DsctlError as err:
                status, body, ctype = 503, json.dumps({"error": str(err)}).encode(), "application/json"
            await self._send(writer, status, body, ctype)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass
        except Exception:
            log.exception("console.request_failed")
        finally:
            with contextlib.suppress(Exception):
                writer.close()
            if task is not None:
                self._clients.discard(task)

    async def _send(self, writer: asyncio.StreamWriter, status: int, body: bytes, ctype: str) -> None:
        reason = {200: "OK", 404: "Not Found", 400: "Bad Request", 405: "Method Not Allowed"}.get(
            status, "Error"
        )
        head = [f"HTTP/1.1 {status} {reason}", f"Content-Type: {ctype}", f"Content-Length: {len(body)}",
                "Connection: close", *(f"{k}: {v}" for k, v in _HEADERS.items())]  # fmt: skip
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        await writer.drain()

    async def _stream(self, writer: asyncio.StreamWriter, period: float = 0.5) -> None:
        """Server-sent events: the projection's and the timeline's sequence whenever either moves."""
        head = ["HTTP/1.1 200 OK", "Content-Type: text/event-stream", "Cache-Control: no-store",
                "Connection: keep-alive", "X-Content-Type-Options: nosniff"]  # fmt: skip
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + b"retry: 2000\n\n")
        await writer.drain()
        last: tuple[int, int, bool] | None = None
        quiet_since = time.monotonic()
        while not self._closing:
            now = (self.projector.state.seq, self.timeline.last_seq, self.projector.untrusted is not None)
            if now != last:
                untrusted = self.projector.untrusted
                data = json.dumps({"seq": now[0], "decision": now[1],
                                   "untrusted": str(untrusted) if untrusted is not None else ""})  # fmt: skip
                writer.write(f"event: log\ndata: {data}\n\n".encode())
                await writer.drain()
                last, quiet_since = now, time.monotonic()
            elif time.monotonic() - quiet_since > 15:
                writer.write(b": idle\n\n")
                await writer.drain()
                quiet_since = time.monotonic()
            await asyncio.sleep(period)

    async def _route(self, path: str, q: dict[str, str]) -> tuple[int, bytes, str]:
        if not path.startswith("/api/"):
            return self._static(path)
        at = await self._at(q.get("at"))
        result: Any
        if path == "/api/fleet":
            state = await self.state(at)
            result = views.fleet(state, self.eligibility, group=q.get("group", views.DEFAULT_GROUP),
                                 search=q.get("q", ""))  # fmt: skip
        elif path == "/api/nodes":
            state = await self.state(at)
            page = _int(q.get("page"), "page") or 0
            result = views.nodes_page(state, self.eligibility, group=q.get("group", views.DEFAULT_GROUP),
                                      value=q.get("value"), search=q.get("q", ""), page=page,
                                      only=q.get("only", ""))  # fmt: skip
        elif path.startswith("/api/node/"):
            state = await self.state(at)
            result = views.node_page(state, urllib.parse.unquote(path.removeprefix("/api/node/")))
        elif path.startswith("/api/rollout/"):
            state = await self.state(at)
            key = urllib.parse.unquote(path.removeprefix("/api/rollout/"))
            result = views.rollout_page(state, self.eligibility, key)
        elif path == "/api/decisions":
            result = self.timeline.page(
                before=_int(q.get("before"), "before"), at=at, limit=_int(q.get("limit"), "limit") or 50,
                ds=q.get("ds", ""), node=q.get("node", ""), outcome=q.get("outcome", ""),
                failures=q.get("failures") in ("1", "true"),
            )  # fmt: skip
        elif path.startswith("/api/decision/"):
            result = await self.decision(_int(path.removeprefix("/api/decision/"), "seq") or 0)
        elif path == "/api/status":
            untrusted = self.projector.untrusted
            result = {"seq": self.projector.state.seq, "decision": self.timeline.last_seq,
                      "time": self.projector.state.last_time,
                      "untrusted": str(untrusted) if untrusted is not None else ""}  # fmt: skip
        else:
            raise HttpError(404, f"no such API: {path}")
        if result is None:
            raise HttpError(404, "not found (at this point of the log)")
        return 200, json.dumps(result, separators=(",", ":")).encode(), "application/json"

    def _static(self, path: str) -> tuple[int, bytes, str]:
        name = "index.html" if path in ("/", "/index.html") else path.lstrip("/")
        if "/" in name or name.startswith("."):
            raise HttpError(404, "not found")
        item = resources.files("engine.console").joinpath("static", name)
        if not item.is_file():
            raise HttpError(404, "not found")
        suffix = "." + name.rsplit(".", 1)[-1]
        return 200, item.read_bytes(), _TYPES.get(suffix, "application/octet-stream")

    # --- data -------------------------------------------------------------------------------------------

    async def _at(self, text: str | None) -> int | None:
        """A point of the log: a sequence, or an RFC 3339 time (the last event stored at or before it,
        by the store's clock, as ``dsctl get --at``)."""
        if text is None or text.strip() == "":
            return None
        value = text.strip()
        if value.isdigit():
            return int(value)
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise HttpError(400, f"at: {text!r} is neither a log sequence nor an RFC 3339 time") from None
        when = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
        events = self.store.read(start_time=when)
        async with contextlib.aclosing(events):
            async for stored in events:
                return stored.seq - 1 if stored.time > when else stored.seq
        return self.projector.state.seq

    async def state(self, at: int | None) -> ClusterState:
        """The live state, or the state at ``at`` rebuilt from the log (the last two kept)."""
        live = self.projector.state
        if at is None or at >= live.seq:
            return live
        async with self._past_lock:
            hit = self._past.get(at)
            if hit is None:
                projector = Projector(self.store)
                await projector.load(use_snapshot=False, end_seq=max(at, 0))
                hit = self._past[at] = projector.state
                while len(self._past) > 2:
                    self._past.popitem(last=False)
            self._past.move_to_end(at)
            return hit

    async def decision(self, seq: int) -> dict[str, Any] | None:
        """One decision as ``explain`` tells it: inputs -> per-node reasons -> commands -> reports."""
        try:
            stored = await self.store.get(seq)
        except DsctlError:
            return None
        d = stored.envelope.data
        if not isinstance(d, DecisionRecorded):
            return None
        applied = None
        async for s in self._read([daemonset_tree(d.namespace, d.name)], end_seq=d.state_seq):
            if isinstance(s.envelope.data, DaemonSetApplied):
                applied = {"seq": s.seq, "generation": s.envelope.data.generation,
                           "template_hash": s.envelope.data.template_hash}  # fmt: skip
        reports = []
        for c in d.commands[:REPORTS_FOR]:
            lines = [
                {"seq": s.seq, "type": s.envelope.type, "time": s.time.timestamp()}
                async for s in self._read(pod_filters(c.pod_name, c.namespace), start_seq=seq)
            ]
            reports.append({"command": c.id, "pod": c.pod_name, "node": c.node, "reports": lines})
        return {
            "seq": seq,
            "time": stored.time.timestamp(),
            "subject": stored.subject,
            "daemonset": f"{d.namespace}/{d.name}",
            "summary": self.timeline_summary(seq, stored, d),
            "inputs": {
                "state_seq": d.state_seq,
                "generation": d.generation,
                "template_hash": d.template_hash,
                "now": d.now.isoformat(),
                "leader": d.leader,
                "applied": applied,
            },
            "reasons": [
                {"node": r.node, "action": r.action, "code": r.code, "message": r.message, "pod": r.pod}
                for r in d.reasons[:SHOWN]
            ],
            "reasons_total": len(d.reasons),
            "commands": [
                {
                    "id": c.id,
                    "kind": type(c).__name__,
                    "node": c.node,
                    "pod": c.pod_name,
                    "revision": c.revision_hash if isinstance(c, CreatePod) else "",
                }
                for c in d.commands[:SHOWN]
            ],
            "commands_total": len(d.commands),
            "reports": reports,
            "status": {
                "desired": d.status.desired_number_scheduled,
                "ready": d.status.number_ready,
                "updated": d.status.updated_number_scheduled,
                "available": d.status.number_available,
            },
        }

    @staticmethod
    def timeline_summary(seq: int, stored: StoredEvent, d: DecisionRecorded) -> dict[str, Any]:
        return msgspec.structs.asdict(summarise(seq, stored.time.timestamp(), d))

    async def _read(self, subjects: list[str], *, start_seq: int = 1, end_seq: int | None = None) -> Any:
        events = self.store.read(start_seq=start_seq, end_seq=end_seq, subjects=subjects)
        async with contextlib.aclosing(events):
            async for s in events:
                yield s


def _int(text: str | None, name: str) -> int | None:
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError:
        raise HttpError(400, f"{name} must be a number") from None


async def serve_console(
    store: EventStore,
    projector: Projector,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    index: DecisionIndex | None = None,
) -> Console:
    """Start the console over ``projector`` (kept following by its owner); ``index``: the query
    service's decision index, when one runs beside it. ``await console.stop()`` ends it."""
    console = Console(store, projector, host=host, port=port, index=index)
    await console.start()
    return console
