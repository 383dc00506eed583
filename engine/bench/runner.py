"""``run_bench``: run scenarios, print the table (or JSON). Exit status 0 when every scenario ran (met
or not: timings on shared machines are noisy, so nothing here fails on a figure), 1 when one failed."""

from __future__ import annotations

import asyncio
import json
import math
import os
import platform
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TextIO

import structlog

from engine.bench.common import Row, fmt
from engine.bench.fanout import fanout
from engine.bench.ingest_service import ingest_service
from engine.bench.live import convergence, latency
from engine.bench.memory import memory
from engine.bench.pure import fold, scaling
from engine.bench.restart import restart
from engine.bench.soak import plan, rows_from_log, soak
from engine.bench.store import ingest, rebuild
from engine.store.embedded import find_binary, server_version

#: a scenario that runs longer is stopped and reported as failed (a hang must not hang the bench)
#: (quick: ``fanout`` starts a 3-node cluster and two worker processes, ~20 s alone, 60 s on a busy box)
QUICK_LIMIT = 120.0
FULL_LIMIT = 420.0
#: full-size scenarios that need longer: ``verify`` first builds a million-event log with the real
#: reconciler (about 5 minutes on 2 busy cores), then reads it four times
FULL_LIMITS = {"verify": 1500.0}

Scenario = Callable[[bool], Awaitable[list[Row]]]

SCENARIOS: dict[str, Scenario] = {
    "ingest": ingest,
    "rebuild": rebuild,
    "fold": fold,
    "convergence": convergence,
    "latency": latency,
    "restart": restart,
    "memory": memory,
    "scaling": scaling,
    "fanout": fanout,
    "ingest-service": ingest_service,
    "soak": soak,
}

#: run only when named: ``soak`` lasts ``--minutes`` (10 by default), not part of "every scenario"
EXPLICIT = frozenset({"soak"})
#: what a soak may take beyond its minutes: the fleet's start and convergence, the last sample
SOAK_MARGIN = 420.0


def machine() -> dict[str, Any]:
    try:
        nats = ".".join(map(str, server_version(find_binary())))
    except Exception as err:
        nats = f"unknown ({err})"
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "nats_server": nats,
    }


def _met(row: Row) -> str:
    return {True: "met", False: "NOT MET", None: "-"}[row.met]


def render_table(rows: list[Row], info: dict[str, Any], out: TextIO) -> None:
    print(
        f"dsctl bench ({'quick' if info['quick'] else 'full'}): {info['cpus']} CPUs, "
        f"Python {info['python']}, "
        f"nats-server {info['nats_server']}, {info['seconds']:.0f} s total",
        file=out,
    )
    header = ("SCENARIO", "FIGURE", "BASELINE", "RATIO", "TARGET", "MET")
    table = [header]
    for r in rows:
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}"
        target = "-" if r.target is None else r.target.describe(r.unit)
        table.append(
            (
                r.scenario,
                fmt(r.value, r.unit),
                fmt(r.baseline, r.baseline_unit or r.unit),
                ratio,
                target,
                _met(r),
            )
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for i, line in enumerate(table):
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip(), file=out)
        if i == 0:
            continue
        r = rows[i - 1]
        print(f"    {r.metric}", file=out)
        details = [f"baseline: {r.baseline_label}"] if r.baseline_label else []
        if r.note:
            details.append(r.note)
        if details:
            print(f"    ({'; '.join(details)})", file=out)


