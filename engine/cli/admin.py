"""``dsctl admin streams``: create or update the store's streams, buckets and object store, and say what
was done to each, without running an engine.

Why a command of its own: only the engine writes stream definitions (``engine/store/setup.py``), so an
operator who deploys the store before any engine (or raises it to R3, or changes the lease TTL) needs a
way to do what the engine's start-up does, and to see first what it would do (``--dry-run``). It runs
exactly the engine's ``ensure``: the same fields are repaired, the operator's are kept, replicas only go
up.
"""

from __future__ import annotations

import contextlib
from typing import IO

from engine.store.connection import close, connect
from engine.store.settings import NatsSettings
from engine.store.setup import SetupReport, all_definitions, describe_resource, ensure
from engine.store.streams import Drift, show


def _change(d: Drift) -> str:
    return f"{d.field} {show(d.field, d.have)} → {show(d.field, d.want)}"


def report_lines(setup: SetupReport) -> list[str]:
    """One line per thing done (or, dry, to be done) per resource, in definition order; a resource with
    nothing to say is ``unchanged``."""
    report = setup.streams
    create = "would create" if setup.dry_run else "created"
    lines: list[str] = []
    for name in [d.name for d in all_definitions()]:
        what = describe_resource(name)
        said = len(lines)
        if name in report.created or name in report.missing:
            lines.append(f"{create} {what}")
        for d in report.drift:
            if d.resource != name:
                continue
            if d.fixed:
                lines.append(f"updated {what}: {_change(d)}")
            else:
                lines.append(f"cannot fix {what}: {_change(d)} refused: {d.reason}")
        lines += [f"would update {what}: {_change(d)}" for d in report.pending if d.resource == name]
        lines += [
            f"kept {what}: {d.field} {show(d.field, d.have)} (definition {show(d.field, d.want)}): {d.reason}"
            for d in report.kept
            if d.resource == name
        ]
        if len(lines) == said:
            lines.append(f"unchanged {what}")
    lines.append(f"replicas {setup.replicas} (at least), leader lease TTL {setup.lease_ttl:g}s")
    return lines


async def streams(
    settings: NatsSettings,
    *,
    replicas: int | None,
    lease_ttl: float | None,
    dry_run: bool,
    node_lease_ttl: float | None = None,
    out: IO[str],
    err: IO[str],
) -> int:
    """Exit 1 when drift the server cannot fix remains (printed with the rest), else 0."""
    nc = await connect(settings)
    try:
        setup = await ensure(
            nc,
            replicas=replicas,
            lease_ttl=lease_ttl,
            node_lease_ttl=node_lease_ttl,
            dry_run=dry_run,
            strict=False,
        )
    finally:
        with contextlib.suppress(Exception):
            await close(nc)
    for line in report_lines(setup):
        print(line, file=out)
    if setup.streams.unfixable:
        print(
            "error: drift the server cannot fix in place (recreate the stream, or change its definition)",
            file=err,
        )
        return 1
    return 0
