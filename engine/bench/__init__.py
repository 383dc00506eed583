"""``dsctl bench``: speed, scale and memory of the engine, each figure next to a raw NATS (or raw
Python) baseline measured in the same run. See docs/benchmarks.md.

    from engine.bench import run_bench
    await run_bench(["ingest", "fold"], quick=True, output="table", out=sys.stdout)
"""

from __future__ import annotations

from engine.bench.runner import SCENARIOS, run_bench

__all__ = ["SCENARIOS", "run_bench"]
