"""The client side of the CLI: connect, check the log is there, run one command, disconnect.

Kept apart from ``engine/cli/main.py`` and ``parser.py`` so that argument parsing stays free of I/O:
the parser hands a Namespace here, the argument strings are parsed by ``engine.core.arguments`` and
this module turns them into a call on the verb's module (``get``, ``describe``, ``rollout``,
``nodes``, ``daemonsets``, ``pods``, ``verify``, ``explain``, ``audit``).

Objects come as kubectl takes them (``TYPE NAME...``, ``TYPE/NAME...``, ``TYPE,TYPE``): a verb given
several runs once per object, reports a failure and goes on, and exits 1 if any failed (``_each``);
``get`` of several is ``engine/cli/listing.py``. ``--dry-run=client`` runs the same verb on a store
that appends nothing (``engine/cli/dry_run.py``). ``--at`` is checked against the log's ends here.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from engine.cli import (
    audit,
    daemonsets,
    diff,
    dry_run,
    endpoints,
    listing,
    nodes,
    pods,
    rollout,
    served,
    sources,
    verify,
)
from engine.cli.operations import find_pod
from engine.core import arguments
from engine.core.arguments import Kind
from engine.runtime.retry import Deadline
from engine.store.connection import close, connect
from engine.store.event_store import DEFAULT_DEADLINE, EventStore, JetStreamEventStore, retry_transient
from engine.store.settings import NatsSettings
from events.errors import DsctlError, InvalidInput, NotFound, TransientError

T = TypeVar("T")
#: the rollout actions that change something (``--dry-run=client`` applies to them)
ROLLOUT_CHANGES = frozenset({"undo", "restart", "pause", "resume", "partition"})


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
    if getattr(args, "dry_run", "none") == "client":
        return await _dry_run(args, nc, store, out)
    return await _verb(args, nc, store, out)


async def _dry_run(args: argparse.Namespace, nc: Any, store: JetStreamEventStore, out: Any) -> int:
    """``--dry-run=client``: the verb on a store that appends nothing, every line ending ``(dry run)``
    (``engine/cli/dry_run.py``)."""
    if args.command == "rollout" and args.action not in ROLLOUT_CHANGES:
        raise InvalidInput(f"rollout {args.action} changes nothing: it takes no --dry-run", "--dry-run")
    lines = dry_run.DryRunOut(out)
    try:
        return await _verb(args, nc, dry_run.DryRunStore(store), lines, dry=True)
    finally:
        lines.flush()


async def _verb(args: argparse.Namespace, nc: Any, store: EventStore, out: Any, *, dry: bool = False) -> int:
    cmd = args.command
    if cmd == "apply":
        gathered = _gather(args)
        if args.dry_run == "server":
            return await diff.apply_dry_run(store, gathered.text, _ns(args), args.output, out)
        return await daemonsets.apply_gathered(store, gathered, _ns(args), out)
    if cmd == "diff":
        return await diff.diff_gathered(store, lambda: _gather(args), _ns(args), args.output, out)
    if cmd == "delete":
        return await _delete(args, nc, store, out, dry=dry)
    if cmd in ("label", "taint"):
        targets, edits = arguments.split_edits(args.args, cmd)
        return await _each(
            [n for t in targets for n in t.names],
            lambda node: (
                nodes.label(store, node, edits, args.overwrite, out)
                if cmd == "label"
                else nodes.taint(store, node, edits, out)
            ),
        )
    if cmd in ("cordon", "uncordon"):
        names = arguments.parse_node_names(args.names, cmd)
        return await _each(names, lambda node: nodes.cordon(store, node, cmd == "cordon", out))
    if cmd == "get":
        return await _get(args, nc, store, out)
    if cmd == "describe":
        at = await _at(args, store)
        targets = arguments.parse_targets(args.objects, "describe")
        wanted: list[tuple[Kind, str]] = []
        for t in targets:  # no name: every object of the type, as kubectl describes them
            wanted += [(t.kind, n) for n in t.names or await _every(store, nc, t.kind, args, at)]
        if not wanted:
            return 0
        first = True

        async def describe_one(item: tuple[Kind, str]) -> int:
            nonlocal first
            if not first:
                out.write("\n\n")
            first = False
            return await served.describe(store, nc, item[0], item[1], args.namespace, out, at=at)

        return await _each(wanted, describe_one)
    if cmd == "rollout":
        return await _rollout(args, nc, store, out)
    if cmd == "replay":
        now = datetime.now(UTC) if args.now == "now" else _time(args.now, "--now")
        report = await verify.verify(store, args.from_seq, nc=nc, now=now)
        return verify.print_verify(report, out, args.output)
    if cmd == "explain":
        return await _explain(args, nc, store, out)
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


async def _each(items: Sequence[T], run: Callable[[T], Awaitable[int]]) -> int:
    """One object after another, as kubectl: a failure is reported (``error: ...``) and the rest still
    done; the exit is the first failure's when there was one. A single object fails as it always did."""
    if len(items) == 1:
        return await run(items[0])
    code = 0
    for item in items:
        try:
            code = await run(item) or code
        except DsctlError as err:
            print(f"error: {err}", file=sys.stderr)
            code = code or 1
    return code


async def _every(store: EventStore, nc: Any, kind: Kind, args: argparse.Namespace, at: Any) -> list[str]:
    """The names of every object of ``kind`` in the namespace (``describe TYPE`` with no name, as
    kubectl's), as ``get -o name`` lists them; none: "No resources found" on stderr."""
    names = io.StringIO()
    view = listing.Listing(namespace=args.namespace, all_namespaces=False, selector=None, fmt="name", at=at)
    await listing.get_targets(store, nc, [arguments.Target(kind)], view, names, sys.stderr)
    return [line.partition("/")[2] for line in names.getvalue().split()]


