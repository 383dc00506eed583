"""The ``dsctl`` command: parse arguments, build settings, hand over (a one-shot command to
``engine.cli.dispatch``, a long-running one to ``engine.cli.up``). Nothing else here.

Errors the project raises on purpose (``DsctlError``) print as ``error: ...`` on stderr with exit 1;
argparse's own usage errors exit 2, as kubectl's do. Every message printed and every log line is masked
for secrets (``engine/security/redaction.py``).

Credentials: each command names the roles that can do its job (``identities_for``) and connects with
the first one found in the credentials directory (``engine/security/credentials.py``), unless
credentials were given explicitly; a secret given as a flag is used, with a warning that every local
user can read it off the process's command line.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import msgspec

from engine.cli import usage
from engine.cli.flags import DRY_RUN_VERBS, replicas_from
from engine.cli.parser import build_parser
from engine.security.credentials import (
    DIR_ENV,
    ROLE_ENV,
    CredentialStore,
    directory,
    wanted,
    with_credentials,
)
from engine.security.redaction import install as install_redaction
from engine.security.roles import Identity, Role
from engine.store import settings as nats_settings
from events.errors import DsctlError, InvalidInput

#: commands that only read the log: the auditor's role can do them
READ_ONLY = frozenset({"get", "describe", "explain", "audit", "replay", "diff", "logs", "version"})


def identities_for(args: argparse.Namespace) -> list[Identity]:
    """The roles that can do this command's job, most fitting first (``--role`` overrides)."""
    command = args.command
    if command == "engine":
        return [Identity(Role.ENGINE)]
    if command == "executor":
        if args.fleet:
            return [Identity(Role.FLEET)]
        try:
            return [Identity(Role.EXECUTOR, args.node)]
        except ValueError as err:
            raise InvalidInput(str(err), "--node") from None
    if command == "ingest":
        return [Identity(Role.INGEST)]
    if command == "events":
        return [Identity(Role.PUBLISHER), Identity(Role.ADMIN)]
    if command == "console":  # it only reads the log: the auditor's role, where roles exist
        return [Identity(Role.AUDITOR), Identity(Role.ADMIN)]
    if command in READ_ONLY or (command == "rollout" and args.action in ("status", "history")):
        return [Identity(Role.ADMIN), Identity(Role.AUDITOR)]
    if command == "admin":
        return [Identity(Role.ADMIN), Identity(Role.ENGINE)]
    return [Identity(Role.ADMIN)]