async def run_bench(
    scenarios: list[str],
    *,
    quick: bool,
    output: Literal["table", "json"],
    out: TextIO,
    minutes: float | None = None,
    plot: str | None = None,
) -> int:
    """Run ``scenarios`` (all but ``soak`` when empty) and print every figure with its baseline, ratio
    and target.

    ``minutes`` is the soak's length; ``plot`` a directory the PNG charts are written to
    (engine/bench/plot.py).
    """
    names = scenarios or [n for n in SCENARIOS if n not in EXPLICIT]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        print(
            f"error: unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}",
            file=sys.stderr,
        )
        return 2
    problem = check_options(names, minutes, plot)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    saved = structlog.get_config()
    # the engine logs every reconcile at info: that would be measured too
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    rows: list[Row] = []
    failed = False
    started = time.perf_counter()
    try:
        for name in names:
            t0 = time.perf_counter()
            print(f"bench: {name} ...", file=sys.stderr, flush=True)
            try:
                limit = QUICK_LIMIT if quick else FULL_LIMITS.get(name, FULL_LIMIT)
                if name == "soak":
                    limit = plan(quick, minutes).minutes * 60 + SOAK_MARGIN
                async with asyncio.timeout(limit):
                    if name == "soak":
                        got = await soak(quick, minutes)
                    else:
                        got = await SCENARIOS[name](quick)
            except TimeoutError:
                failed = True
                got = [Row(name, f"FAILED: did not finish within {limit:g} s", None, "")]
            except Exception as err:
                failed = True
                traceback.print_exc(file=sys.stderr)
                got = [Row(name, f"FAILED: {type(err).__name__}: {err}", None, "")]
            rows.extend(got)
            print(f"bench: {name} done in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    finally:
        structlog.configure(**saved)
    info = {**machine(), "quick": quick, "seconds": time.perf_counter() - started}
    if output == "json":
        json.dump({**info, "rows": [r.as_json() for r in rows]}, out, indent=2)
        print(file=out)
    else:
        render_table(rows, info, out)
    if plot is not None:
        from engine.bench.plot import write_plots

        for path in write_plots([r.as_json() for r in rows], plot):
            print(f"bench: wrote {path}", file=sys.stderr)
    return 1 if failed else 0


def check_options(names: list[str], minutes: float | None, plot: str | None) -> str:
    """What is wrong with ``--minutes`` / ``--plot``, said in one line; empty when nothing is."""
    if minutes is not None:
        if not math.isfinite(minutes) or minutes <= 0:
            return f"--minutes {minutes:g}: the soak's length must be a positive number of minutes"
        if "soak" not in names:
            return "--minutes only applies to the soak: name it (dsctl bench soak --minutes N)"
    if plot is not None:
        if not plot.strip():
            return "--plot: give a directory to write the PNG charts into"
        if os.path.exists(plot) and not os.path.isdir(plot):
            return f"--plot {plot}: exists and is not a directory"
        parent = os.path.dirname(os.path.abspath(plot))
        if not os.path.isdir(parent):
            return f"--plot {plot}: its parent directory {parent} does not exist"
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            return "--plot needs matplotlib: pip install 'dsctl[bench]'"
    return ""


def plot_from_json(files: list[str], plot: str) -> int:
    """``--plot DIR --from-json FILE``: the charts of earlier ``-o json`` runs (a soak of an hour is
    not run again to be drawn), or of a soak's stderr (its samples, if it was stopped early); the
    rows are printed as the table."""
    problem = check_options([], None, plot)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    rows: list[dict[str, Any]] = []
    for path in files:
        try:
            with open(path) as f:
                text = f.read()
            soak_rows = [] if text.lstrip().startswith("{") else rows_from_log(text)
            if soak_rows:  # a soak's stderr: the samples of a run stopped before its report
                rows.extend(r.as_json() for r in soak_rows)
                continue
            rows.extend(json.loads(text)["rows"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            print(f"error: --from-json {path}: not a `dsctl bench -o json` report ({err})", file=sys.stderr)
            return 2
    from engine.bench.plot import write_plots

    if any(r.get("scenario") == "soak" and "series" in r for r in rows):
        for r in rows:
            if r.get("scenario") == "soak":
                print(f"{r['metric']}: {fmt(r['value'], r['unit'])} (first: "
                      f"{fmt(r['baseline'], r['unit'])}); {r['note']}")  # fmt: skip
    written = write_plots(rows, plot)
    for path in written:
        print(f"bench: wrote {path}", file=sys.stderr)
    if not written:
        print(f"error: nothing to chart in {', '.join(files)} (no row carries a series)", file=sys.stderr)
        return 1
    return 0
