"""``python -m engine.bench [SCENARIO ...] [--quick] [-o table|json]``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Literal, cast

from engine.bench.runner import SCENARIOS, run_bench


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m engine.bench",
        description="Benchmarks against a raw NATS baseline measured in the same run (docs/benchmarks.md).",
    )
    parser.add_argument(
        "scenarios", nargs="*", metavar="SCENARIO", help=f"any of: {', '.join(SCENARIOS)} (default: all)"
    )
    parser.add_argument("--quick", action="store_true", help="every scenario small (under a minute)")
    parser.add_argument("-o", "--output", choices=["table", "json"], default="table")
    args = parser.parse_args(argv)
    output = cast(Literal["table", "json"], args.output)
    return asyncio.run(run_bench(list(args.scenarios), quick=args.quick, output=output, out=sys.stdout))


if __name__ == "__main__":
    sys.exit(main())
