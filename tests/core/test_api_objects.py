"""The objects of ``get -o json|yaml`` against fixtures written from the Kubernetes API reference
(tests/fixtures/api/): field by field, every key present on one side present on the other, values
equal except times, uids and resourceVersions, whose form is checked instead. The state comes from the
real fold and core (``tests/core/world.py``): a DaemonSet applied, its pod created by a recorded
decision and reported Ready."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.core import api_objects
from engine.core.uids import api_uid, node_uid, stable_uuid
from events.ids import stable_id
from events.k8s import NodeCondition, Taint
from tests.core.world import World

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "api"
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
UUID_ANY = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
#: keys whose values differ from run to run: their form is compared, not their value
FORMS = {
    "creationTimestamp": TIME,
    "deletionTimestamp": TIME,
    "lastTransitionTime": TIME,
    "lastHeartbeatTime": TIME,
    "startTime": TIME,
    "startedAt": TIME,
    "uid": UUID_ANY,
    "resourceVersion": re.compile(r"^[1-9]\d*$"),
}
DS_KEY = "kube-system/fluentd-elasticsearch"


def fixture(name: str) -> Any:
    return yaml.safe_load((FIXTURES / name).read_text())


def differences(expected: Any, actual: Any, path: str = "") -> list[str]:
    if isinstance(expected, dict) and isinstance(actual, dict):
        out = [f"{path}.{k}: missing" for k in expected if k not in actual]
        out += [f"{path}.{k}: not expected ({actual[k]!r})" for k in actual if k not in expected]
        for k in expected.keys() & actual.keys():
            form = FORMS.get(k)
            if form is not None:
                if not (isinstance(actual[k], str) and form.match(actual[k])):
                    out.append(f"{path}.{k}: {actual[k]!r} is not of the form {form.pattern}")
            else:
                out += differences(expected[k], actual[k], f"{path}.{k}")
        return out
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [f"{path}: {len(actual)} items, expected {len(expected)}"]
        return [
            d
            for i, (e, a) in enumerate(zip(expected, actual, strict=True))
            for d in differences(e, a, f"{path}[{i}]")
        ]
    if expected != actual or type(expected) is not type(actual):
        return [f"{path}: {actual!r}, expected {expected!r}"]
    return []


@pytest.fixture
def world() -> World:
    w = World()
    w.node(
        "node-1",
        {"kubernetes.io/hostname": "node-1", "node-role.kubernetes.io/control-plane": ""},
        taints=[Taint(key="node-role.kubernetes.io/control-plane", effect="NoSchedule")],
    )
    w.apply(fixture("daemonset.manifest.yaml"))
    w.settle(DS_KEY)
    # registered after the rollout, so the DaemonSet has one pod (a cordoned node would get one too)
    w.node(
        "node-2",
        unschedulable=True,
        conditions=[
            NodeCondition(type="Ready", status="False", last_transition_time="2026-01-01T00:00:00.25Z")
        ],
    )
    return w


def test_the_daemonset_is_the_api_servers(world: World) -> None:
    obj = api_objects.daemonset(world.ds(DS_KEY))
    assert differences(fixture("daemonset.yaml"), obj) == []


def test_the_daemon_pod_is_the_api_servers_and_points_at_its_owner(world: World) -> None:
    ds = api_objects.daemonset(world.ds(DS_KEY))
    [pod] = [api_objects.pod(world.state, p) for p in world.state.pods.values()]
    expected = fixture("pod.yaml")
    assert pod["metadata"]["name"].startswith(expected["metadata"]["generateName"])
    assert len(pod["metadata"]["name"]) == len(expected["metadata"]["name"])
    expected["metadata"]["name"] = pod["metadata"]["name"]
    assert differences(expected, pod) == []
    assert pod["metadata"]["ownerReferences"][0]["uid"] == ds["metadata"]["uid"]
    assert UUID.match(pod["metadata"]["uid"])  # minted by the decision: a version 8 UUID


@pytest.mark.parametrize(
    ("node", "name"), [("node-1", "node.yaml"), ("node-2", "node-notready-cordoned.yaml")]
)
def test_nodes_are_the_api_servers(world: World, node: str, name: str) -> None:
    assert differences(fixture(name), api_objects.node(world.state.nodes[node])) == []


def test_a_list_is_kubectls() -> None:
    assert api_objects.as_list([]) == {
        "apiVersion": "v1",
        "kind": "List",
        "items": [],
        "metadata": {"resourceVersion": ""},
    }


# --- the parts, as tables ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "policy"),
    [
        ("nginx", "Always"),
        ("nginx:latest", "Always"),
        ("nginx:1.27", "IfNotPresent"),
        ("registry:5000/team/app", "Always"),
        ("registry:5000/team/app:v2", "IfNotPresent"),
        ("app@sha256:" + "a" * 64, "IfNotPresent"),
        ("app:latest@sha256:" + "a" * 64, "Always"),
    ],
)
def test_image_pull_policy_defaults_from_the_tag(image: str, policy: str) -> None:
    assert api_objects.pull_policy(image) == policy


@pytest.mark.parametrize(
    ("resources", "qos"),
    [
        ([{}], "BestEffort"),
        ([{"requests": {"cpu": "100m"}}], "Burstable"),
        ([{"limits": {"cpu": "1", "memory": "1Gi"}}], "Guaranteed"),
        (
            [{"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1", "memory": "1Gi"}}],
            "Guaranteed",
        ),
        ([{"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "500m"}}], "Burstable"),
        ([{"limits": {"cpu": "1", "memory": "1Gi"}}, {}], "Burstable"),
    ],
)
def test_qos_class(resources: list[dict[str, Any]], qos: str) -> None:
    spec = {"containers": [{"name": f"c{i}", "resources": r} for i, r in enumerate(resources)]}
    assert api_objects.qos_class(spec) == qos


def test_on_delete_has_no_rolling_update_and_an_empty_label_map_is_omitted() -> None:
    w = World()
    doc = fixture("daemonset.manifest.yaml")
    doc["metadata"].pop("labels")
    doc["spec"]["updateStrategy"] = {"type": "OnDelete"}
    w.apply(doc)
    obj = api_objects.daemonset(w.ds(DS_KEY))
    assert obj["spec"]["updateStrategy"] == {"type": "OnDelete"}
    assert "labels" not in obj["metadata"]
    assert obj["status"] == {
        "currentNumberScheduled": 0,
        "desiredNumberScheduled": 0,
        "numberMisscheduled": 0,
        "numberReady": 0,
    }


def test_host_network_pods_get_host_ports_and_the_network_toleration() -> None:
    w = World()
    w.node("node-1")
    doc = fixture("daemonset.manifest.yaml")
    doc["spec"]["template"]["spec"]["hostNetwork"] = True
    w.apply(doc)
    w.settle(DS_KEY)
    [pod] = [api_objects.pod(w.state, p) for p in w.state.pods.values()]
    assert pod["spec"]["containers"][0]["ports"] == [
        {"containerPort": 24224, "hostPort": 24224, "protocol": "TCP"}
    ]
    keys = [t["key"] for t in pod["spec"]["tolerations"]]
    assert keys[-1] == "node.kubernetes.io/network-unavailable"
    template = api_objects.daemonset(w.ds(DS_KEY))["spec"]["template"]["spec"]
    assert "hostPort" not in template["containers"][0]["ports"][0]  # templates are not given host ports


def test_a_pod_not_ready_and_a_terminating_pod() -> None:
    w = World()
    w.node("node-1")
    w.apply(fixture("daemonset.manifest.yaml"))
    result = w.reconcile(DS_KEY)
    w.execute(result, ready=False)
    [state] = w.state.pods.values()
    pod = api_objects.pod(w.state, state)
    ready = next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "ContainersNotReady"
    assert ready["message"] == "containers with unready status: [fluentd-elasticsearch]"
    assert pod["status"]["containerStatuses"][0]["ready"] is False
    w.terminating(state)
    pod = api_objects.pod(w.state, w.state.pods[state.key])
    assert TIME.match(pod["metadata"]["deletionTimestamp"])
    assert pod["metadata"]["deletionGracePeriodSeconds"] == 30


def test_an_orphan_has_no_owner_and_no_generate_name() -> None:
    w = World()
    w.node("node-1")
    state = w.pod("node-1", "lonely", ds_key=None, labels={})
    pod = api_objects.pod(w.state, state)
    assert "ownerReferences" not in pod["metadata"] and "generateName" not in pod["metadata"]
    assert "labels" not in pod["metadata"]
    assert pod["spec"]["nodeName"] == "node-1"


# --- uids ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "stored",
    [
        "93646a26-d738-4b6b-ae75-c0afd8e15de2",
        "93646A26-D738-4B6B-AE75-C0AFD8E15DE2",
        "a" * 32,
        "uid-foo-1",
        "",
    ],
)
def test_every_stored_uid_shows_as_a_uuid_always_the_same(stored: str) -> None:
    shown = api_uid(stored)
    assert UUID_ANY.match(shown) and api_uid(stored) == shown
    assert api_uid(shown) == shown


def test_a_legacy_32_hex_pod_uid_shows_as_the_uuid_minted_now_from_the_same_parts() -> None:
    parts = ("ds-uid", "node-1", 42, "pod")
    assert api_uid(stable_id(*parts)) == stable_uuid(*parts)
    assert UUID.match(stable_uuid(*parts)) and stable_uuid(*parts)[14] == "8"
    assert stable_uuid(*parts).replace("-", "")[:12] == stable_id(*parts)[:12]


def test_a_node_uid_is_stable_while_it_exists_and_new_when_registered_again() -> None:
    assert node_uid("n1", 100.0) == node_uid("n1", 100.0) != node_uid("n1", 200.0)
    assert UUID.match(node_uid("n1", 100.0))


def test_the_comparison_sees_a_missing_an_extra_and_a_changed_field_and_a_bad_uid(world: World) -> None:
    expected = fixture("daemonset.yaml")
    obj = api_objects.daemonset(world.ds(DS_KEY))
    obj["spec"].pop("revisionHistoryLimit")
    obj["status"]["numberUnavailable"] = 0
    obj["spec"]["updateStrategy"]["rollingUpdate"]["maxSurge"] = "0"
    obj["metadata"]["uid"] = "0" * 32
    assert sorted(differences(expected, obj)) == [
        ".metadata.uid: '00000000000000000000000000000000' is not of the form " + UUID_ANY.pattern,
        ".spec.revisionHistoryLimit: missing",
        ".spec.updateStrategy.rollingUpdate.maxSurge: '0', expected 0",
        ".status.numberUnavailable: not expected (0)",
    ]
