"""The ``ops/cluster`` command line (``python -m engine.cli.cluster``)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from engine.cli.cluster.commands import (
    READER,
    client_settings,
    down,
    status,
    up,
)
from engine.cli.cluster.layout import (
    DEFAULT_DIR,
)
from engine.cli.cluster.processes import (
    Workspace,
)
from engine.runtime import logs
from engine.security.credentials import CredentialStore, directory, with_credentials
from engine.security.redaction import install as install_redaction
from engine.store import settings as nats_settings
from events.errors import DsctlError

# --- command line ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ops/cluster",
        description="A 3-node JetStream cluster with two engines, a simulated fleet executor and the "
        "ingest service on loopback, as background processes (development and tests).",
    )
    parser.add_argument(
        "--dir", default=os.environ.get("DSCTL_CLUSTER_DIR", str(DEFAULT_DIR)),
        help="stores, logs, pid files [$DSCTL_CLUSTER_DIR or .dsctl/cluster]",
    )  # fmt: skip
    sub = parser.add_subparsers(dest="action", required=True)
    p_up = sub.add_parser("up", help="start what is not running; wait for a meta leader and a leading engine")
    p_up.add_argument(
        "--ports", choices=["default", "auto"], default=os.environ.get("DSCTL_CLUSTER_PORTS", "default"),
        help="default: client 4231-4233, routes 6231-6233, http 8231-8233, metrics 9231-9232; auto: free "
        "ports (kept in cluster.json until down --wipe) [$DSCTL_CLUSTER_PORTS or default]",
    )  # fmt: skip
    p_up.add_argument("--lease-ttl", type=float, default=5.0, help="engine leader lease TTL in seconds [5]")
    p_up.add_argument("--demo", action="store_true", help="apply ops/demo/ as dsctl up --demo does")
    p_up.add_argument("--timeout", type=float, default=45.0, help="bound on each wait [45]")
    p_up.add_argument(
        "--insecure",
        action="store_true",
        help="servers that take any client with no credentials, and unauthenticated routes (experiments "
        "only; kept in cluster.json until down --wipe)",
    )
    p_status = sub.add_parser(
        "status", help="servers, stream leaders, processes, leases (exit 1 unless healthy and led)"
    )
    p_status.add_argument(
        "--cpu", type=float, default=0.0, metavar="SECONDS",
        help="sample CPU use over this long (default: total CPU seconds so far)",
    )  # fmt: skip
    p_status.add_argument(
        "--monitor", metavar="URL[,URL...]",
        help="servers not started here: their monitoring URLs (http://host:8222), with --nats",
    )  # fmt: skip
    nats_settings.add_arguments(p_status)
    p_down = sub.add_parser("down", help="SIGTERM everything, SIGKILL after 10 s")
    p_down.add_argument("--wipe", action="store_true", help="also delete the stores, logs and configs")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(level="error" if "DSCTL_LOG_LEVEL" not in os.environ else None)
    install_redaction()
    ws = Workspace(Path(args.dir))
    try:
        if args.action == "up":
            return up(ws, args.ports, args.lease_ttl, args.demo, args.timeout, insecure=args.insecure)
        if args.action == "down":
            return down(ws, args.wipe)
        if args.monitor:
            for flag in nats_settings.secret_flags(args):
                print(f"warning: {flag} puts a secret on the command line (ps shows it)", file=sys.stderr)
            settings = with_credentials(nats_settings.from_args(args), READER, CredentialStore(directory()))
            monitors = [(u, u.rstrip("/")) for u in nats_settings.split_urls(args.monitor)]
            return status(None, None, monitors, settings, args.cpu)
        layout = ws.load()
        if layout is None:
            print(f"no cluster in {ws.base} (ops/cluster up starts one)")
            return 1
        print(f"cluster {layout.cluster} in {ws.base}")
        print(f"NATS_URL={layout.url}")
        monitors = [(s.name, f"http://{layout.host}:{s.http}") for s in layout.servers]
        return status(ws, layout, monitors, client_settings(layout, READER), args.cpu)
    except DsctlError as err:
        print(f"error: {nats_settings.redact(str(err))}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # `ops/cluster status | head`: the reader went away, nothing left to say
        sys.stderr.close()
        return 0
