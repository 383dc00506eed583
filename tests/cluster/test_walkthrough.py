"""README's promise for ``ops/cluster``: "``ops/cluster up``, then README's walk-through against it, gives
the same results as on one box".

The walk-through (the ``sh`` block under "A walk through it", in order) is run against a single box
(``dsctl up --demo``, what ``ops/up`` execs) and then against the real ``ops/cluster up --demo`` (three
servers with R3 streams, two engines, a simulated fleet executor, ingest), each command as its own
process with ``--nats URL``; ``tests/cluster/walkthrough.py`` says how the placeholders are made real,
how the walk waits between steps and how outcomes are normalised. Every step's outcome (exit code,
objects, pod placement per node, rollout history, explain verdicts, describe counts and events, the
audit of node2, replay verify), and the converged state after every change, must be the same on both.

Differences that are legitimate, and so normalised away or compared differently (each said again
where it is done): sequence numbers, timestamps, ages, ids and random pod-name suffixes; the engine's
identity; the hash of the template ``rollout restart`` stamps with the time (``restartedAt``, as
kubectl); the demo's event source (``dsctl-demo`` in-process on one box, ``dsctl`` through ``dsctl apply``
on the cluster); how many decisions the engine recorded; the order in which reports of *different* pods
interleave in the log; the "Waiting for ..." lines of ``rollout status``; and what ``--at 20`` shows,
sequence 20 being a different moment of the demo on each (the state at the sequence of each of the
walk's own changes is compared instead).

The two walks run side by side, each deployment torn down before the comparison: ``down``, then
SIGKILL for anything left, as ``test_ops_cluster.py`` does. About 40 s on two quiet cores.
"""

from __future__ import annotations

import difflib
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.walkthrough import WALK, ops_cluster, readme_walkthrough, single_box, step_ids, walk

BOX = "one box"
CLUSTER = "ops/cluster"

#: steps whose outcome differs on the cluster for a known product bug: step -> reason (xfail, strict)
KNOWN_DIFFERENCES: dict[str, str] = {}


def test_the_walk_is_readmes() -> None:
    """The commands run here are README's walk-through, in its order: a change to either shows here."""
    assert readme_walkthrough() == list(WALK)


def _walk_box(tmp: Path) -> dict[str, Any]:
    with single_box(tmp) as box:
        return walk(box)


def _walk_cluster(tmp: Path) -> dict[str, Any]:
    with ops_cluster(tmp) as cluster:
        return walk(cluster)


