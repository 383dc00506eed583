"""The command line as a user drives it: a real ``dsctl up --demo`` in the background, and every
command run as its own process against it, checking what it prints and its exit code. ``up`` is secure
by default: its credentials are next to its store, and each command finds them through
``DSCTL_CREDENTIALS`` (what ``up`` prints for a store outside ``.dsctl``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.store.embedded import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


class Up:
    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.metrics_port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.credentials = tmp / "credentials"
        self.log = (tmp / "up.out").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "up", "--demo", "--port", str(self.port),
             "--store", str(tmp / "nats"), "--ready-after", "0.05", "--lease-ttl", "2",
             "--metrics-port", str(self.metrics_port), "--log-file", str(tmp / "dsctl.log")],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def dsctl(
    up: Up, *args: str, stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, NATS_URL=up.url, DSCTL_CREDENTIALS=str(up.credentials))
    env.pop("DSCTL_LOG_LEVEL", None)
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        cwd=ROOT, env=env, input=stdin, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def ok(up: Up, *args: str, stdin: str | None = None) -> str:
    r = dsctl(up, *args, stdin=stdin)
    assert r.returncode == 0, f"dsctl {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return r.stdout


def fails(up: Up, *args: str, stdin: str | None = None) -> str:
    r = dsctl(up, *args, stdin=stdin)
    assert r.returncode != 0, f"dsctl {' '.join(args)} should have failed:\n{r.stdout}"
    assert r.stderr.startswith("error: ") or "error: " in r.stderr, r.stderr
    return r.stderr


def wait_for(what: str, check: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def ds_json(up: Up, name: str, ns: str = "default") -> dict[str, Any]:
    r = dsctl(up, "get", "ds", name, "-n", ns, "-o", "json")
    return json.loads(r.stdout) if r.returncode == 0 else {}


def converged(up: Up, name: str, ns: str = "default") -> bool:
    obj = ds_json(up, name, ns)
    st = obj.get("status") or {}
    desired = st.get("desiredNumberScheduled", -1)
    return bool(
        obj
        and st.get("observedGeneration") == obj["metadata"]["generation"]
        # omitted at 0, as the API server omits them (docs/output.md)
        and st.get("updatedNumberScheduled", 0) == desired
        and st.get("numberAvailable", 0) == desired
    )


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    tmp = tmp_path_factory.mktemp("up")
    server = Up(tmp)
    try:
        wait_for("the demo to converge", lambda: all(
            converged(server, n, ns) for n, ns in
            (("myweb-ds", "default"), ("fluentd", "default"), ("fluentd-elasticsearch", "kube-system"))
        ), timeout=60)  # fmt: skip
        yield server
    finally:
        server.stop()


AGENT = """
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
  labels: {{team: platform}}
  annotations:
    kubernetes.io/change-cause: "{cause}"
spec:
  selector:
    matchLabels: {{app: agent}}
  template:
    metadata:
      labels: {{app: agent}}
      annotations:
        sim.dsctl.io/never-ready: "{never}"
    spec:
      containers:
      - name: agent
        image: example/agent:{version}
