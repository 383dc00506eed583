"""The process the ``memory`` scenario measures (``python -m engine.bench.memproc``).

``bare``: import what the engine imports, connect nothing, report. ``engine --url URL``: run the engine
(leader) and a simulated fleet executor against the log already there, wait until the controller has
reconciled everything and stayed idle, report. The report is one JSON line on stdout with ``VmHWM``
(peak RSS) and ``VmRSS`` in kB from ``/proc/self/status``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import structlog

from engine.bench.common import vm_status


async def _engine(url: str, settle_timeout: float) -> dict[str, object]:
    from engine.bench.live import LiveCluster
    from engine.store.connection import close, connect
    from engine.store.settings import NatsSettings

    start = time.monotonic()
    nc = await connect(NatsSettings(servers=[url], name="dsctl-bench-memory"))
    try:
        cluster = LiveCluster(nc)
        await cluster.start()
        try:
            settled = await cluster.settle(quiet=1.0, timeout=settle_timeout)
            state = cluster.projector.state
            out: dict[str, object] = {
                "pods": len(state.pods),
                "nodes": len(state.nodes),
                "seq": state.seq,
                "settled": settled,
                "seconds": time.monotonic() - start,
            }
        finally:
            await cluster.stop()
    finally:
        await close(nc)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.bench.memproc")
    parser.add_argument("mode", choices=["bare", "engine"])
    parser.add_argument("--url", default="")
    parser.add_argument("--settle-timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    # the same imports in both modes, so the baseline is the interpreter plus the engine's code
    import engine.bench.live
    import engine.store.connection  # noqa: F401

    report: dict[str, object] = {}
    if args.mode == "engine":
        report = asyncio.run(_engine(args.url, args.settle_timeout))
    report.update(vm_status())
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
