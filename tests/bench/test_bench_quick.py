"""Smoke test of the benchmark harness: every scenario runs small and reports a figure, a baseline and a
ratio. How fast is not checked (timings on CI machines are noise)."""

from __future__ import annotations

import io
import json

import pytest

from engine.bench import SCENARIOS, run_bench
from engine.bench.common import Row, Target
from engine.bench.runner import render_table

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.mark.timeout(200)
async def test_quick_bench_reports_every_scenario() -> None:
    out = io.StringIO()
    rc = await run_bench(list(SCENARIOS), quick=True, output="json", out=out)
    report = json.loads(out.getvalue())
    assert rc == 0, report
    assert report["quick"] is True
    rows = report["rows"]
    assert {r["scenario"] for r in rows} == set(SCENARIOS)
    for row in rows:
        assert row["value"] is not None, row
        assert row["baseline"] is not None and row["baseline"] > 0, row
        assert row["ratio"] is not None, row
    # every scenario has at least one row with a target and a verdict
    for name in SCENARIOS:
        assert any(r["target"] and r["met"] is not None for r in rows if r["scenario"] == name), name


async def test_unknown_scenario_is_refused() -> None:
    assert await run_bench(["nope"], quick=True, output="table", out=io.StringIO()) == 2


def test_table_shows_figure_baseline_ratio_and_verdict() -> None:
    rows = [
        Row(
            "ingest",
            "append_many",
            700.0,
            "ev/s",
            baseline=1000.0,
            baseline_label="raw",
            target=Target(">=", 0.7, on="ratio"),
        ),
        Row("latency", "p99", 60.0, "ms", baseline=0.5, target=Target("<=", 50.0)),
    ]
    out = io.StringIO()
    render_table(
        rows, {"quick": True, "cpus": 2, "python": "3.11", "nats_server": "2.15.1", "seconds": 1.0}, out
    )
    text = out.getvalue()
    assert "700 ev/s" in text and "1,000 ev/s" in text and "0.70" in text and " met" in text
    assert "60.0 ms" in text and "NOT MET" in text and "<= 50.0 ms" in text
