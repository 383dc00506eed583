"""Smoke test of the benchmark harness: every scenario (the CLI-layer ones and the soak included) runs
small and reports a figure, a baseline and a ratio, and ``--plot`` draws real charts. How fast is not
checked (timings on CI machines are noise)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from engine.bench import SCENARIOS, run_bench
from engine.bench.__main__ import main as bench_main
from engine.bench.common import Row, Target
from engine.bench.runner import check_options, render_table
from engine.cli.bench_console import _chromium
from engine.cli.bench_scenarios import CLI_SCENARIOS

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _drawn(path: Path) -> None:
    """A PNG that decodes and is not blank: more than one colour, and some ink on a white page."""
    import matplotlib.image as mpimg

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    pixels = mpimg.imread(path)
    height, width = pixels.shape[:2]
    assert height > 200 and width > 300, (path, pixels.shape)
    rgb = pixels[..., :3]
    assert float(rgb.std()) > 0.05, path
    ink = (rgb.mean(axis=2) < 0.9).mean()
    assert 0.01 < float(ink) < 0.9, (path, float(ink))


@pytest.mark.timeout(400)
async def test_quick_bench_reports_every_scenario_and_plots(tmp_path: Path) -> None:
    scenarios = {**SCENARIOS, **CLI_SCENARIOS}
    if _chromium() is None and os.environ.get("DSCTL_BROWSER_TESTS") != "required":
        del scenarios["console"]  # as the browser tests skip (ops/test installs chromium)
    names = list(scenarios)
    SCENARIOS.update(CLI_SCENARIOS)  # as `dsctl bench` does
    try:
        out = io.StringIO()
        rc = await run_bench(names, quick=True, output="json", out=out, plot=str(tmp_path / "charts"))
    finally:
        for name in CLI_SCENARIOS:
            SCENARIOS.pop(name, None)
    report = json.loads(out.getvalue())
    assert rc == 0, report
    assert report["quick"] is True
    rows = report["rows"]
    assert {r["scenario"] for r in rows} == set(scenarios)
    for row in rows:
        assert row["value"] is not None, row
        assert row["baseline"] is not None, row
        # a lag of 0 events in the soak's first interval is a baseline with no ratio; any other is > 0
        assert row["baseline"] > 0 or row["unit"] == "events", row
        assert row["ratio"] is not None or row["baseline"] == 0, row
    # every scenario has at least one row with a target and a verdict
    for name in scenarios:
        assert any(r["target"] and r["met"] is not None for r in rows if r["scenario"] == name), name
    soak = next(r for r in rows if r["scenario"] == "soak" and "series" in r)
    samples = soak["series"]["samples"]
    assert len(samples) >= 3 and all(s["engine_rss_mb"] > 0 for s in samples)
    assert sum(s["decisions_matched"] for s in samples) > 0
    # a chart for every kind of series the rows carry; the soak's always
    charts = sorted(p.name for p in (tmp_path / "charts").glob("*.png"))
    assert {"soak.png", "soak-latency.png"} <= set(charts), charts
    kinds = {r["series"]["kind"] for r in rows if "series" in r}
    assert {f"{k}.png" for k in kinds} <= set(charts), (kinds, charts)
    for name in charts:
        _drawn(tmp_path / "charts" / name)
    # the same charts again from the saved JSON, as for an hour's soak
    saved = tmp_path / "report.json"
    saved.write_text(out.getvalue())
    assert bench_main(["--plot", str(tmp_path / "again"), "--from-json", str(saved)]) == 0
    assert sorted(p.name for p in (tmp_path / "again").glob("*.png")) == charts
    # and from a soak's stderr, as a run stopped before its report leaves it
    log = tmp_path / "soak.err"
    log.write_text("bench: soak ...\n" + "".join(f"soak: {json.dumps(s)}\n" for s in samples))
    assert bench_main(["--plot", str(tmp_path / "log"), "--from-json", str(log)]) == 0
    assert {"soak.png", "soak-latency.png"} == {p.name for p in (tmp_path / "log").glob("*.png")}


async def test_unknown_scenario_is_refused() -> None:
    assert await run_bench(["nope"], quick=True, output="table", out=io.StringIO()) == 2


@pytest.mark.parametrize(
    ("names", "minutes", "plot", "says"),
    [
        (["soak"], 0.0, None, "--minutes 0: the soak's length must be a positive number"),
        (["soak"], -3.0, None, "--minutes -3: the soak's length must be a positive number"),
        (["soak"], float("nan"), None, "must be a positive number"),
        (["fold"], 5.0, None, "--minutes only applies to the soak"),
        (["fold"], None, "", "--plot: give a directory"),
        (["fold"], None, "/nonexistent-dir/charts", "its parent directory /nonexistent-dir does not exist"),
    ],
)
async def test_bad_minutes_and_plot_are_refused_before_anything_runs(
    names: list[str], minutes: float | None, plot: str | None, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert check_options(names, minutes, plot)
    out = io.StringIO()
    assert await run_bench(names, quick=True, output="table", out=out, minutes=minutes, plot=plot) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1, err
    assert out.getvalue() == ""


async def test_plot_into_a_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "charts"
    file.write_text("not a directory")
    assert await run_bench(["fold"], quick=True, output="table", out=io.StringIO(), plot=str(file)) == 2
    assert f"--plot {file}: exists and is not a directory" in capsys.readouterr().err
    assert file.read_text() == "not a directory"


def test_from_json_refuses_what_is_not_a_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"rows": ')
    assert bench_main(["--plot", str(tmp_path / "c"), "--from-json", str(bad)]) == 2
    assert f"--from-json {bad}: not a `dsctl bench -o json` report" in capsys.readouterr().err
    empty = tmp_path / "empty.json"
    empty.write_text('{"rows": [{"scenario": "fold", "value": 1}]}')
    assert bench_main(["--plot", str(tmp_path / "c"), "--from-json", str(empty)]) == 1
    assert "nothing to chart" in capsys.readouterr().err


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
