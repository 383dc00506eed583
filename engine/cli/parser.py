"""``dsctl``'s argument parser: the common flags, the long-running commands (up, engine, executor,
admin, bench, schema) and, from ``client_verbs.py``, the verbs that talk to a deployment. Parsing only;
``main.py`` acts on what it returns."""

from __future__ import annotations

import argparse
from importlib.metadata import version

from engine.cli import usage
from engine.cli.client_verbs import client_commands
from engine.cli.flags import (
    LEASE_TTL_HELP,
    Parser,
    credential_flags,
    metrics_address_flag,
    non_negative_number,
    port_number,
    positive_number,
    store_flags,
)
from engine.store import settings as nats_settings


def build_parser() -> argparse.ArgumentParser:
    # SUPPRESS: an absent flag sets nothing, so `dsctl --nats URL get pods` keeps the URL given before
    # the subcommand (argparse would otherwise overwrite it with the subparser's default)
    common = Parser(add_help=False, argument_default=argparse.SUPPRESS)
    nats_settings.add_arguments(common)
    credential_flags(common)

    parser = Parser(
        prog="dsctl",
        description="An event-sourced DaemonSet controller on NATS JetStream.",
        parents=[common],
        epilog=usage.EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"dsctl {version('dsctl')}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    up = sub.add_parser(
        "up",
        parents=[common],
        help="run NATS, the engine and a simulated fleet in one process, with a live view",
        description="Start an embedded nats-server (or use --nats URL), the engine and a simulated fleet "
        "executor, and show DaemonSets converging. Ctrl-C stops everything.",
    )
    up.add_argument("--port", type=port_number, default=4222, help="embedded server port [4222]")
    up.add_argument(
        "--store", default=".dsctl/nats", metavar="DIR", help="embedded server store [.dsctl/nats]"
    )
    up.add_argument("--demo", action="store_true", help="register three nodes and apply the seed manifests")
    store_flags(up, lease_ttl_help=LEASE_TTL_HELP)
    up.add_argument(
        "--metrics-port", type=port_number, metavar="PORT", help="serve Prometheus metrics on this port"
    )
    metrics_address_flag(up)
    up.add_argument(
        "--insecure",
        action="store_true",
        help="the embedded server takes any client with no credentials (experiments only); by default "
        "it requires the roles' nkeys, generated next to the store (.dsctl/credentials)",
    )
    up.add_argument(
        "--console-port",
        type=port_number,
        default=0,
        metavar="PORT",
        help="serve the web console on 127.0.0.1:PORT (docs/console.md) [a free port, printed]",
    )
    up.add_argument(
        "--ready-after",
        type=non_negative_number,
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
    store_flags(eng, lease_ttl_help=LEASE_TTL_HELP)
    eng.add_argument(
        "--metrics-port", type=port_number, metavar="PORT", help="serve Prometheus metrics on this port"
    )
    metrics_address_flag(eng)
    eng.add_argument("--workers", type=int, default=8, help="concurrent reconciles across keys [8]")
    eng.add_argument(
        "--console-port",
        type=port_number,
        metavar="PORT",
        help="also serve the web console on 127.0.0.1:PORT (docs/console.md) [none]",
    )

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
        type=non_negative_number,
        default=0.5,
        metavar="SECONDS",
        help="sim driver: pods become Ready after this long [0.5]",
    )
    exe.add_argument("--pod-logs", metavar="DIR", help="process driver: where pod output goes [.dsctl/pods]")
    exe.add_argument(
        "--state-dir",
        metavar="DIR",
        help="process driver: where the pods' pid records are kept, so a restarted executor re-attaches "
        "to them (keep it across restarts) [.dsctl/executor]",
    )
    exe.add_argument(
        "--stop-pods-on-exit",
        action="store_true",
        help="stop the pods at exit and report them failed (default: they keep running, like containers "
        "across a kubelet restart)",
    )
    exe.add_argument(
        "--lease-wait",
        type=non_negative_number,
        metavar="SECONDS",
        help="if another executor serves the node, wait this long for it to go, then exit with an error "
        "[the lease TTL + 1]",
    )
    adm = sub.add_parser(
        "admin",
        parents=[common],
        help="store administration: streams and buckets; the roles' credentials",
        description="streams: create or update every stream, bucket and the snapshot object store as the "
        "engine's start-up does, and print what was done to each (created, updated field: old → new, "
        "unchanged, kept as the operator set it, drift that cannot be fixed). Executors, ingest and the "
        "CLI never do this; they only check. credentials [ROLE] [--node NODE]: create the roles' nkeys "
        "(or one role's, or one node's executor) in the credentials directory, render the servers' "
        "auth.conf and reload the servers dsctl started with it; prints public keys, never a seed.",
    )
    adm.add_argument("action", choices=["streams", "credentials"])
    adm.add_argument(
        "target",
        nargs="?",
        metavar="ROLE",
        help="credentials: one role (admin, engine, fleet, ingest, publisher, auditor, executor) [all "
        "but executors]",
    )
    adm.add_argument("--node", metavar="NAME", help="credentials executor: the node it serves")
    adm.add_argument(
        "--routes",
        metavar="HOST:PORT[,...]",
        help="credentials: also write routes.conf (route user, password and these route URLs) for a "
        "cluster's servers to include in their cluster block",
    )
    adm.add_argument(
        "--operator",
        action="store_true",
        help="credentials: operator mode (decentralised JWT): an operator, an account with one scoped "
        "signing key per role (the executor's a template on the node), operator/server.conf for the "
        "servers, and a .creds per identity; later `credentials executor --node N` mints one offline",
    )
    store_flags(adm, lease_ttl_help="set the leader lease TTL [keep the bucket's; 5 when created]")
    adm.add_argument(
        "--node-lease-ttl",
        type=positive_number,
        metavar="SECONDS",
        help="set the executors' node lease TTL; each executor renews every third of it, so a fleet of "
        "thousands of nodes wants 30-40 [keep the bucket's; 5 when created]",
    )
    adm.add_argument("--dry-run", action="store_true", help="only say what would be done; change nothing")
    client_commands(sub, common)
    return parser
