"""``dsctl bench console``: the console's first useful paint at 5,000 nodes x 10 DaemonSets, in
headless Chromium (docs/console.md, "Performance").

The fleet converges under an engine in this process (as ``dsctl bench convergence``); the console is
served beside it over the engine's projection; the browser loads the page and the time is taken when
the DaemonSets table and the grid are on screen (the first paint a person can use). The fleet API
alone and a node group's first page are timed too. Needs Playwright and Debian's chromium (the test
extras and ``ops/test`` install them); in the CLI layer because it serves what ``dsctl up`` serves.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import time
import urllib.request

from engine.bench.common import Row, Target, nats_server
from engine.bench.live import LiveCluster
from engine.bench.workload import History
from engine.console.server import serve_console

TARGET = 2.0
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
#: the baseline: the same browser painting a one-row table that needs no server
BLANK = "data:text/html,<table id=grid><tbody><tr><td>node</td></tr></tbody></table>"


def _chromium() -> str | None:
    for path in ("/usr/lib/chromium/chromium", shutil.which("chromium") or ""):
        if path and os.access(path, os.X_OK):
            return path
    return None


def _get(url: str) -> float:
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as r:
        r.read()
    return time.perf_counter() - start


async def _paint(nodes: int, daemonsets: int, repeat: int) -> list[Row]:
    from playwright.async_api import async_playwright  # a test dependency: imported when measured

    path = _chromium()
    if path is None:
        raise RuntimeError("no chromium (apt-get install chromium)")
    history = History(nodes, daemonsets)
    async with nats_server() as (_, nc):
        cluster = LiveCluster(nc)
        await cluster.start()
        console = None
        try:
            await cluster.append(list(history.register_nodes()))
            cluster.want_ready = nodes * daemonsets
            await cluster.append([history.apply(i) for i in range(daemonsets)])
            await cluster.all_ready.wait()
            await cluster.settle(quiet=0.5)
            console = await serve_console(cluster.store, cluster.projector)
            api = [await asyncio.to_thread(_get, console.url + "api/fleet") for _ in range(repeat)]
            group = await asyncio.to_thread(_get, console.url + "api/nodes?value=zone-0")
            paints, blanks = [], []
            async with async_playwright() as p:
                browser = await p.chromium.launch(executable_path=path, args=ARGS, headless=True)
                try:
                    for _ in range(repeat):
                        page = await browser.new_page(viewport={"width": 1280, "height": 800})
                        start = time.perf_counter()
                        await page.goto(console.url)
                        await page.wait_for_selector("#grid tbody tr", timeout=30_000)
                        paints.append(time.perf_counter() - start)
                        cells = await page.evaluate("document.querySelectorAll('td').length")
                        await page.close()
                        page = await browser.new_page(viewport={"width": 1280, "height": 800})
                        start = time.perf_counter()
                        await page.goto(BLANK)
                        await page.wait_for_selector("#grid tbody tr", timeout=30_000)
                        blanks.append(time.perf_counter() - start)
                        await page.close()
                finally:
                    await browser.close()
        finally:
            if console is not None:
                await console.stop()
            await cluster.stop()
    return [
        Row(
            "console",
            f"first useful paint at {nodes:,} nodes x {daemonsets} DS (headless Chromium, page load -> grid)",
            statistics.median(paints),
            "s",
            baseline=statistics.median(blanks),
            baseline_label="the same browser painting a one-row table from a data: URL (no server)",
            target=Target("<=", TARGET, label=f"<= {TARGET:g} s"),
            note=f"median of {repeat}; {cells} table cells on the page; /api/fleet alone "
            f"{statistics.median(api):.3f} s; one group's first node page {group:.3f} s",
            extra={"paints": paints, "blanks": blanks, "api": api, "group": group, "cells": cells},
        )
    ]


async def console_paint(quick: bool) -> list[Row]:
    return await (_paint(100, 3, 2) if quick else _paint(5_000, 10, 5))


if __name__ == "__main__":  # pragma: no cover
    import sys

    for row in asyncio.run(console_paint(len(sys.argv) > 1 and sys.argv[1] == "--quick")):
        print(row.metric, "|", row.value, "|", row.note)
