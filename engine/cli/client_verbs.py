"""The parsers of the verbs that talk to a running deployment (apply, get, describe, rollout, logs,
...): kubectl's grammar (docs/output.md, README "kubectl's grammar"); what each does is
``dispatch.py``'s."""

from __future__ import annotations

import argparse

from engine.cli.flags import (
    AT_HELP,
    OBJECTS_HELP,
    ROLLOUT_ACTIONS,
    Parser,
    dry_run_flag,
    file_flags,
    get_output,
    ns_flags,
    port_number,
    positive_number,
)


def client_commands(sub: argparse._SubParsersAction[Parser], common: Parser) -> None:
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
    file_flags(ap, required=True)
    ns_flags(ap)
    dry_run_flag(
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
    file_flags(df, required=True)
    ns_flags(df)
    df.add_argument("-o", "--output", default="text", choices=["text", "wide", "json"])

    de = add(
        "delete",
        "delete DaemonSets, nodes or pods (or what manifests name)",
        "(TYPE[,TYPE...] NAME... | TYPE/NAME... | -f FILENAME...)",
    )
    de.add_argument("objects", nargs="*", metavar="TYPE", help=OBJECTS_HELP)
    file_flags(de, required=False)
    de.add_argument("--cascade", default="background", help="background|foreground|orphan [background]")
    ns_flags(de)
    dry_run_flag(de)

    la = add(
        "label",
        "set or remove node labels (key=value, key-)",
        "(nodes NAME... | node/NAME...) KEY=VALUE... KEY-...",
    )
    la.add_argument("args", nargs="+", metavar="TYPE", help="the nodes, then the edits")
    la.add_argument("--overwrite", action="store_true", help="allow changing an existing label")
    dry_run_flag(la)

    ta = add(
        "taint",
        "add or remove node taints (key=value:Effect, key:Effect-)",
        "(nodes NAME... | node/NAME...) KEY[=VALUE]:EFFECT... KEY[:EFFECT]-...",
    )
    ta.add_argument("args", nargs="+", metavar="TYPE", help="the nodes, then the edits")
    dry_run_flag(ta)

    for verb in ("cordon", "uncordon"):
        c = add(verb, f"mark nodes as {'un' if verb == 'cordon' else ''}schedulable", "NODE...")
        c.add_argument("names", nargs="+", metavar="NODE", help="NODE or node/NODE; several allowed")
        dry_run_flag(c)

    ge = add(
        "get",
        "list daemonsets, pods or nodes (as kubectl get)",
        "(TYPE[,TYPE...] [NAME...] | TYPE/NAME... | endpoints ds/NAME)",
    )
    ge.add_argument("objects", nargs="+", metavar="TYPE", help=OBJECTS_HELP + "; all: pods and daemonsets")
    ns_flags(ge, all_namespaces=True)
    ge.add_argument("-l", "--selector", metavar="SELECTOR", help="label selector (a=b,c!=d,e in (x,y))")
    ge.add_argument(
        "-o",
        "--output",
        default="table",
        type=get_output,
        metavar="FORMAT",
        help="table, wide, json, yaml, name, jsonpath=TEMPLATE, custom-columns=NAME:PATH[,...] [table]",
    )
    ge.add_argument("--show-labels", action="store_true", help="add a LABELS column")
    ge.add_argument("--no-headers", action="store_true", help="print table rows without the header")
    ge.add_argument("--sort-by", metavar="JSONPATH", help="sort rows by this field, e.g. .metadata.name")
    ge.add_argument("-w", "--watch", action="store_true", help="after listing, print changes as they happen")
    ge.add_argument("--at", metavar="SEQ|DURATION|TIME", help=AT_HELP)

    ds = add(
        "describe", "show objects in detail, with events from the log", "(TYPE [NAME...] | TYPE/NAME...)"
    )
    ds.add_argument(
        "objects", nargs="+", metavar="TYPE", help=OBJECTS_HELP + "; no name: every object of the type"
    )
    ns_flags(ds)
    ds.add_argument("--at", metavar="SEQ|DURATION|TIME", help=AT_HELP)

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
    ns_flags(ro)
    dry_run_flag(ro, help_text="pause, resume, partition, restart, undo: validate and print; append nothing")
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
    ns_flags(ex)
    ex.add_argument("--at", metavar="SEQ|DURATION|TIME", help="node: " + AT_HELP)

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
    be.add_argument("--minutes", type=positive_number, metavar="N", help="soak: how long to run [10]")
    be.add_argument("--plot", metavar="DIR", help="also write PNG charts of the figures into DIR")
    be.add_argument(
        "--from-json",
        metavar="FILE",
        action="append",
        help="with --plot: chart earlier `-o json` reports instead of running (repeatable)",
    )

    lg = add("logs", "print a pod's log, served by its node's executor (works from any machine)")
    lg.add_argument("pod", metavar="POD")
    ns_flags(lg)
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
    co.add_argument("--port", type=port_number, default=8422, help="port to listen on [8422]")
