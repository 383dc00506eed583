"""The harness guards itself: a test that leaks an asyncio task fails, one that cleans up passes."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"


@pytest.mark.timeout(60)
def test_leaked_task_fails_the_test(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makeini("[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(
        test_inner="""
import asyncio

async def test_leaks():
    asyncio.get_running_loop().create_task(asyncio.sleep(30), name="forgotten")

async def test_cleans_up():
    task = asyncio.get_running_loop().create_task(asyncio.sleep(30))
    task.cancel()

def test_sync_is_not_guarded():
    pass
"""
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(["*leaked asyncio tasks*", "*forgotten*"])