async def _delete(args: argparse.Namespace, nc: Any, store: EventStore, out: Any, *, dry: bool) -> int:
    if args.filename:
        if args.objects:
            raise InvalidInput("give either objects (TYPE NAME, TYPE/NAME) or -f FILE, not both", "delete")
        return await daemonsets.delete_gathered(store, _gather(args), _ns(args), args.cascade, out)
    if not args.objects:
        raise InvalidInput("specify TYPE NAME (daemonset|node|pod NAME), TYPE/NAME or -f FILE", "delete")
    arguments.parse_cascade(args.cascade)  # a bad policy is refused before anything is deleted
    targets = arguments.parse_targets(args.objects, "delete")
    wanted = [(t.kind, n) for t in targets for n in t.names]
    if not wanted:
        kinds = ",".join(t.kind for t in targets)
        raise InvalidInput(f"resource(s) were provided, but no name was specified: {kinds} NAME", "NAME")

    async def delete_one(item: tuple[Kind, str]) -> int:
        kind, name = item
        if kind == "daemonsets":
            return await daemonsets.delete_daemonset(store, name, args.namespace, args.cascade, out)
        if kind == "nodes":
            return await nodes.delete_node(store, name, out)
        if dry:  # a pod delete is a command to its node, not an append: only look the pod up
            await find_pod(store, name, args.namespace)
            print(f'pod "{name}" deleted', file=out)
            return 0
        return await pods.delete_pod(store, nc, name, args.namespace, out)

    return await _each(wanted, delete_one)


async def _get(args: argparse.Namespace, nc: Any, store: EventStore, out: Any) -> int:
    if args.objects[0].lower() in ("endpoints", "ep"):
        if len(args.objects) != 2:
            raise InvalidInput("get endpoints takes one DaemonSet: get endpoints ds/NAME", "NAME")
        try:
            return await endpoints.get_endpoints(
                store, arguments.parse_ds_ref(args.objects[1]), args.namespace, args.output, out, args.watch
            )
        except KeyboardInterrupt:
            return 0
    targets = arguments.parse_targets(args.objects, "get")
    view = listing.Listing(
        namespace=args.namespace,
        all_namespaces=args.all_namespaces,
        selector=arguments.parse_label_selector(args.selector) if args.selector else None,
        fmt=args.output,
        at=await _at(args, store),
        show_labels=args.show_labels,
        no_headers=args.no_headers,
        sort_by=args.sort_by,
    )
    try:
        return await listing.get_targets(store, nc, targets, view, out, sys.stderr, watch=args.watch)
    except KeyboardInterrupt:
        return 0


async def _rollout(args: argparse.Namespace, nc: Any, store: EventStore, out: Any) -> int:
    many = args.action in ("restart", "pause", "resume")
    names, value = arguments.parse_rollout_args(args.args, many=many)
    if value is not None and args.action != "partition":
        raise InvalidInput(f"rollout {args.action} takes no value ({value!r})", "RESOURCE")
    return await _each(names, lambda name: _rollout_one(args, nc, store, out, name, value))


async def _rollout_one(
    args: argparse.Namespace, nc: Any, store: EventStore, out: Any, name: str, value: str | None
) -> int:
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
        if value is None:
            raise InvalidInput("rollout partition needs a value: N or P% (e.g. 2 or 40%)", "partition")
        return await rollout.rollout_partition(store, name, args.namespace, value, out)
    return await rollout.rollout_restart(store, name, args.namespace, out, time.time)


async def _explain(args: argparse.Namespace, nc: Any, store: EventStore, out: Any) -> int:
    targets = arguments.parse_targets(args.objects, "explain", kinds=("pods", "nodes"))
    if len(targets) != 1 or len(targets[0].names) != 1:
        raise InvalidInput("explain takes one object: pod NAME, node NAME, pod/NAME or node/NAME", "NAME")
    kind, name = targets[0].kind, targets[0].names[0]
    if kind == "pods":
        if args.at:
            raise InvalidInput("explain pod shows the present only; --at is for explain node", "--at")
        return await served.explain_pod(store, nc, name, args.namespace, out)
    if not args.ds:
        raise InvalidInput("explain node needs --ds NAMESPACE/NAME", "--ds")
    return await served.explain_node(store, nc, name, args.ds, out, at=await _at(args, store))


async def _at(args: argparse.Namespace, store: EventStore) -> int | datetime | None:
    """``--at`` read as ``audit --since`` reads its value, then held to the log's ends: a sequence past
    the last, or a time before the first event or after now, is an error naming the end."""
    text = getattr(args, "at", None)
    if not text:
        return None
    now = datetime.now(UTC)
    point = arguments.parse_point(text, now)
    first_seq, first_time = 0, None
    async with contextlib.aclosing(store.read(start_seq=1)) as events:
        async for stored in events:
            first_seq, first_time = stored.seq, stored.time
            break
    arguments.check_point(
        point, first_seq=first_seq, last_seq=await store.last_seq(), first_time=first_time, now=now
    )
    return point


def _time(text: str | None, flag: str) -> datetime | None:
    return arguments.parse_time(text, flag) if text else None


def _ns(args: argparse.Namespace) -> str | None:
    ns: str = args.namespace
    return None if ns == "default" else ns
