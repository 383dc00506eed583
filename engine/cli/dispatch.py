"""The client side of the CLI: connect, check the log is there, run one command, disconnect.

Kept apart from ``engine/cli/main.py`` so that argument parsing stays free of I/O: the parser hands a
Namespace here, the argument strings are parsed by ``engine.core.arguments`` and this module turns them
into a call on the verb's module (``get``, ``describe``, ``rollout``, ``nodes``, ``daemonsets``,
``pods``, ``verify``, ``explain``, ``audit``).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.cli import audit, daemonsets, diff, endpoints, get, nodes, pods, rollout, served, sources, verify
from engine.core import arguments
from engine.runtime.retry import Deadline
from engine.store.connection import close, connect
from engine.store.event_store import DEFAULT_DEADLINE, JetStreamEventStore, retry_transient
from engine.store.settings import NatsSettings
from events.errors import InvalidInput, NotFound, TransientError


def _read(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    p = Path(path)
    if not p.is_file():
        raise InvalidInput(f'the path "{path}" does not exist', "-f")
    return p.read_text()


def _gather(args: argparse.Namespace) -> sources.Gathered:
    """Every ``-f`` of ``apply``/``delete``, read and validated before the store is touched."""
    return sources.collect(sources.gather(args.filename, args.recursive), _ns(args), args.strict)


async def run_client(args: argparse.Namespace, settings: NatsSettings) -> int:
    out = sys.stdout
    nc = await connect(settings)
    store = JetStreamEventStore(nc)
    try:
        try:
            # a cluster electing its stream leader answers in a few seconds: wait, then say so clearly
            await retry_transient("read the event log", store.last_seq, Deadline(DEFAULT_DEADLINE))
        except NotFound as err:
            where = ", ".join(settings.redacted_servers())
            # the CLI only checks the store; creating it is the engine's (engine/store/setup.py)
            raise NotFound(
                f"no dsctl event log on {where}: start one with `dsctl up` (or `dsctl engine run`), or "
                "create the streams with `dsctl admin streams`"
            ) from err
        return await _dispatch(args, nc, store, out)
    except TransientError:
        raise
    finally:
        await store.close()
        with contextlib.suppress(Exception):
            await close(nc)


async def _dispatch(args: argparse.Namespace, nc: Any, store: JetStreamEventStore, out: Any) -> int:
    cmd = args.command
    if cmd == "apply":
        gathered = _gather(args)
        if args.dry_run == "server":
            return await diff.apply_dry_run(store, gathered.text, _ns(args), args.output, out)
        return await daemonsets.apply_gathered(store, gathered, _ns(args), out)
    if cmd == "diff":
        return await diff.diff(store, _read(args.filename), _ns(args), args.output, out)
    if cmd == "delete":
        if args.filename:
            return await daemonsets.delete_gathered(store, _gather(args), _ns(args), args.cascade, out)
        if not args.type or not args.name:
            raise InvalidInput("specify TYPE NAME (daemonset|node|pod NAME) or -f FILE", "delete")
        kind = arguments.kind_of(args.type)
        if kind == "daemonsets":
            return await daemonsets.delete_daemonset(store, args.name, args.namespace, args.cascade, out)
        if kind == "nodes":
            return await nodes.delete_node(store, args.name, out)
        return await pods.delete_pod(store, nc, args.name, args.namespace, out)
    if cmd in ("label", "taint"):
        if arguments.kind_of(args.type) != "nodes":
            raise InvalidInput(f"{cmd} works on nodes only, not {args.type!r}", "TYPE")
        if cmd == "label":
            return await nodes.label(store, args.name, args.labels, args.overwrite, out)
        return await nodes.taint(store, args.name, args.taints, out)
    if cmd in ("cordon", "uncordon"):
        return await nodes.cordon(store, args.name, cmd == "cordon", out)
    if cmd == "get" and args.type.lower() in ("endpoints", "ep"):
        try:
            return await endpoints.get_endpoints(
                store, arguments.parse_ds_ref(args.name or ""), args.namespace, args.output, out, args.watch
            )
        except KeyboardInterrupt:
            return 0
    if cmd == "get":
        q = get.Query(
            kind=arguments.kind_of(args.type),
            name=args.name,
            namespace=args.namespace,
            all_namespaces=args.all_namespaces,
            selector=arguments.parse_label_selector(args.selector) if args.selector else None,
        )
        at = arguments.parse_at(args.at) if args.at else None
        try:
            return await get.get(store, nc, q, args.output, out, sys.stderr, at=at, watch=args.watch)
        except KeyboardInterrupt:
            return 0
    if cmd == "describe":
        at = arguments.parse_at(args.at) if args.at else None
        return await served.describe(
            store, nc, arguments.kind_of(args.type), args.name, args.namespace, out, at=at
        )
    if cmd == "rollout":
        name = arguments.parse_ds_ref(args.resource)
        if args.action == "status":
            return await rollout.rollout_status(
                store, name, args.namespace, arguments.parse_duration(args.timeout), out
            )
        if args.action == "history":
            return await served.rollout_history(store, nc, name, args.namespace, args.revision or None, out)
        if args.action == "undo":
            return await rollout.rollout_undo(store, name, args.namespace, args.to_revision, out)
        if args.action == "pause":
            return await rollout.rollout_pause(store, name, args.namespace, out)
        if args.action == "resume":
            return await rollout.rollout_resume(store, name, args.namespace, out)
        if args.action == "partition":
            if args.value is None:
                raise InvalidInput("rollout partition needs a value: N or P% (e.g. 2 or 40%)", "partition")
            return await rollout.rollout_partition(store, name, args.namespace, args.value, out)
        return await rollout.rollout_restart(store, name, args.namespace, out, time.time)
    if cmd == "replay":
        now = datetime.now(UTC) if args.now == "now" else _time(args.now, "--now")
        report = await verify.verify(store, args.from_seq, nc=nc, now=now)
        return verify.print_verify(report, out, args.output)
    if cmd == "explain":
        if args.type == "pod":
            return await served.explain_pod(store, nc, args.name, args.namespace, out)
        if not args.ds:
            raise InvalidInput("explain node needs --ds NAMESPACE/NAME", "--ds")
        at = arguments.parse_at(args.at) if args.at else None
        return await served.explain_node(store, nc, args.name, args.ds, out, at=at)
    if cmd == "audit":
        if args.limit is not None and args.limit <= 0:
            raise InvalidInput("--limit must be a positive number", "--limit")
        f = audit.AuditFilter(
            ds=args.ds,
            node=args.node,
            pod=args.pod,
            types=list(args.types),
            since=arguments.parse_since(args.since, datetime.now(UTC)) if args.since else None,
            until=_time(args.until, "--until"),
            limit=args.limit,
        )
        return await audit.audit(store, f, args.output, out, nc)
    if cmd == "logs":
        from engine.cli import logs

        return await logs.logs(nc, args.pod, args.namespace, follow=args.follow, tail=args.tail, out=out)
    if cmd == "events":
        from engine.ingest.publish import publish_file

        return await publish_file(nc, args.filename, out=out)
    raise InvalidInput(f"unknown command {cmd!r}", "COMMAND")


def _time(text: str | None, flag: str) -> datetime | None:
    return arguments.parse_time(text, flag) if text else None


def _ns(args: argparse.Namespace) -> str | None:
    ns: str = args.namespace
    return None if ns == "default" else ns
