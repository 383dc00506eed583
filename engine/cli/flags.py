"""The argument types and flag groups every ``dsctl`` verb's parser is built from (``parser.py``,
``client_verbs.py``): one place for what a port, a replica count, ``--dry-run`` or ``-f`` accept and
how their errors read (one line, kubectl's way: ``usage.py``)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from engine.cli import usage
from engine.core import arguments
from engine.security.credentials import DIR_ENV, ROLE_ENV
from events.errors import InvalidInput


class Parser(argparse.ArgumentParser):
    """Usage errors in one line, as kubectl's: what is wrong, then where to read more (never the whole
    usage); an unknown command gets a "did you mean" (``engine/cli/usage.py``)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(usage.one_line(self.prog, message, parser_verbs(self)), file=sys.stderr)
        sys.exit(2)


def parser_verbs(parser: argparse.ArgumentParser) -> list[str]:
    """The command names of ``parser`` (the top-level ``dsctl``), none for a verb's own parser."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices)
    return []


def positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
    return value


def non_negative_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return value


#: the fixed output formats of ``get``; jsonpath= and custom-columns= carry their template
GET_OUTPUTS = ("table", "wide", "json", "yaml", "name")


def get_output(text: str) -> str:
    if text in GET_OUTPUTS or text.startswith(("jsonpath=", "custom-columns=")):
        return text
    raise argparse.ArgumentTypeError(
        f"{text!r} is not an output format ({', '.join(GET_OUTPUTS)}, jsonpath=TEMPLATE, "
        "custom-columns=NAME:PATH[,...])"
    )


def port_number(text: str) -> int:
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


def replica_count(text: str, where: str = "--replicas") -> int:
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
        return replica_count(text, REPLICAS_ENV)
    except argparse.ArgumentTypeError as err:
        raise InvalidInput(str(err)) from None


def store_flags(p: argparse.ArgumentParser, *, lease_ttl_help: str) -> None:
    """The flags of the commands that set the store up (``engine/store/setup.py``: ``ensure``)."""
    p.add_argument(
        "--replicas",
        type=replica_count,
        metavar="N",
        help=f"copies of every stream, bucket and object store; raised, never lowered (needs a JetStream "
        f"cluster of at least N servers) [${REPLICAS_ENV}, else what the store has, 1 when fresh]",
    )
    p.add_argument("--lease-ttl", type=positive_number, metavar="SECONDS", help=lease_ttl_help)


def metrics_address_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--metrics-address",
        default="127.0.0.1",
        metavar="ADDR",
        help="address the metrics port binds (0.0.0.0: every interface) [127.0.0.1]",
    )


LEASE_TTL_HELP = "leader lease TTL, written to the dse_leader bucket [the bucket's own; 5 when it is created]"


def credential_flags(p: argparse.ArgumentParser) -> None:
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


#: the actions of ``rollout``
ROLLOUT_ACTIONS = ("status", "history", "undo", "restart", "pause", "resume", "partition")
#: the rollout actions that change something (``--dry-run`` applies to them)
ROLLOUT_CHANGES = frozenset({"undo", "restart", "pause", "resume", "partition"})
#: the verbs with kubectl's ``--dry-run=none|client[|server]``
DRY_RUN_VERBS = frozenset({"apply", "delete", "label", "taint", "cordon", "uncordon", "rollout"})

OBJECTS_HELP = (
    "TYPE is daemonsets (ds, daemonset.apps), pods (po) or nodes (no); several names may follow, or "
    "name each object as TYPE/NAME"
)
AT_HELP = (
    "as it was at a stream sequence (1234), a while ago (5m, 1h30m) or an RFC 3339 time; past either end "
    "of the log is an error"
)


def dry_run_type(allowed: tuple[arguments.DryRun, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        try:
            return arguments.parse_dry_run(text, allowed)
        except InvalidInput as err:
            raise argparse.ArgumentTypeError(err.reason) from None

    return parse


def dry_run_flag(
    p: argparse.ArgumentParser,
    allowed: tuple[arguments.DryRun, ...] = ("none", "client"),
    help_text: str = 'client: validate and print what would be done (with "(dry run)"); append nothing',
) -> None:
    p.add_argument(
        "--dry-run",
        default="none",
        type=dry_run_type(allowed),
        metavar="|".join(allowed),
        help=f"{help_text} [none]",
    )


def ns_flags(p: argparse.ArgumentParser, *, all_namespaces: bool = False) -> None:
    p.add_argument("-n", "--namespace", default="default", help="namespace [default]")
    if all_namespaces:
        p.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")


def file_flags(p: argparse.ArgumentParser, *, required: bool) -> None:
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