def _run(args: argparse.Namespace) -> int:
    from engine.cli import up
    from engine.runtime import logs

    for flag in nats_settings.secret_flags(args):
        print(
            f"warning: {flag} puts a secret on the command line, where every local user can read it "
            "(ps, /proc/<pid>/cmdline); use the NATS_* environment variables or a credentials file",
            file=sys.stderr,
        )
    settings = nats_settings.from_args(args)
    store = CredentialStore(directory(getattr(args, "credentials", None)))
    role = getattr(args, "role", None) or os.environ.get(ROLE_ENV)
    settings = with_credentials(settings, wanted(identities_for(args), role), store)
    match args.command:
        case "up":
            log_path = Path(args.log_file)
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with log_path.open("a") as log_stream:
                logs.configure(stream=log_stream, fmt="json")
                install_redaction()
                from engine.cli.demo import setup_demo

                external = bool(getattr(args, "nats_url", None))
                # the embedded server's credentials live next to its store, unless told otherwise
                beside = Path(args.store).parent / "credentials"
                chosen = getattr(args, "credentials", None) or os.environ.get(DIR_ENV)
                up_store = CredentialStore(chosen or (store.dir if external else beside))
                return asyncio.run(
                    up.up(
                        nats_settings.from_args(args) if external else None,
                        port=args.port,
                        store_dir=args.store,
                        demo=args.demo,
                        lease_ttl=args.lease_ttl,
                        metrics_port=args.metrics_port,
                        ready_after=args.ready_after,
                        demo_setup=setup_demo,
                        replicas=replicas_from(args),
                        credentials=None if args.insecure else up_store,
                        secure=not args.insecure,
                        metrics_address=args.metrics_address,
                        console_port=args.console_port,
                    )
                )
        case "engine":
            logs.configure()
            install_redaction()
            return asyncio.run(
                up.engine_run(
                    settings,
                    lease_ttl=args.lease_ttl,
                    identity=args.identity,
                    metrics_port=args.metrics_port,
                    workers=args.workers,
                    replicas=replicas_from(args),
                    metrics_address=args.metrics_address,
                    console_port=args.console_port,
                )
            )
        case "executor":
            logs.configure()
            install_redaction()
            return asyncio.run(
                up.executor_run(
                    settings,
                    node=None if args.fleet else args.node,
                    driver=args.driver,
                    ready_after=args.ready_after,
                    pod_logs=args.pod_logs,
                    state=args.state_dir,
                    stop_pods_on_exit=args.stop_pods_on_exit,
                    lease_wait=args.lease_wait,
                )
            )
        case "bench":
            from engine.bench import run_bench
            from engine.bench.runner import SCENARIOS, plot_from_json
            from engine.cli.bench_scenarios import CLI_SCENARIOS

            if args.from_json:
                if args.plot is None or args.scenarios:
                    print("error: --from-json takes --plot DIR and no scenario", file=sys.stderr)
                    return 2
                return plot_from_json(args.from_json, args.plot)
            # these run the CLI's verbs, which engine/bench may not import (the layer contract)
            SCENARIOS.update(CLI_SCENARIOS)

            logs.configure(level="warning")
            bench = run_bench(
                args.scenarios,
                quick=args.quick,
                output=args.output,
                out=sys.stdout,
                minutes=args.minutes,
                plot=args.plot,
            )
            return asyncio.run(bench)
        case "schema":
            from engine.ingest.contract import schema_text

            sys.stdout.write(schema_text(args.output))
            return 0
        case "admin" if args.action == "credentials":
            from engine.cli.admin import credentials

            logs.configure(level="error" if "DSCTL_LOG_LEVEL" not in os.environ else None)
            install_redaction()
            return credentials(
                store, args.target, node=args.node, routes=args.routes, out=sys.stdout, operator=args.operator
            )
        case "admin":
            from engine.cli.admin import streams

            if args.target is not None or args.node is not None or args.routes or args.operator:
                raise InvalidInput(
                    "admin streams takes no ROLE, --node, --routes or --operator", "admin streams"
                )
            logs.configure(level="error" if "DSCTL_LOG_LEVEL" not in os.environ else None)
            install_redaction()
            return asyncio.run(
                streams(
                    settings,
                    replicas=replicas_from(args),
                    lease_ttl=args.lease_ttl,
                    node_lease_ttl=args.node_lease_ttl,
                    dry_run=args.dry_run,
                    out=sys.stdout,
                    err=sys.stderr,
                )
            )
        case "ingest":
            logs.configure()
            install_redaction()
            from engine.ingest.service import run_ingest

            return asyncio.run(run_ingest(settings))
        case "console":
            logs.configure(level="warning")
            install_redaction()
            from engine.cli.console import run_console

            return asyncio.run(run_console(settings, host=args.address, port=args.port, out=sys.stdout))
        case "version":
            from engine.cli.version import server_versions

            logs.configure(level="error" if "DSCTL_LOG_LEVEL" not in os.environ else None)
            install_redaction()
            settings = msgspec.structs.replace(settings, connect_deadline=min(settings.connect_deadline, 5.0))
            return asyncio.run(server_versions(settings, args.output, sys.stdout))
    from engine.cli.dispatch import run_client

    # a one-shot command: only problems reach the terminal (on stderr), as `error: ...` lines mostly
    logs.configure(level="error" if "DSCTL_LOG_LEVEL" not in os.environ else None)
    install_redaction()
    settings = msgspec.structs.replace(settings, connect_deadline=min(settings.connect_deadline, 5.0))
    if args.command == "events":
        # through the ingest service only: no look at the log first, which a publisher may not read
        return asyncio.run(_publish_events(args.filename, settings))
    return asyncio.run(run_client(args, settings))


async def _publish_events(path: str, settings: nats_settings.NatsSettings) -> int:
    from engine.ingest.publish import publish_file
    from engine.store.connection import close, connect

    nc = await connect(settings)
    try:
        return await publish_file(nc, path, out=sys.stdout)
    finally:
        await close(nc)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    words = usage.bare_dry_run(list(sys.argv[1:] if argv is None else argv), DRY_RUN_VERBS, sys.stderr)
    args, extra = parser.parse_known_args(words)
    if args.command is None:
        parser.print_help()
        return 2
    verb = usage.verb_parser(parser, args.command)
    extra = usage.intermix(args, extra, verb)
    if extra:
        print(usage.unexpected(args.command, extra, verb), file=sys.stderr)
        return 2
    if args.command == "completion":
        from engine.cli.completion import script

        sys.stdout.write(script(parser, args.shell))
        return 0
    if args.command == "version" and args.client:
        from engine.cli.version import client_version

        return client_version(args.output, sys.stdout)
    try:
        return _run(args)
    except DsctlError as err:
        print(f"error: {nats_settings.redact(str(err))}", file=sys.stderr)
        return 2 if args.command == "diff" else 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `dsctl ... | head`: the reader left; say nothing more
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
