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
from collections.abc import Callable, Sequence
from importlib.metadata import version
from pathlib import Path

import msgspec

from engine.cli import usage
from engine.core import arguments
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


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, as kubectl's: what is wrong, then where to read more (never the whole
    usage); an unknown command gets a "did you mean" (``engine/cli/usage.py``)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(usage.one_line(self.prog, message, _verbs(self)), file=sys.stderr)
        sys.exit(2)


def _verbs(parser: argparse.ArgumentParser) -> list[str]:
    """The command names of ``parser`` (the top-level ``dsctl``), none for a verb's own parser."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices)
    return []


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


#: the fixed output formats of ``get``; jsonpath= and custom-columns= carry their template
GET_OUTPUTS = ("table", "wide", "json", "yaml", "name")


def _get_output(text: str) -> str:
    if text in GET_OUTPUTS or text.startswith(("jsonpath=", "custom-columns=")):
        return text
    raise argparse.ArgumentTypeError(
        f"{text!r} is not an output format ({', '.join(GET_OUTPUTS)}, jsonpath=TEMPLATE, "
        "custom-columns=NAME:PATH[,...])"
    )


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1-65535)")
    return value


#: replicas for every stream, bucket and object store when ``--replicas`` is not given
REPLICAS_ENV = "DSCTL_REPLICAS"
#: JetStream keeps at most five copies of a stream
MAX_REPLICAS = 5


def _replicas(text: str, where: str = "--replicas") -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_REPLICAS:
        raise argparse.ArgumentTypeError(
            f"{where} {text!r} is not a replica count (1 to {MAX_REPLICAS}: JetStream keeps at most "
            f"{MAX_REPLICAS} copies)"
        )
    return value


def replicas_from(args: argparse.Namespace, env: dict[str, str] | None = None) -> int | None:
    """``--replicas``, else ``$DSCTL_REPLICAS``, else None (the store's own count, 1 when fresh)."""
    flag: int | None = getattr(args, "replicas", None)
    if flag is not None:
        return flag
    text = (os.environ if env is None else env).get(REPLICAS_ENV, "").strip()
    if not text:
        return None
    try:
        return _replicas(text, REPLICAS_ENV)
    except argparse.ArgumentTypeError as err:
        raise InvalidInput(str(err)) from None


def _store_flags(p: argparse.ArgumentParser, *, lease_ttl_help: str) -> None:
    """The flags of the commands that set the store up (``engine/store/setup.py``: ``ensure``)."""
    p.add_argument(
        "--replicas",
        type=_replicas,
        metavar="N",
        help=f"copies of every stream, bucket and object store; raised, never lowered (needs a JetStream "
        f"cluster of at least N servers) [${REPLICAS_ENV}, else what the store has, 1 when fresh]",
    )
    p.add_argument("--lease-ttl", type=_positive, metavar="SECONDS", help=lease_ttl_help)


def _metrics_address(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--metrics-address",
        default="127.0.0.1",
        metavar="ADDR",
        help="address the metrics port binds (0.0.0.0: every interface) [127.0.0.1]",
    )


_LEASE_TTL_HELP = (
    "leader lease TTL, written to the dse_leader bucket [the bucket's own; 5 when it is created]"
)


def _credential_flags(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("dsctl credentials (engine/security; docs/deploy.md)")
    group.add_argument(
        "--credentials",
        metavar="DIR",
        help=f"where the roles' credentials are [${DIR_ENV}, else .dsctl/credentials]",
    )
    group.add_argument(
        "--role",
        metavar="ROLE",
        help=f"connect as this role (admin, engine, fleet, ingest, publisher, auditor, executor-NODE) "
        f"[${ROLE_ENV}, else the first the command can use]",
    )


def build_parser() -> argparse.ArgumentParser:
    # SUPPRESS: an absent flag sets nothing, so `dsctl --nats URL get pods` keeps the URL given before
    # the subcommand (argparse would otherwise overwrite it with the subparser's default)
    common = _Parser(add_help=False, argument_default=argparse.SUPPRESS)
    nats_settings.add_arguments(common)
    _credential_flags(common)

    parser = _Parser(
        prog="dsctl",
        description="An event-sourced DaemonSet controller on NATS JetStream.",
        parents=[common],
        epilog=usage.EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    _store_flags(up, lease_ttl_help=_LEASE_TTL_HELP)
    up.add_argument(
        "--metrics-port", type=_port, metavar="PORT", help="serve Prometheus metrics on this port"
    )
    _metrics_address(up)
    up.add_argument(
        "--insecure",
        action="store_true",
        help="the embedded server takes any client with no credentials (experiments only); by default "
        "it requires the roles' nkeys, generated next to the store (.dsctl/credentials)",
    )
    up.add_argument(
        "--console-port",
        type=_port,
        default=0,
        metavar="PORT",
        help="serve the web console on 127.0.0.1:PORT (docs/console.md) [a free port, printed]",
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
    _store_flags(eng, lease_ttl_help=_LEASE_TTL_HELP)
    eng.add_argument(
        "--metrics-port", type=_port, metavar="PORT", help="serve Prometheus metrics on this port"
    )
    _metrics_address(eng)
    eng.add_argument("--workers", type=int, default=8, help="concurrent reconciles across keys [8]")
    eng.add_argument(
        "--console-port",
        type=_port,
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
        type=_non_negative,
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
        type=_non_negative,
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
    _store_flags(adm, lease_ttl_help="set the leader lease TTL [keep the bucket's; 5 when created]")
    adm.add_argument(
        "--node-lease-ttl",
        type=_positive,
        metavar="SECONDS",
        help="set the executors' node lease TTL; each executor renews every third of it, so a fleet of "
        "thousands of nodes wants 30-40 [keep the bucket's; 5 when created]",
    )
    adm.add_argument("--dry-run", action="store_true", help="only say what would be done; change nothing")
    _client_commands(sub, common)
    return parser


#: the actions of ``rollout``
ROLLOUT_ACTIONS = ("status", "history", "undo", "restart", "pause", "resume", "partition")
#: the rollout actions that change something (``--dry-run`` applies to them)
ROLLOUT_CHANGES = frozenset({"undo", "restart", "pause", "resume", "partition"})
#: the verbs with kubectl's ``--dry-run=none|client[|server]``
DRY_RUN_VERBS = frozenset({"apply", "delete", "label", "taint", "cordon", "uncordon", "rollout"})

_OBJECTS_HELP = (
    "TYPE is daemonsets (ds, daemonset.apps), pods (po) or nodes (no); several names may follow, or "
    "name each object as TYPE/NAME"
)
_AT_HELP = (
    "as it was at a stream sequence (1234), a while ago (5m, 1h30m) or an RFC 3339 time; past either end "
    "of the log is an error"
)


def _dry_run_type(allowed: tuple[arguments.DryRun, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        try:
            return arguments.parse_dry_run(text, allowed)
        except InvalidInput as err:
            raise argparse.ArgumentTypeError(err.reason) from None

    return parse


def _dry_run_flag(
    p: argparse.ArgumentParser,
    allowed: tuple[arguments.DryRun, ...] = ("none", "client"),
    help_text: str = 'client: validate and print what would be done (with "(dry run)"); append nothing',
) -> None:
    p.add_argument(
        "--dry-run",
        default="none",
        type=_dry_run_type(allowed),
        metavar="|".join(allowed),
        help=f"{help_text} [none]",
    )


def _ns_flags(p: argparse.ArgumentParser, *, all_namespaces: bool = False) -> None:
    p.add_argument("-n", "--namespace", default="default", help="namespace [default]")
    if all_namespaces:
        p.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")


def _file_flags(p: argparse.ArgumentParser, *, required: bool) -> None:
    """``-f`` as kubectl takes it: repeatable (every one is read, in order), a directory, or ``-``."""
    p.add_argument(
        "-f",
        "--filename",
        action="append",
        required=required,
        metavar="FILE",
        help="manifest file, directory (*.yaml, *.yml, *.json) or - for stdin; repeatable",
    )
    p.add_argument("-R", "--recursive", action="store_true", help="descend into subdirectories of -f DIR")
    p.add_argument(
        "--strict",
        action="store_true",
        help="refuse files holding objects dsctl does not manage, instead of skipping them",
    )


def _client_commands(sub: argparse._SubParsersAction[_Parser], common: _Parser) -> None:
    def add(name: str, help_text: str, usage: str | None = None) -> argparse.ArgumentParser:
        """``usage``: kubectl's one-line synopsis (``dsctl get (TYPE[,TYPE...] [NAME...] | ...)
        [flags]``) instead of argparse's list of every flag; the flags follow in ``--help``."""
        return sub.add_parser(
            name,
            parents=[common],
            help=help_text,
            description=help_text,
            usage=f"dsctl {name} {usage} [flags]" if usage else None,
        )

    ap = add("apply", "append DaemonSets and Nodes from manifests (YAML or JSON, multi-document, List)")
    _file_flags(ap, required=True)
    _ns_flags(ap)
    _dry_run_flag(
        ap,
        ("none", "client", "server"),
        "client: validate and print what would be done; server: also preview what would change on every "
        "node; both append nothing",
    )
    ap.add_argument(
        "-o", "--output", default="text", choices=["text", "wide", "json"], help="--dry-run output"
    )

    df = add(
        "diff", "preview what applying a manifest would do on every node (exit 0 none, 1 changes, 2 error)"
    )
    _file_flags(df, required=True)
    _ns_flags(df)
    df.add_argument("-o", "--output", default="text", choices=["text", "wide", "json"])

    de = add(
        "delete",
        "delete DaemonSets, nodes or pods (or what manifests name)",
        "(TYPE[,TYPE...] NAME... | TYPE/NAME... | -f FILENAME...)",
    )
    de.add_argument("objects", nargs="*", metavar="TYPE", help=_OBJECTS_HELP)
    _file_flags(de, required=False)
    de.add_argument("--cascade", default="background", help="background|foreground|orphan [background]")
    _ns_flags(de)
    _dry_run_flag(de)

    la = add(
        "label",
        "set or remove node labels (key=value, key-)",
        "(nodes NAME... | node/NAME...) KEY=VALUE... KEY-...",
    )
    la.add_argument("args", nargs="+", metavar="TYPE", help="the nodes, then the edits")
    la.add_argument("--overwrite", action="store_true", help="allow changing an existing label")
    _dry_run_flag(la)

    ta = add(
        "taint",
        "add or remove node taints (key=value:Effect, key:Effect-)",
        "(nodes NAME... | node/NAME...) KEY[=VALUE]:EFFECT... KEY[:EFFECT]-...",
    )
    ta.add_argument("args", nargs="+", metavar="TYPE", help="the nodes, then the edits")
    _dry_run_flag(ta)

    for verb in ("cordon", "uncordon"):
        c = add(verb, f"mark nodes as {'un' if verb == 'cordon' else ''}schedulable", "NODE...")
        c.add_argument("names", nargs="+", metavar="NODE", help="NODE or node/NODE; several allowed")
        _dry_run_flag(c)

    ge = add(
        "get",
        "list daemonsets, pods or nodes (as kubectl get)",
        "(TYPE[,TYPE...] [NAME...] | TYPE/NAME... | endpoints ds/NAME)",
    )
    ge.add_argument("objects", nargs="+", metavar="TYPE", help=_OBJECTS_HELP + "; all: pods and daemonsets")
    _ns_flags(ge, all_namespaces=True)
    ge.add_argument("-l", "--selector", metavar="SELECTOR", help="label selector (a=b,c!=d,e in (x,y))")
    ge.add_argument(
        "-o",
        "--output",
        default="table",
        type=_get_output,
        metavar="FORMAT",
        help="table, wide, json, yaml, name, jsonpath=TEMPLATE, custom-columns=NAME:PATH[,...] [table]",
    )
    ge.add_argument("--show-labels", action="store_true", help="add a LABELS column")
    ge.add_argument("--no-headers", action="store_true", help="print table rows without the header")
    ge.add_argument("--sort-by", metavar="JSONPATH", help="sort rows by this field, e.g. .metadata.name")
    ge.add_argument("-w", "--watch", action="store_true", help="after listing, print changes as they happen")
    ge.add_argument("--at", metavar="SEQ|DURATION|TIME", help=_AT_HELP)

    ds = add(
        "describe", "show objects in detail, with events from the log", "(TYPE [NAME...] | TYPE/NAME...)"
    )
    ds.add_argument(
        "objects", nargs="+", metavar="TYPE", help=_OBJECTS_HELP + "; no name: every object of the type"
    )
    _ns_flags(ds)
    ds.add_argument("--at", metavar="SEQ|DURATION|TIME", help=_AT_HELP)

    ro = add(
        "rollout",
        "status, history, undo, restart, pause, resume or partition a DaemonSet rollout",
        "ACTION (ds/NAME... | daemonset NAME...) [N|P%%]",
    )
    ro.add_argument("action", choices=ROLLOUT_ACTIONS)
    ro.add_argument(
        "args",
        nargs="+",
        metavar="DAEMONSET",
        help="the DaemonSet; partition: then nodes (or percent) kept on the old revision",
    )
    _ns_flags(ro)
    _dry_run_flag(ro, help_text="pause, resume, partition, restart, undo: validate and print; append nothing")
    ro.add_argument("--timeout", default="0", help="status: give up after this long (30s, 5m) [0: never]")
    ro.add_argument("--revision", type=int, default=0, help="history: show this revision's template")
    ro.add_argument("--to-revision", type=int, default=0, help="undo: roll back to this revision")

    rp = add("replay", "recompute recorded decisions from the log, and audit their commands' effects")
    rp.add_argument("action", choices=["verify"])
    rp.add_argument(
        "--from", dest="from_seq", type=int, default=1, metavar="SEQ", help="first decision to check"
    )
    rp.add_argument(
        "--now",
        metavar="TIME|now",
        help="judge commands' in-flight windows at this RFC 3339 time, or `now` (the wall clock) "
        "[default: the time of the last event in the log]",
    )
    rp.add_argument("-o", "--output", default="text", choices=["text", "json"])

    ex = add(
        "explain",
        "why a pod is where it is, or why a DaemonSet does (not) run on a node",
        "(pod NAME | pod/NAME | node NAME --ds NS/NAME | node/NAME --ds NS/NAME)",
    )
    ex.add_argument("objects", nargs="+", metavar="TYPE", help="pod NAME, node NAME, pod/NAME or node/NAME")
    ex.add_argument("--ds", metavar="NS/NAME", help="node: the DaemonSet to explain")
    _ns_flags(ex)
    ex.add_argument("--at", metavar="SEQ|DURATION|TIME", help="node: " + _AT_HELP)

    au = add("audit", "events and decisions in log order, filtered")
    au.add_argument("--ds", metavar="NS/NAME")
    au.add_argument("--node", metavar="NAME")
    au.add_argument("--pod", metavar="NAME")
    au.add_argument("--type", dest="types", action="append", default=[], metavar="TAG", help="repeatable")
    au.add_argument("--since", metavar="DURATION|TIME", help="e.g. 10m, or an RFC 3339 time")
    au.add_argument("--until", metavar="TIME")
    au.add_argument("--limit", type=int, metavar="N")
    au.add_argument("-o", "--output", default="table", choices=["table", "json", "jsonl"])

    ev = add("events", "publish events through the ingest service")
    ev.add_argument("action", choices=["publish"])
    ev.add_argument("-f", "--filename", required=True, metavar="FILE", help="JSON lines, or - for stdin")

    sc = sub.add_parser("schema", help="print the event contract (JSON Schema per event, or AsyncAPI)")
    sc.add_argument("-o", "--output", default="json", choices=["json", "asyncapi"])

    be = sub.add_parser("bench", help="benchmarks against raw NATS baselines (starts its own nats-server)")
    be.add_argument("scenarios", nargs="*", metavar="SCENARIO", help="ingest rebuild fold convergence "
                    "latency restart memory scaling fanout ingest-service reads audit console verify "
                    "[all of these]; soak (only when named)")  # fmt: skip
    be.add_argument("--quick", action="store_true", help="every scenario small (under a minute)")
    be.add_argument("-o", "--output", default="table", choices=["table", "json"])
    be.add_argument("--minutes", type=_positive, metavar="N", help="soak: how long to run [10]")
    be.add_argument("--plot", metavar="DIR", help="also write PNG charts of the figures into DIR")
    be.add_argument(
        "--from-json",
        metavar="FILE",
        action="append",
        help="with --plot: chart earlier `-o json` reports instead of running (repeatable)",
    )

    lg = add("logs", "print a pod's log, served by its node's executor (works from any machine)")
    lg.add_argument("pod", metavar="POD")
    _ns_flags(lg)
    lg.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    lg.add_argument("--tail", type=int, default=-1, metavar="N", help="only the last N lines [all]")

    ig = add("ingest", "run the ingest service (validates and appends events from other services)")
    ig.add_argument("action", nargs="?", choices=["run"], default="run")

    ve = add("version", "print the client's version, and the NATS server's and the engines' if reachable")
    ve.add_argument("--client", action="store_true", help="the client's version only (needs no server)")
    ve.add_argument("-o", "--output", choices=["json", "yaml"], help="json or yaml [text]")

    cp = sub.add_parser(
        "completion",
        help="print a shell completion script (bash or zsh)",
        description="Print a completion script for bash or zsh. Load it in the current shell with "
        "`source <(dsctl completion bash)` (zsh: `source <(dsctl completion zsh)`), or for every shell "
        "with `dsctl completion bash > /etc/bash_completion.d/dsctl`.",
    )
    cp.add_argument("shell", choices=["bash", "zsh"])

    co = add("console", "serve the web console against this deployment (docs/console.md)")
    co.add_argument("--address", default="127.0.0.1", metavar="ADDR", help="address to listen on [127.0.0.1]")
    co.add_argument("--port", type=_port, default=8422, help="port to listen on [8422]")


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
