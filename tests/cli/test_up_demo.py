"""``dsctl up --demo`` applies the demo once per store (engine/cli/demo.py): on a fresh store every
seed lands and converges; after the user changes the demo's nodes and DaemonSets, a restarted
``up --demo`` on the same store keeps those changes (a real process stopped and started again)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.cli.test_cli import Up, converged, dsctl, ok, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DEMO_SETS = (
    ("myweb-ds", "default"),
    ("myweb-ds", "labels-demo"),
    ("fluentd", "default"),
    ("fluentd-elasticsearch", "kube-system"),
)


def _nodes(up: Up) -> dict[str, Any]:
    r = dsctl(up, "get", "nodes", "-o", "json")
    return {n["metadata"]["name"]: n for n in json.loads(r.stdout)["items"]} if r.returncode == 0 else {}


def _printed(tmp: Path) -> str:
    return (tmp / "up.out").read_text(errors="replace")


def test_a_restarted_demo_keeps_what_the_user_changed(tmp_path: Path) -> None:
    first = Up(tmp_path)
    try:
        # a fresh store: every seed applied and converged
        wait_for("the demo to converge", lambda: all(converged(first, n, ns) for n, ns in DEMO_SETS), 90)
        assert "000-nodes.yaml: node/node1 created" in _printed(tmp_path)
        assert "applied to this store before" not in _printed(tmp_path)
        # the user's changes to the demo's objects
        ok(first, "taint", "nodes", "node1", "node-role.kubernetes.io/master:NoSchedule-")
        ok(first, "label", "nodes", "node1", "team=mine")
        ok(first, "cordon", "node2")
        ok(first, "delete", "node", "node3")
        ok(first, "delete", "ds", "fluentd")
        wait_for("node3 gone", lambda: "node3" not in _nodes(first))
    finally:
        first.stop()

    again = Up(tmp_path)  # the same store and credentials, a new port
    try:
        wait_for("the demo kept", lambda: "applied to this store before" in _printed(tmp_path), 90)
        out = _printed(tmp_path)
        assert "created" not in out and "configured" not in out, out
        nodes = _nodes(again)
        assert sorted(nodes) == ["node1", "node2"]
        assert nodes["node1"]["metadata"]["labels"]["team"] == "mine"
        assert not nodes["node1"]["spec"].get("taints")
        assert nodes["node2"]["spec"].get("unschedulable") is True
        r = dsctl(again, "get", "ds", "fluentd", "-o", "json")
        assert r.returncode != 0 and "not found" in r.stderr, r.stdout
        # what the user left alone still runs, now on the untainted node1 too
        wait_for("myweb-ds on node1", lambda: converged(again, "myweb-ds") and _on(again, "node1"), 60)
    finally:
        again.stop()


def _on(up: Up, node: str) -> bool:
    r = dsctl(up, "get", "pods", "-o", "json")
    items = json.loads(r.stdout)["items"] if r.returncode == 0 else []
    return any(
        p["spec"]["nodeName"] == node and p["metadata"]["name"].startswith("myweb-ds-")
        for p in items
        if p["status"]["phase"] == "Running"
    )