@pytest.fixture(scope="module")
def walked(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Both walks at once (each is mostly waiting on its own commands and its own deployment; they
    share nothing but the machine), each deployment torn down by its own thread, whatever happens."""
    tmp: Path = tmp_path_factory.mktemp("walkthrough")
    with ThreadPoolExecutor(2, thread_name_prefix="walk") as pool:
        one = pool.submit(_walk_box, tmp / "box")
        three = pool.submit(_walk_cluster, tmp / "cluster")
        return {BOX: one.result(), CLUSTER: three.result()}


def _step(step: str) -> Any:
    reason = KNOWN_DIFFERENCES.get(step)
    marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
    return pytest.param(step, id=step, marks=marks)


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("step", [_step(s) for s in step_ids()])
def test_the_cluster_gives_the_same_result_as_one_box(walked: dict[str, dict[str, Any]], step: str) -> None:
    box, cluster = walked[BOX][step], walked[CLUSTER][step]
    assert cluster == box, _diff(box, cluster)


def _diff(box: Any, cluster: Any) -> str:
    """The two outcomes as a unified diff of their JSON (pytest's own comparison truncates nested ones)."""
    a, b = (json.dumps(v, indent=1, sort_keys=True, ensure_ascii=False).splitlines() for v in (box, cluster))
    return "\n" + "\n".join(difflib.unified_diff(a, b, BOX, CLUSTER, lineterm="", n=2))


def _rows(outcome: dict[str, Any]) -> list[list[str]]:
    rows: list[list[str]] = outcome["stdout"][1:]
    return rows


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("deployment", [BOX, CLUSTER])
def test_the_walk_gives_readmes_results(walked: dict[str, dict[str, Any]], deployment: str) -> None:
    """Not only the same on both: what README says each command does (so "the same" is not "the same
    wrong")."""
    r = walked[deployment]
    failed = {step: out for step, out in r.items() if isinstance(out, dict) and out.get("rc", 0) != 0}
    assert not failed, failed
    unsettled = [step for step, out in r.items() if isinstance(out, dict) and "NOT SETTLED" in out]
    assert not unsettled, {step: r[step] for step in unsettled}

    assert ["default", "fluentd", "2", "2", "2", "2", "2", "<none>"] in _rows(r["dsctl get ds -A"])
    wide = _rows(r["dsctl get pods -o wide"])
    assert sorted((row[0], row[5]) for row in wide) == [
        ("fluentd@node2#1", "node2"), ("fluentd@node3#1", "node3"),
        ("myweb-ds@node2#1", "node2"), ("myweb-ds@node3#1", "node3"),
    ]  # fmt: skip
    assert r["dsctl apply -f my-daemonset.yaml"]["stdout"] == ["daemonset.apps/gpu-agent created"]
    assert r["dsctl label nodes node2 gpu=true"]["stdout"] == ["node/node2 labeled"]
    gpu = r["settled after: dsctl label nodes node2 gpu=true"]["pods"]
    assert [p[:3] for p in gpu if p[1] == "gpu-agent"] == [["default", "gpu-agent", "node2"]]
    gone = r["settled after: dsctl label nodes node2 gpu=false --overwrite"]["pods"]
    assert not [p for p in gone if p[1] == "gpu-agent"]
    tainted = r["settled after: dsctl taint nodes node3 dedicated=x:NoExecute"]["pods"]
    assert not [p for p in tainted if p[2] == "node3"], "NoExecute: pods that do not tolerate it are deleted"
    assert r["dsctl cordon node3"]["stdout"] == ["node/node3 cordoned"]
    assert r["dsctl rollout restart ds/fluentd"]["stdout"] == ["daemonset.apps/fluentd restarted"]
    rolled = ['daemon set "fluentd" successfully rolled out']
    assert r["dsctl rollout status ds/fluentd --timeout 60s"]["stdout"] == rolled
    history = [["daemonset.apps/fluentd"], ["REVISION", "CHANGE-CAUSE"]]
    assert r["dsctl rollout history ds/fluentd"]["stdout"] == [*history, ["1", "<none>"], ["2", "<none>"]]
    assert r["dsctl rollout undo ds/fluentd"]["stdout"] == ["daemonset.apps/fluentd rolled back"]
    undone = r["(after undo) dsctl rollout history ds/fluentd"]["stdout"]
    assert undone == [*history, ["2", "<none>"], ["3", "<none>"]]
    after = r["settled after: dsctl rollout undo ds/fluentd"]
    assert [p[2:4] for p in after["pods"] if p[1] == "fluentd"] == [["node2", "fluentd@node2#3"]]
    nodes = {n[0]: n[1:] for n in after["nodes"]}
    assert nodes["node2"][0]["gpu"] == "false"
    assert nodes["node3"][1:] == [[{"key": "dedicated", "value": "x", "effect": "NoExecute"}], True]

    described = r["dsctl describe ds fluentd"]["stdout"]
    assert "Desired Number of Nodes Scheduled: 1" in described["head"]
    assert "Number of Nodes Scheduled with Available Pods: 1" in described["head"]
    assert [e[3] for e in described["events"]] == [
        "Created pod: fluentd@node2#1",
        "Created pod: fluentd@node3#1",
        "Deleted pod: fluentd@node3#1 (taint dedicated=x:NoExecute not tolerated: the pod may not keep "
        "running)",
        "Deleted pod: fluentd@node2#1 (old pod fluentd@node2#1 replaced within maxUnavailable 1)",
        "Created pod: fluentd@node2#2",
        "Deleted pod: fluentd@node2#2 (old pod fluentd@node2#2 replaced within maxUnavailable 1)",
        "Created pod: fluentd@node2#3",
    ]
    explained = r["dsctl explain pod fluentd-xxxxx"]["stdout"]
    assert explained[0] == "pod default/fluentd@node2#3 on node node2"
    assert "  node node2: create — node is eligible and has no daemon pod [MissingPod]" in explained
    assert any("pod.ready default/fluentd@node2#3 on node2" in line for line in explained)
    why_not = r["dsctl explain node node1 --ds default/myweb-ds"]["stdout"]
    assert any(line.split()[:2] == ["FAIL", "taints"] for line in why_not), why_not
    audit = r["dsctl audit --node node2 --since 10m"]["stdout"]["by_entity"]
    assert [row[0] for row in audit["default/gpu-agent@node2#1"]] == [
        "pod.created", "pod.running", "pod.ready", "pod.terminating", "pod.deleted"
    ]  # fmt: skip
    assert r["dsctl replay verify"]["stdout"][0] == "verified: all match"
    watch = r["dsctl get pods -w"]
    assert watch["complete"] and watch["table"][0][:3] == ["NAME", "READY", "STATUS"]
    assert sorted(row[0] for row in watch["table"][1:]) == ["fluentd@node2#3", "myweb-ds@node2#1"]
    at_apply = _rows(r["dsctl get ds -A --at <seq of: apply gpu-agent>"])
    assert ["default", "gpu-agent", "0", "0", "0", "0", "0", "gpu=true"] in at_apply
    assert ["default", "fluentd", "2", "2", "2", "2", "2", "<none>"] in at_apply
