"""The console in a real browser: headless Debian Chromium driven by Playwright (docs/console.md).

Loads the console over a running engine, checks the DaemonSets, follows a rollout live (the page is
redrawn from the event stream, never reloaded), opens a decision from the timeline, travels back in
the log, and saves a screenshot that must not be blank (``DSCTL_SCREENSHOT=path`` keeps a copy: the
README's picture is made so).
"""

from __future__ import annotations

import os
import shutil
import struct
import time
import zlib
from pathlib import Path
from typing import Any

import pytest

from engine.console.server import Console
from tests.console.conftest import converged, ds
from tests.e2e.harness import Cluster

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: ``ops/test`` sets it: there a missing browser or Playwright is a failure, not a skip
REQUIRED = os.environ.get("DSCTL_BROWSER_TESTS") == "required"


def _missing(why: str) -> None:
    if REQUIRED:
        pytest.fail(f"{why}, and DSCTL_BROWSER_TESTS=required")
    pytest.skip(why, allow_module_level=True)


try:
    from playwright import async_api
except ImportError:  # pragma: no cover - the test extras install it
    _missing("playwright is not installed (pip install -e '.[test]')")

BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def chromium() -> str:
    """Debian's chromium: the real binary behind the /usr/bin/chromium wrapper script."""
    for path in (
        "/usr/lib/chromium/chromium",
        shutil.which("chromium") or "",
        shutil.which("chromium-browser") or "",
    ):
        if path and os.access(path, os.X_OK):
            return path
    _missing("no chromium (ops/test installs Debian's: apt-get install chromium)")
    raise AssertionError("unreachable")


def distinct_bytes(png: bytes) -> int:
    """How varied a PNG's pixel data is: a blank page decompresses to a handful of byte values."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    data, i = b"", 8
    while i < len(png):
        (length,) = struct.unpack(">I", png[i : i + 4])
        kind = png[i + 4 : i + 8]
        if kind == b"IDAT":
            data += png[i + 8 : i + 8 + length]
        i += 12 + length
    return len(set(zlib.decompress(data)))


@pytest.fixture
async def page(console_cluster: tuple[Cluster, Console]) -> Any:
    async with async_api.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium(), args=BROWSER_ARGS, headless=True)
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 800})
            yield await context.new_page()
        finally:
            await browser.close()


async def test_console_in_a_browser(
    console_cluster: tuple[Cluster, Console], page: Any, tmp_path: Path
) -> None:
    cluster, console = console_cluster
    expect = async_api.expect
    # load: the DaemonSets and the grid (aggregated by zone) are the first useful paint
    started = time.perf_counter()
    await page.goto(console.url)
    await expect(page.locator("#grid tbody tr")).to_have_count(2)
    first_paint = time.perf_counter() - started
    assert first_paint < 2.0
    names = await page.locator("#daemonsets tbody th").all_inner_texts()
    assert names == ["default/agent", "default/gpu"]
    await expect(page.locator("#status")).to_contain_text("live")
    zone0 = page.locator("#grid tbody tr").first
    await expect(zone0).to_contain_text("3/3 ready")
    before_roll = cluster.state.seq

    # follow a rollout live: the page is redrawn from the event stream, not reloaded
    await page.get_by_role("link", name="default/agent").first.click()
    await expect(page.locator("h2")).to_have_text("Rollout of default/agent")
    await page.evaluate("window.__same_page = true")
    await cluster.apply(ds("agent", 2, ready_after=0.6))  # one node at a time: 3 s or more
    await expect(page.locator("main")).to_contain_text("rollout in progress", timeout=10_000)
    await expect(page.locator("main")).to_contain_text("Revision 2", timeout=10_000)
    await cluster.wait("agent v2", converged("agent", 5), timeout=30)
    await expect(page.locator("main")).to_contain_text("rollout complete", timeout=10_000)
    await expect(page.locator("#progress")).to_contain_text("Updated 5 of 5")
    assert await page.evaluate("window.__same_page") is True

    # the timeline, filtered to the DaemonSet, and one decision opened from it
    await page.get_by_role("link", name="Decisions of this DaemonSet").click()
    await expect(page.locator("#decisions tbody tr").first).to_be_visible()
    outcomes = await page.locator("#decisions tbody td:nth-child(3)").all_inner_texts()
    assert set(outcomes) == {"default/agent"}
    assert await page.locator("svg.axis circle").count() >= 2
    await page.locator("#decisions tbody th a").first.focus()
    await page.keyboard.press("Enter")  # keyboard, not only the mouse
    await expect(page.locator("h2")).to_contain_text("Decision")
    await expect(page.locator("#reasons")).to_be_visible()
    await expect(page.locator("main")).to_contain_text("4. Executor reports")
    assert "#/decision/" in page.url  # a deep link: it opens the same page on its own
    deep = page.url
    await page.goto("about:blank")
    await page.goto(deep)
    await expect(page.locator("#commands")).to_be_visible()

    # time travel: the fleet as it was before the rollout
    await page.goto(console.url + "#/rollout/default%2Fagent")
    await page.fill("#at", str(before_roll))
    await page.press("#at", "Enter")
    await expect(page.locator("main")).to_contain_text("Revision 1", timeout=10_000)
    await expect(page.locator("#status")).to_contain_text("time travel")
    await page.get_by_role("button", name="Live").click()
    await expect(page.locator("main")).to_contain_text("Revision 2")

    # a screenshot of the fleet, which must show something
    await page.goto(console.url + "#/fleet")
    await expect(page.locator("#grid tbody tr")).to_have_count(2)
    shot = await page.screenshot(full_page=True)
    (tmp_path / "console.png").write_bytes(shot)
    assert len(shot) > 10_000 and distinct_bytes(shot) > 40
    keep = os.environ.get("DSCTL_SCREENSHOT")
    if keep:
        Path(keep).write_bytes(shot)
