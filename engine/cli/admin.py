"""``dsctl admin streams``: create or update the store's streams, buckets and object store, and say what
was done to each, without running an engine. ``dsctl admin credentials``: the roles' credentials.

Why a command of its own: only the engine writes stream definitions (``engine/store/setup.py``), so an
operator who deploys the store before any engine (or raises it to R3, or changes the lease TTL) needs a
way to do what the engine's start-up does, and to see first what it would do (``--dry-run``). It runs
exactly the engine's ``ensure``: the same fields are repaired, the operator's are kept, replicas only go
up.
"""

from __future__ import annotations

import contextlib
from typing import IO

from engine.security import servers
from engine.security.credentials import BASE_IDENTITIES, CredentialStore
from engine.security.jwt import OperatorMode
from engine.security.roles import PURPOSE, Identity, Role
from engine.security.server_config import write_authorization, write_routes
from engine.store.connection import close, connect
from engine.store.settings import NatsSettings
from engine.store.setup import SetupReport, all_definitions, describe_resource, ensure
from engine.store.streams import Drift, show
from events.errors import InvalidInput


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


def _targets(target: str | None, node: str | None) -> list[Identity]:
    if target is None:
        if node is not None:
            raise InvalidInput("--node goes with the executor role: admin credentials executor --node N")
        return list(BASE_IDENTITIES)
    try:
        role = Role(target)
    except ValueError:
        names = ", ".join(r.value for r in Role)
        raise InvalidInput(f"{target!r} is not a role ({names})", "ROLE") from None
    if (role is Role.EXECUTOR) != (node is not None):
        raise InvalidInput("an executor's credentials are per node: admin credentials executor --node N")
    try:
        return [Identity(role, node)]
    except ValueError as err:
        raise InvalidInput(str(err), "--node") from None


def credentials(
    store: CredentialStore,
    target: str | None,
    *,
    node: str | None,
    routes: str | None,
    out: IO[str],
    operator: bool = False,
) -> int:
    """``dsctl admin credentials [ROLE] [--node N] [--routes H:P,...] [--operator]``: create what is
    missing (an existing key is kept), render ``auth.conf`` from every identity present, reload the
    servers dsctl started with this directory, and print each identity with its public key and file
    (never a seed). In operator mode (``--operator`` sets it up, ``engine/security/jwt.py``) each
    identity also gets a ``.creds``, a user JWT signed with its role's scoped key.

    Why a reload: a config-file user exists for the server only once its configuration says so;
    nats-server re-reads it on SIGHUP without dropping a connection (``engine/security/servers.py``).
    An operator-mode server needs none: it trusts the role's signing key, whatever user it signed."""
    targets = _targets(target, node)
    for identity in targets:
        store.ensure(identity)
    auth = write_authorization(store)
    mode = OperatorMode(store)
    if operator:
        mode.init()
        print(
            f"operator mode: {mode.server_conf} (servers include it instead of auth.conf)",
            file=out,
        )
    elif mode.exists():
        for identity in targets:
            mode.mint(identity)
    if routes:
        hosts = [r.strip() for r in routes.split(",") if r.strip()]
        path = write_routes(store.dir / "routes.conf", hosts, store.dir / "route-password")
        print(
            f"routes.conf: {path} (the route user and {len(hosts)} route URLs; include it in cluster {{}})",
            file=out,
        )
    for identity in store.identities():
        file = store.find(identity) or store.seed_path(identity)
        what = PURPOSE[identity.role]
        print(f"{identity.name:<20} {store.public_key(identity)}  {file}  ({what})", file=out)
    print(f"auth.conf: {auth} (include it in each server's configuration)", file=out)
    reloaded = servers.reload(store)
    if mode.exists():
        print("operator mode: servers trust the roles' signing keys, a new .creds needs no reload", file=out)
    elif reloaded:
        print(f"reloaded: {', '.join(reloaded)}", file=out)
    else:
        print(
            "no running server started by dsctl uses this directory: reload yours (kill -HUP <pid>)", file=out
        )
    return 0
