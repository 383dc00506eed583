"""The rollout-control verbs as a user runs them (docs/rollout-control.md): each through the real CLI
against `dsctl up --demo`, checking what the log and the fleet then show."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.test_cli import ROOT, Up, converged, ds_json, dsctl, ok, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FLUENTD = (ROOT / "ops" / "demo" / "004-fluentd.yaml").read_text()


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    server = Up(tmp_path_factory.mktemp("rollout-up"))
    try:
        wait_for("fluentd to converge", lambda: converged(server, "fluentd"), timeout=60)
        yield server
    finally:
        server.stop()


def _rolling(up: Up) -> dict[str, object]:
    spec = ds_json(up, "fluentd")["spec"]
    return dict(spec["updateStrategy"].get("rollingUpdate") or {})


def test_diff_and_server_dry_run_preview_without_appending(up: Up, tmp_path: Path) -> None:
    changed = tmp_path / "fluentd.yaml"
    changed.write_text(FLUENTD.replace("fluent/fluentd:v0.14.10", "fluent/fluentd:v0.14.11"))
    before = ds_json(up, "fluentd")["metadata"]["generation"]
    same = dsctl(up, "diff", "-f", str(ROOT / "ops" / "demo" / "004-fluentd.yaml"))
    assert same.returncode == 0, same.stdout + same.stderr
    diff = dsctl(up, "diff", "-f", str(changed))
    assert diff.returncode == 1, diff.stdout + diff.stderr
    assert "replace" in diff.stdout
    preview = json.loads(ok(up, "apply", "--dry-run=server", "-f", str(changed), "-o", "json"))
    assert preview, preview
    assert ds_json(up, "fluentd")["metadata"]["generation"] == before  # nothing appended
    bad = dsctl(up, "diff", "-f", str(tmp_path / "missing.yaml"))
    assert bad.returncode == 2


def test_pause_resume_and_partition_are_recorded_on_the_daemonset(up: Up) -> None:
    ok(up, "rollout", "pause", "ds/fluentd")
    assert _rolling(up).get("paused") is True
    ok(up, "rollout", "resume", "ds/fluentd")
    assert not _rolling(up).get("paused")
    ok(up, "rollout", "partition", "ds/fluentd", "1")
    assert _rolling(up).get("partition") == 1
    refused = dsctl(up, "rollout", "partition", "ds/fluentd")
    assert refused.returncode != 0 and "partition" in refused.stderr


def test_endpoints_list_the_ready_pods_nodes(up: Up) -> None:
    out = ok(up, "get", "endpoints", "ds/fluentd")
    assert "node2" in out and "node3" in out
