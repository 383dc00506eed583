"""The ``dsctl`` command: parse arguments, build settings, hand over to the shell. Nothing else here.

Errors the project raises on purpose (``DsctlError``) print as ``error: ...`` on stderr with exit 1;
argparse's own usage errors exit 2, as kubectl's do.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path

from engine.shell import settings as nats_settings
from events.errors import DsctlError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
    return value


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1-65535)")
    return value


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    nats_settings.add_arguments(common)

    parser = _Parser(
        prog="dsctl",
        description="An event-sourced DaemonSet controller on NATS JetStream.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"dsctl {version('dsctl')}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    up = sub.add_parser(
        "up",
        parents=[common],
        help="run NATS, the engine and a simulated fleet in one process, with a live view",
        description="Start an embedded nats-server (or use --nats URL), the engine and a simulated fleet "
        "executor, and show DaemonSets converging. Ctrl-C stops everything.",
    )
    up.add_argument("--port", type=_port, default=4222, help="embedded server port [4222]")
    up.add_argument(
        "--store", default=".dsctl/nats", metavar="DIR", help="embedded server store [.dsctl/nats]"
    )
    up.add_argument("--demo", action="store_true", help="register three nodes and apply the seed manifests")
    up.add_argument(
        "--lease-ttl", type=_positive, default=5.0, metavar="SECONDS", help="leader lease TTL [5]"
    )
    up.add_argument(
        "--metrics-port", type=_port, metavar="PORT", help="serve Prometheus metrics on this port"
    )
    up.add_argument(
        "--ready-after",
        type=_non_negative,
        default=0.5,
        metavar="SECONDS",
        help="simulated pods become Ready after this long [0.5]",
    )
    up.add_argument(
        "--log-file", default=".dsctl/dsctl.log", metavar="FILE", help="engine log [.dsctl/dsctl.log]"
    )

    eng = sub.add_parser(
        "engine", parents=[common], help="run the engine (projection, leader lease, reconciler)"
    )
    eng.add_argument("action", nargs="?", choices=["run"], default="run")
    eng.add_argument("--identity", help="this engine's name in the lease and the log [host-pid]")
    eng.add_argument(
        "--lease-ttl", type=_positive, default=5.0, metavar="SECONDS", help="leader lease TTL [5]"
    )
    eng.add_argument(
        "--metrics-port", type=_port, metavar="PORT", help="serve Prometheus metrics on this port"
    )
    eng.add_argument("--workers", type=int, default=4, help="concurrent reconciles across keys [4]")

    exe = sub.add_parser(
        "executor", parents=[common], help="run an executor for one node or a simulated fleet"
    )
    exe.add_argument("action", nargs="?", choices=["run"], default="run")
    scope = exe.add_mutually_exclusive_group(required=True)
    scope.add_argument("--node", metavar="NAME", help="serve this node's commands")
    scope.add_argument("--fleet", action="store_true", help="serve every node's commands (simulated fleet)")
    exe.add_argument("--driver", choices=["sim", "process"], default="sim", help="how pods are run [sim]")
    exe.add_argument(
        "--ready-after",
        type=_non_negative,
        default=0.5,
        metavar="SECONDS",
        help="sim driver: pods become Ready after this long [0.5]",
    )
    exe.add_argument("--pod-logs", metavar="DIR", help="process driver: where pod output goes [.dsctl/pods]")
    return parser


def _run(args: argparse.Namespace) -> int:
    from engine.shell import logs, up

    settings = nats_settings.from_args(args)
    match args.command:
        case "up":
            log_path = Path(args.log_file)
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with log_path.open("a") as log_stream:
                logs.configure(stream=log_stream, fmt="json")
                from engine.shell.demo import setup_demo

                return asyncio.run(
                    up.up(
                        settings if args.nats_url else None,
                        port=args.port,
                        store_dir=args.store,
                        demo=args.demo,
                        lease_ttl=args.lease_ttl,
                        metrics_port=args.metrics_port,
                        ready_after=args.ready_after,
                        demo_setup=setup_demo,
                    )
                )
        case "engine":
            logs.configure()
            return asyncio.run(
                up.engine_run(
                    settings,
                    lease_ttl=args.lease_ttl,
                    identity=args.identity,
                    metrics_port=args.metrics_port,
                    workers=args.workers,
                )
            )
        case "executor":
            logs.configure()
            return asyncio.run(
                up.executor_run(
                    settings,
                    node=None if args.fleet else args.node,
                    driver=args.driver,
                    ready_after=args.ready_after,
                    pod_logs=args.pod_logs,
                )
            )
    raise AssertionError(args.command)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return _run(args)
    except DsctlError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