"""


def agent(version: str, *, never: bool = False, cause: str = "") -> str:
    return AGENT.format(version=version, never=str(never).lower(), cause=cause or f"deploy {version}")


def test_get_ds_prints_the_kubectl_columns(up: Up) -> None:
    out = ok(up, "get", "ds")
    header = out.splitlines()[0].split()
    assert header == [
        "NAME",
        "DESIRED",
        "CURRENT",
        "READY",
        "UP-TO-DATE",
        "AVAILABLE",
        "NODE",
        "SELECTOR",
        "AGE",
    ]
    row = next(line.split() for line in out.splitlines() if line.startswith("myweb-ds "))
    assert row[1:6] == ["2", "2", "2", "2", "2"]
    assert "NAMESPACE" in ok(up, "get", "ds", "-A").splitlines()[0]


def test_get_json_is_kubernetes_shaped(up: Up) -> None:
    listing = json.loads(ok(up, "get", "ds", "-A", "-o", "json"))
    assert listing["apiVersion"] == "v1" and listing["kind"] == "List"
    ds = next(i for i in listing["items"] if i["metadata"]["name"] == "fluentd-elasticsearch")
    assert ds["metadata"]["generation"] == 1
    assert set(ds["status"]) >= {
        "desiredNumberScheduled", "currentNumberScheduled", "numberMisscheduled", "numberReady",
        "numberAvailable", "updatedNumberScheduled", "observedGeneration",
    }  # fmt: skip
    assert "numberUnavailable" not in ds["status"]  # 0, so omitted as the API server omits it
    pods = json.loads(ok(up, "get", "pods", "-n", "kube-system", "-o", "json"))["items"]
    assert len(pods) == 3
    pod = pods[0]
    assert pod["metadata"]["labels"]["name"] == "fluentd-elasticsearch"
    assert "controller-revision-hash" in pod["metadata"]["labels"]
    owner = pod["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["controller"], owner["name"]) == ("DaemonSet", True, "fluentd-elasticsearch")
    assert pod["spec"]["nodeName"] in {"node1", "node2", "node3"}
    assert any(t["key"] == "node.kubernetes.io/not-ready" for t in pod["spec"]["tolerations"])
    term = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["nodeSelectorTerms"][0]["matchFields"][0]["values"] == [pod["spec"]["nodeName"]]
    assert pod["status"]["phase"] == "Running"
    ready = next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"


def test_get_pods_wide_names_selectors_and_nodes(up: Up) -> None:
    wide = ok(up, "get", "pods", "-o", "wide", "-n", "kube-system")
    assert "NODE" in wide.splitlines()[0]
    assert {line.split()[6] for line in wide.splitlines()[1:]} == {"node1", "node2", "node3"}
    names = ok(up, "get", "pods", "-A", "-l", "app=myweb", "-o", "name").split()
    assert len(names) == 4 and all(n.startswith("pod/myweb-ds-") for n in names)
    assert ok(up, "get", "nodes", "-l", "node-role.kubernetes.io/master").split()[5] == "node1"
    yaml_out = ok(up, "get", "node", "node1", "-o", "yaml")
    assert "kind: Node" in yaml_out and "node-role.kubernetes.io/master" in yaml_out


def test_apply_reports_created_configured_unchanged_and_refuses_invalid_input(up: Up, tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(agent("1"))
    assert ok(up, "apply", "-f", str(path)).strip() == "daemonset.apps/agent created"
    assert ok(up, "apply", "-f", str(path)).strip() == "daemonset.apps/agent unchanged"
    assert ok(up, "apply", "-f", "-", stdin=agent("2")).strip() == "daemonset.apps/agent configured"
    wait_for("agent v2", lambda: converged(up, "agent"))

    before = ok(up, "audit", "-o", "jsonl").count("\n")
    bad = agent("3").replace("matchLabels: {app: agent}", "matchLabels: {app: other}", 1)
    err = fails(up, "apply", "-f", "-", stdin=bad + "---\n" + agent("4"))
    assert "spec.template.metadata.labels" in err or "spec.selector" in err
    err = fails(up, "apply", "-f", "-", stdin=agent("3").replace("RollingUpdate", "X").replace(
        "  template:", "  updateStrategy: {type: Sideways}\n  template:"))  # fmt: skip
    assert "spec.updateStrategy.type" in err
    assert ok(up, "audit", "-o", "jsonl").count("\n") == before, "a refused apply must append nothing"
    assert "does not exist" in fails(up, "apply", "-f", str(tmp_path / "missing.yaml"))
    # an object dsctl does not manage is skipped (issue 14), or refused under --strict
    service = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n"
    assert ok(up, "apply", "-f", "-", stdin=service).strip() == "service/web skipped: not managed by dsctl"
    err = fails(up, "apply", "--strict", "-f", "-", stdin=service)
    assert "service/web is not managed by dsctl" in err and "nothing was applied" in err


def test_label_conflict_needs_overwrite_and_unknown_nodes_are_named(up: Up) -> None:
    assert ok(up, "label", "nodes", "node2", "zone=a").strip() == "node/node2 labeled"
    err = fails(up, "label", "nodes", "node2", "zone=b")
    assert "already has a value (a)" in err and "--overwrite" in err
    assert ok(up, "label", "nodes", "node2", "zone=b", "--overwrite").strip() == "node/node2 labeled"
    assert ok(up, "label", "nodes", "node2", "zone-").strip() == "node/node2 labeled"
    assert 'nodes "ghost" not found' in fails(up, "label", "nodes", "ghost", "a=b")
    assert "at least one label update is required" in fails(up, "label", "nodes", "node2", "nonsense")
    assert "invalid label spec" in fails(up, "label", "nodes", "node2", "=nokey")


def test_taint_cordon_and_uncordon(up: Up) -> None:
    assert ok(up, "cordon", "node3").strip() == "node/node3 cordoned"
    assert "SchedulingDisabled" in ok(up, "get", "nodes", "node3")
    assert ok(up, "cordon", "node3").strip() == "node/node3 already cordoned"
    assert ok(up, "uncordon", "node3").strip() == "node/node3 uncordoned"
    assert ok(up, "taint", "nodes", "node3", "maint=yes:NoSchedule").strip() == "node/node3 tainted"
    assert "maint=yes:NoSchedule" in ok(up, "get", "nodes", "node3", "-o", "wide")
    assert ok(up, "taint", "nodes", "node3", "maint:NoSchedule-").strip() == "node/node3 untainted"
    assert "invalid taint" in fails(up, "taint", "nodes", "node3", "maint=yes:Sometimes")


def test_describe_shows_counts_template_and_events(up: Up) -> None:
    out = ok(up, "describe", "ds", "fluentd-elasticsearch", "-n", "kube-system")
    assert "Desired Number of Nodes Scheduled: 3" in out
    assert "Image:      quay.io/fluentd_elasticsearch/fluentd:v2.5.2" in out
    assert "SuccessfulCreate" in out and "Created pod: fluentd-elasticsearch-" in out
    node = ok(up, "describe", "node", "node1")
    assert "node-role.kubernetes.io/master:NoSchedule" in node and "Events:" in node
    pod = ok(up, "get", "pods", "-n", "kube-system", "-o", "name").split()[0].split("/")[1]
    described = ok(up, "describe", "pod", pod, "-n", "kube-system")
    assert "Controlled By:    DaemonSet/fluentd-elasticsearch" in described and "Scheduled" in described
    assert 'pods "nope" not found' in fails(up, "describe", "pod", "nope")


def test_rollout_status_history_undo_restart_and_timeout(up: Up, tmp_path: Path) -> None:
    ok(up, "apply", "-f", "-", stdin=agent("10", cause="ten"))
    assert "successfully rolled out" in ok(up, "rollout", "status", "ds/agent", "--timeout", "30s")
    ok(up, "apply", "-f", "-", stdin=agent("11", never=True, cause="eleven"))
    err = dsctl(up, "rollout", "status", "ds/agent", "--timeout", "2s")
    assert err.returncode != 0 and "timed out waiting for the condition" in err.stderr
    assert "Waiting for daemon set" in err.stdout
    history = ok(up, "rollout", "history", "daemonset/agent")
    assert "REVISION" in history and "eleven" in history and "ten" in history
    assert ok(up, "rollout", "undo", "ds/agent").strip() == "daemonset.apps/agent rolled back"
    assert "successfully rolled out" in ok(up, "rollout", "status", "ds/agent", "--timeout", "30s")
    assert ok(up, "rollout", "restart", "ds/agent").strip() == "daemonset.apps/agent restarted"
    assert "successfully rolled out" in ok(up, "rollout", "status", "ds/agent", "--timeout", "30s")
    revision = ok(up, "rollout", "history", "ds/agent", "--revision", "1")
    assert "example/agent:" in revision
    assert "rollout works on daemonsets only" in fails(up, "rollout", "status", "pod/x")


def test_delete_pod_is_replaced_and_orphan_cascade_keeps_pods(up: Up) -> None:
    pods = ok(up, "get", "pods", "-l", "app=fluentd", "-o", "name").split()
    victim = pods[0].split("/")[1]
    assert ok(up, "delete", "pod", victim).strip() == f'pod "{victim}" deleted'
    wait_for("a replacement", lambda: (
        victim not in ok(up, "get", "pods", "-l", "app=fluentd")
        and len(ok(up, "get", "pods", "-l", "app=fluentd", "-o", "name").split()) == len(pods)
    ))  # fmt: skip
    ok(up, "apply", "-n", "orphans", "-f", str(ROOT / "ops/demo/004-fluentd.yaml"))
    wait_for("fluentd in orphans", lambda: converged(up, "fluentd", "orphans"))
    out = ok(up, "delete", "ds", "fluentd", "-n", "orphans", "--cascade=orphan")
    assert out.strip() == 'daemonset.apps "fluentd" deleted'
    time.sleep(0.5)
    left = json.loads(ok(up, "get", "pods", "-n", "orphans", "-o", "json"))["items"]
    assert len(left) == 2 and all("ownerReferences" not in p["metadata"] for p in left)
    assert "invalid cascade value" in fails(up, "delete", "ds", "agent", "--cascade=sometimes")
    assert 'daemonsets.apps "ghost" not found' in fails(up, "delete", "ds", "ghost")


def test_get_at_shows_the_past(up: Up) -> None:
    first = json.loads(ok(up, "audit", "--type", "daemonset.applied", "-o", "json", "--limit", "1"))[0]
    past = ok(up, "get", "ds", "-A", "--at", str(first["seq"]))
    assert len(past.splitlines()) == 2, past  # the header and the one DaemonSet applied by then
    assert "is neither a stream sequence, a duration" in fails(up, "get", "ds", "--at", "yesterday")


def test_explain_pod_and_node(up: Up) -> None:
    pod = ok(up, "get", "pods", "-n", "kube-system", "-o", "name").split()[0].split("/")[1]
    out = ok(up, "explain", "pod", pod, "-n", "kube-system")
    assert "Inputs in effect" in out and "Decision" in out and "Command" in out and "pod.ready" in out
    why_not = ok(up, "explain", "node", "node1", "--ds", "default/myweb-ds")
    assert "FAIL  taints" in why_not and "node-role.kubernetes.io/master:NoSchedule not tolerated" in why_not
    why = ok(up, "explain", "node", "node2", "--ds", "kube-system/fluentd-elasticsearch")
    assert "shouldRun=true" in why
    assert "needs --ds" in fails(up, "explain", "node", "node2")


def test_audit_filters_on_the_server_and_prints_json_lines(up: Up) -> None:
    lines = [json.loads(x) for x in ok(up, "audit", "--node", "node2", "-o", "jsonl").splitlines()]
    # node2's own events, and the decisions that name it (their per-node reasons or commands)
    assert lines and all(".node2." in r["subject"] or r["type"] == "decision.recorded" for r in lines)
    assert any(".node2." in r["subject"] for r in lines)
    assert [r["seq"] for r in lines] == sorted(r["seq"] for r in lines)
    ready = [
        json.loads(x)
        for x in ok(up, "audit", "--node", "node2", "--type", "pod.ready", "-o", "jsonl").splitlines()
    ]
    assert ready and all(r["type"] == "pod.ready" for r in ready)
    assert len(ok(up, "audit", "--limit", "3", "-o", "jsonl").splitlines()) == 3
    assert "SEQ" in ok(up, "audit", "--ds", "default/myweb-ds", "--limit", "5")
    assert ok(up, "audit", "--since", "1h", "--limit", "1", "-o", "jsonl").strip()
    assert "unknown event type" in fails(up, "audit", "--type", "node.exploded")
    assert "--since: 'garbage' is neither a duration" in fails(up, "audit", "--since", "garbage")
    assert "--until: 'later' is neither a stream sequence" in fails(up, "audit", "--until", "later")


def test_replay_verify_passes_on_the_real_log(up: Up) -> None:
    out = ok(up, "replay", "verify")
    assert "all match" in out


def test_bad_usage_and_unknown_things_fail_clearly(up: Up) -> None:
    r = dsctl(up, "get", "widgets")
    assert r.returncode == 1 and 'doesn\'t have a resource type "widgets"' in r.stderr
    r = dsctl(up, "get", "ds", "--output", "xml")
    assert r.returncode == 2 and "'xml' is not an output format" in r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "engine.cli", "--nats", "nats://127.0.0.1:1", "get", "ds"],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert r.returncode == 1 and "cannot connect to NATS at nats://127.0.0.1:1" in r.stderr


def test_metrics_are_served(up: Up) -> None:
    body = urllib.request.urlopen(f"http://127.0.0.1:{up.metrics_port}/metrics", timeout=5).read().decode()
    rows = [line.split() for line in body.splitlines() if line and not line.startswith("#")]
    values = {name: float(value) for name, value in rows}
    assert values["dsctl_is_leader"] == 1
    assert values["dsctl_reconciles_total"] > 0 and values["dsctl_decisions_total"] > 0
    assert values["dsctl_appends_total"] > 0 and values["dsctl_append_seconds_sum"] > 0
    assert values["dsctl_events_folded_total"] > 0
    assert {"dsctl_commands_in_flight", "dsctl_projection_lag"} <= set(values)


def test_schema_prints_the_contract(up: Up) -> None:
    schemas = json.loads(ok(up, "schema"))
    assert "node.registered" in schemas["events"]
    asyncapi = json.loads(ok(up, "schema", "-o", "asyncapi"))
    assert asyncapi["asyncapi"] == "3.0.0" and asyncapi["channels"]


def test_events_publish_goes_through_the_ingest_service(up: Up, tmp_path: Path) -> None:
    lines = tmp_path / "events.jsonl"
    good = {"type": "node.registered", "data": {"name": "node9", "labels": {"from": "ingest"}}}
    bad = {"type": "node.registered", "data": {"name": "node10", "labels": {"bad": 1}}}
    lines.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    r = dsctl(up, "events", "publish", "-f", str(lines))
    assert r.returncode == 1, r.stdout + r.stderr  # the second line is refused
    assert "$.data.labels" in r.stdout + r.stderr
    wait_for("node9 registered", lambda: "node9" in ok(up, "get", "nodes"))
    assert "node10" not in ok(up, "get", "nodes")


def test_get_watch_prints_changes_only(up: Up) -> None:
    env = dict(os.environ, NATS_URL=up.url, DSCTL_CREDENTIALS=str(up.credentials))
    watcher = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "get", "pods", "-n", "kube-system", "-w"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(1.5)
        victim = ok(up, "get", "pods", "-n", "kube-system", "-o", "name").split()[0].split("/")[1]
        ok(up, "delete", "pod", victim, "-n", "kube-system")
        time.sleep(2.0)
    finally:
        watcher.terminate()
        out, _ = watcher.communicate(timeout=10)
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["NAME", "READY", "STATUS"]
    assert any(line.startswith(victim) and "Terminating" in line for line in lines[4:]), (victim, out)
    replacement = [line for line in lines[4:] if not line.startswith(victim)]
    assert replacement and all(line.startswith("fluentd-elasticsearch-") for line in replacement)
    assert len(lines) < 12, "unchanged pods must not be printed again"
