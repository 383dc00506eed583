"""The Grafana dashboard (``ops/grafana/dsctl-dashboard.json``) is built on metrics a running engine
exposes: every metric name in every PromQL expression of it (panels and template variables) is a
sample name scraped from a real engine's ``/metrics``, on a real nats-server with a DaemonSet applied
(so the per-DaemonSet series exist). The name extractor is tested on its own first, including on a
misspelt name, so a check that could not fail would show."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from engine.runtime.metrics import serve
from engine.store.embedded import free_port
from tests.e2e.harness import Cluster, nodes_yaml
from tests.shell.test_metrics import _scrape, parse, promtool_exe

DASHBOARD = Path(__file__).resolve().parents[2] / "ops" / "grafana" / "dsctl-dashboard.json"

#: PromQL words that are not metric names when they stand without a following "("
KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"})
STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
WORD = re.compile(r"(?<![\w.$])[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_VALUES = re.compile(r"^\s*label_values\((?:(?P<expr>.+),)?\s*[a-zA-Z_]\w*\s*\)\s*$")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, aggregations, label names, grouping
    labels, ranges, strings and Grafana variables are not)."""
    text = STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range and subquery windows
    text = GROUPING.sub(" ", text)
    text = re.sub(r"\$\{[^}]*\}|\$\w+", " ", text)
    names = set()
    for m in WORD.finditer(text):
        if text[m.end() :].lstrip().startswith("(") or m.group(0) in KEYWORDS:
            continue
        names.add(m.group(0))
    return names


def expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable (``label_values(expr, l)``)."""
    found: list[tuple[str, str]] = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            found.append((f"panel {panel['title']!r} {target['refId']}", target["expr"]))
    for var in dashboard["templating"]["list"]:
        if var["type"] != "query":
            continue
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        m = LABEL_VALUES.match(query)
        assert m is not None, f"variable {var['name']}: not a label_values query: {query}"
        if m.group("expr"):
            found.append((f"variable {var['name']}", m.group("expr")))
    return found


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("dsctl_is_leader", {"dsctl_is_leader"}),
        (
            'histogram_quantile(0.99, sum by (le, lane) (rate(dsctl_reconcile_seconds_bucket{instance=~"$i"}'
            "[$__rate_interval])))",
            {"dsctl_reconcile_seconds_bucket"},
        ),
        ("time() - process_start_time_seconds", {"process_start_time_seconds"}),
        ('a_total / on (instance) group_left(job) b{x="by (y)"} offset 5m', {"a_total", "b"}),
        ("sum without (lane) (rate(x[1h:5m])) > bool 0 unless y", {"x", "y"}),
        ("clamp_min(dsctl_daemonset_status_desired_number_scheduled{namespace=~\"$ns\"}, 1)",
         {"dsctl_daemonset_status_desired_number_scheduled"}),
        ("${datasource_var} + 1e3", set()),
    ],
)  # fmt: skip
def test_metric_names_are_found_and_nothing_else(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_the_dashboard_is_one_grafana_dashboard_on_the_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in dashboard["panels"]:
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), panel["title"]
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
    names = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "instance", "namespace", "daemonset"} <= names


DS = """
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent, namespace: default}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec: {containers: [{name: c, image: example/agent:1}]}
"""


@pytest.mark.integration
async def test_every_dashboard_expression_uses_only_what_an_engine_exposes(nc: Any, streams: Any) -> None:
    # the engine alone: the per-DaemonSet series need a DaemonSet and its status, not its pods
    cluster = await Cluster(nc).start(executor=False)
    assert cluster.engine is not None
    server = None
    try:
        await cluster.apply(nodes_yaml("node-a", "node-b"))
        await cluster.apply(DS)
        await cluster.wait(
            "agent's status computed",
            lambda s: (
                (ds := s.daemonsets.get("default/agent")) is not None
                and ds.status.desired_number_scheduled == 2
            ),
        )
        port = free_port()
        server = await serve(cluster.engine.metrics, "127.0.0.1", port)
        text = await _scrape(port)
    finally:
        if server is not None:
            server.close()
        await cluster.stop()
    families, problems = parse(text)
    assert problems == []
    exposed = {sample for fam in families.values() for sample, _, _ in fam.samples}

    dashboard = json.loads(DASHBOARD.read_text())
    used: dict[str, set[str]] = {}
    for where, expr in expressions(dashboard):
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr}"
        for name in names:
            used.setdefault(name, set()).add(where)
    unknown = {name: sorted(where) for name, where in used.items() if name not in exposed}
    assert unknown == {}, f"the dashboard uses metrics the engine does not expose: {unknown}"
    # the same comparison does see a name the engine does not have
    assert "dsctl_reconcile_secondz_bucket" not in exposed

    # what the dashboard is for (issue 14): each of these is charted
    for name in (
        *(f"dsctl_daemonset_status_{f}" for f in ("desired_number_scheduled", "number_ready",
                                                  "number_available", "number_unavailable",
                                                  "updated_number_scheduled", "number_misscheduled",
                                                  "observed_generation")),
        "dsctl_daemonset_metadata_generation",
        "dsctl_reconcile_seconds_bucket", "dsctl_append_seconds_bucket", "dsctl_relay_seconds_bucket",
        "dsctl_decisions_total", "dsctl_tamper_records_total", "dsctl_log_integrity_failed",
        "dsctl_projection_lag", "dsctl_is_leader",
        "process_resident_memory_bytes", "process_cpu_seconds_total",
    ):  # fmt: skip
        assert name in used, f"the dashboard does not chart {name}"
    quantiles = [e for _, e in expressions(dashboard) if e.startswith("histogram_quantile(")]
    for histogram in ("dsctl_reconcile_seconds", "dsctl_append_seconds"):
        assert any(f"{histogram}_bucket" in e for e in quantiles), histogram


def test_every_dashboard_expression_is_promql_promtool_parses(tmp_path: Path) -> None:
    """Each expression, Grafana's range variable given a value, as a recording rule: ``promtool check
    rules`` parses every one (a typo in PromQL would only show in Grafana otherwise)."""
    exe = promtool_exe()
    if exe is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus); ops/test installs it")
    found = expressions(json.loads(DASHBOARD.read_text()))
    rules = [
        {"record": f"dsctl:dashboard:{i}", "expr": expr.replace("$__rate_interval", "5m")}
        for i, (_, expr) in enumerate(found)
    ]
    path = tmp_path / "rules.json"  # YAML is a superset of JSON
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    r = subprocess.run([exe, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(rules)} rules found" in r.stdout
    # and promtool does refuse a broken one
    path.write_text(
        json.dumps({"groups": [{"name": "x", "rules": [{"record": "a:b", "expr": "rate(x[5m]"}]}]})
    )
    assert subprocess.run([exe, "check", "rules", str(path)], capture_output=True, timeout=60).returncode != 0
