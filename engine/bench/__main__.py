"""``python -m engine.bench [SCENARIO ...] [--quick] [-o table|json] [--minutes N] [--plot DIR]
[--from-json FILE]``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Literal, cast

from engine.bench.runner import SCENARIOS, plot_from_json, run_bench


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m engine.bench",
        description="Benchmarks against a raw NATS baseline measured in the same run (docs/benchmarks.md).",
    )
    parser.add_argument(
        "scenarios",
        nargs="*",
        metavar="SCENARIO",
        help=f"any of: {', '.join(SCENARIOS)} (default: all but soak)",
    )
    parser.add_argument("--quick", action="store_true", help="every scenario small (under a minute)")
    parser.add_argument("-o", "--output", choices=["table", "json"], default="table")
    parser.add_argument("--minutes", type=float, metavar="N", help="soak: how long to run [10]")
    parser.add_argument("--plot", metavar="DIR", help="also write PNG charts of the figures into DIR")
    parser.add_argument(
        "--from-json",
        metavar="FILE",
        action="append",
        help="with --plot: chart the rows of earlier `-o json` runs instead of running anything (repeatable)",
    )
    args = parser.parse_args(argv)
    if args.from_json:
        if args.plot is None or args.scenarios:
            parser.error("--from-json takes --plot DIR and no scenario")
        return plot_from_json(args.from_json, args.plot)
    output = cast(Literal["table", "json"], args.output)
    return asyncio.run(
        run_bench(
            list(args.scenarios),
            quick=args.quick,
            output=output,
            out=sys.stdout,
            minutes=args.minutes,
            plot=args.plot,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
