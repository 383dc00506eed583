"""Manifests: the seed notes load as they are, defaults are applied, invalid variants fail with the API
server's field paths, and ``apply_daemonset`` follows the generation rules."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from engine.core.documents import load_documents
from engine.core.manifests import DaemonSetManifest, apply_daemonset, parse_daemonset, parse_manifests
from engine.core.validation import ManifestInvalid
from events.errors import InvalidInput
from events.k8s import scheduling_spec
from events.types import NodeRegistered
from tests.core.seeds import SEEDS, fragments, manifests, seed
from tests.core.world import World, ds_doc

EXPECTED_SEED_MANIFESTS = {
    "000": [],
    "001": [("default", "myweb-ds"), ("default", "myweb-ds")],
    "002": [("kube-system", "fluentd-elasticsearch")],
    "003": [],
    "004": [("default", "fluentd")],
}


@pytest.mark.parametrize("prefix", sorted(EXPECTED_SEED_MANIFESTS))
def test_seed_manifests_load_as_they_are(prefix: str) -> None:
    loaded = [m for block in manifests(seed(prefix)) for m in parse_manifests(block)]
    assert [
        (m.namespace, m.name) for m in loaded if isinstance(m, DaemonSetManifest)
    ] == EXPECTED_SEED_MANIFESTS[prefix]


def test_every_seed_file_is_covered() -> None:
    assert sorted(p.name[:3] for p in SEEDS.glob("*.txt")) == sorted(EXPECTED_SEED_MANIFESTS)


def test_seed_001_tab_indented_manifest_loads_with_selector_differing_from_metadata_labels() -> None:
    first = manifests(seed("001"))[0]
    assert "\t" in first
    with pytest.raises(yaml.YAMLError):
        yaml.safe_load(first)  # plain YAML refuses it; the loader's tab fallback accepts it
    (ds,) = parse_manifests(first)
    assert isinstance(ds, DaemonSetManifest)
    assert ds.labels == {"app": "myweb", "env": "env"}
    assert ds.spec.selector is not None and ds.spec.selector.match_labels == {"app": "myweb", "env": "dev"}


def test_seed_001_match_expressions_selector_loads() -> None:
    (ds,) = parse_manifests(manifests(seed("001"))[1])
    assert isinstance(ds, DaemonSetManifest) and ds.spec.selector is not None
    assert [(e.key, e.operator, e.values) for e in ds.spec.selector.match_expressions] == [
        ("app", "In", ("myweb",)),
        ("env", "Exists", ()),
    ]


def test_seed_002_unfenced_manifest_keeps_its_toleration_and_namespace() -> None:
    (ds,) = parse_manifests(manifests(seed("002"))[0])
    assert isinstance(ds, DaemonSetManifest)
    assert ds.namespace == "kube-system"
    spec = scheduling_spec(ds.spec.template)
    assert [(t.key, t.effect) for t in spec.tolerations] == [("node-role.kubernetes.io/master", "NoSchedule")]


def test_seed_004_typo_in_host_path_is_legal() -> None:
    (ds,) = parse_manifests(manifests(seed("004"))[0])
    assert isinstance(ds, DaemonSetManifest)
    mounts = ds.spec.template.spec["containers"][0]["volumeMounts"]
    assert "/var/lob/docker/containers" in [m["mountPath"] for m in mounts]


def test_seed_003_boolean_node_selector_fragment_is_coerced_to_the_string_true() -> None:
    (fragment,) = fragments(seed("003"))
    snippet = yaml.safe_load(fragment)
    doc = ds_doc(pod_spec={"nodeSelector": snippet["spec"]["template"]["spec"]["nodeSelector"]})
    assert doc["spec"]["template"]["spec"]["nodeSelector"] == {"gpu": True}
    ds = parse_daemonset(doc)
    assert scheduling_spec(ds.spec.template).node_selector == {"gpu": "true"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("enabled: on", {"enabled": "on"}, id="yaml-1.1-on-stays-a-string"),
        pytest.param("zone: 1", {"zone": "1"}, id="integer-coerced"),
        pytest.param("gpu: false", {"gpu": "false"}, id="boolean-coerced"),
        pytest.param("empty:", {"empty": ""}, id="null-is-empty"),
    ],
)
def test_scalar_label_values_are_coerced(text: str, expected: dict[str, str]) -> None:
    doc = ds_doc()
    yaml_doc = yaml.safe_dump(doc).replace("type: production\n", "type: production\n", 1)
    (loaded,) = load_documents(yaml_doc)
    loaded["metadata"]["labels"] = load_documents(text)[0]
    ds = parse_daemonset(loaded)
    assert ds.labels == expected


def test_float_label_value_is_refused_with_its_path() -> None:
    doc = ds_doc()
    doc["metadata"]["labels"] = {"version": 1.10}
    with pytest.raises(ManifestInvalid) as err:
        parse_daemonset(doc)
    assert err.value.paths == ["metadata.labels.version"]


def test_defaults_are_applied() -> None:
    ds = parse_daemonset(ds_doc(history=None))
    strategy = ds.spec.update_strategy
    assert strategy.type == "RollingUpdate"
    assert strategy.rolling_update is not None
    assert (strategy.rolling_update.max_unavailable, strategy.rolling_update.max_surge) == (1, 0)
    assert ds.spec.revision_history_limit == 10
    assert ds.spec.min_ready_seconds == 0
    assert ds.spec.template.spec["restartPolicy"] == "Always"
    assert ds.namespace == "default"


def test_on_delete_gets_no_rolling_update_defaults() -> None:
    ds = parse_daemonset(ds_doc(strategy={"type": "OnDelete"}))
    assert ds.spec.update_strategy.rolling_update is None


Mutation = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = doc
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value

    return mutate


def _drop(path: str) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = doc
        for p in parents:
            node = node[p]
        del node[last]

    return mutate


AFFINITY_OP = "spec.template.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        pytest.param(_drop("spec.selector"), "spec.selector", id="selector-missing"),
        pytest.param(_set("spec.selector", {}), "spec.selector", id="selector-empty"),
        pytest.param(
            _set("spec.selector", {"matchLabels": {"app": "x"}}),
            "spec.template.metadata.labels",
            id="selector-mismatch",
        ),
        pytest.param(
            _set("spec.selector.matchExpressions", [{"key": "a", "operator": "Within", "values": ["1"]}]),
            "spec.selector.matchExpressions[0].operator",
            id="selector-operator",
        ),
        pytest.param(
            _set("spec.selector.matchExpressions", [{"key": "a", "operator": "In"}]),
            "spec.selector.matchExpressions[0].values",
            id="selector-in-without-values",
        ),
        pytest.param(
            _set("spec.template.spec.restartPolicy", "Never"),
            "spec.template.spec.restartPolicy",
            id="restart-policy",
        ),
        pytest.param(
            _set("spec.template.spec.activeDeadlineSeconds", 10),
            "spec.template.spec.activeDeadlineSeconds",
            id="active-deadline",
        ),
        pytest.param(
            _set("spec.updateStrategy", {"rollingUpdate": {"maxSurge": 1}}),
            "spec.updateStrategy.rollingUpdate.maxSurge",
            id="only-max-surge-set",
        ),
        pytest.param(
            _set("spec.updateStrategy", {"rollingUpdate": {"maxUnavailable": 0}}),
            "spec.updateStrategy.rollingUpdate.maxUnavailable",
            id="both-zero",
        ),
        pytest.param(
            _set("spec.updateStrategy", {"rollingUpdate": {"maxUnavailable": "150%"}}),
            "spec.updateStrategy.rollingUpdate.maxUnavailable",
            id="over-100-percent",
        ),
        pytest.param(
            _set("spec.updateStrategy", {"rollingUpdate": {"maxUnavailable": "ten%"}}),
            "spec.updateStrategy.rollingUpdate.maxUnavailable",
            id="malformed-percent",
        ),
        pytest.param(
            _set("spec.updateStrategy", {"rollingUpdate": {"maxUnavailable": "5"}}),
            "spec.updateStrategy.rollingUpdate.maxUnavailable",
            id="string-without-percent",
        ),
        pytest.param(
            _set("spec.updateStrategy", {"rollingUpdate": {"maxUnavailable": -1}}),
            "spec.updateStrategy.rollingUpdate.maxUnavailable",
            id="negative",
        ),
        pytest.param(
            _set("spec.updateStrategy", {"rollingUpdate": {"maxUnavailable": 0, "maxSurge": "101%"}}),
            "spec.updateStrategy.rollingUpdate.maxSurge",
            id="surge-over-100-percent",
        ),
        pytest.param(
            _set("spec.updateStrategy", {"type": "Recreate"}), "spec.updateStrategy.type", id="strategy-type"
        ),
        pytest.param(_set("spec.minReadySeconds", -1), "spec.minReadySeconds", id="negative-min-ready"),
        pytest.param(
            _set("spec.revisionHistoryLimit", -1), "spec.revisionHistoryLimit", id="negative-history"
        ),
        pytest.param(_set("spec.minReadySeconds", "5"), "spec.minReadySeconds", id="min-ready-not-integer"),
        pytest.param(_set("metadata.name", "Bad_Name"), "metadata.name", id="name-not-dns-subdomain"),
        pytest.param(_drop("metadata.name"), "metadata.name", id="name-missing"),
        pytest.param(_set("metadata.namespace", "a.b"), "metadata.namespace", id="namespace-not-dns-label"),
        pytest.param(_set("metadata.labels", {"bad key": "x"}), "metadata.labels", id="label-key"),
        pytest.param(
            _set(
                "spec.template.spec.affinity",
                {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                {"matchExpressions": [{"key": "a", "operator": "Near", "values": ["x"]}]}
                            ]
                        }
                    }
                },
            ),
            AFFINITY_OP + ".nodeSelectorTerms[0].matchExpressions[0].operator",
            id="affinity-operator",
        ),
        pytest.param(
            _set(
                "spec.template.spec.affinity",
                {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                {
                                    "matchFields": [
                                        {"key": "metadata.name", "operator": "In", "values": ["a", "b"]}
                                    ]
                                }
                            ]
                        }
                    }
                },
            ),
            AFFINITY_OP + ".nodeSelectorTerms[0].matchFields[0].values",
            id="match-fields-two-values",
        ),
        pytest.param(
            _set(
                "spec.template.spec.affinity",
                {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                {"matchExpressions": [{"key": "n", "operator": "Gt", "values": ["x"]}]}
                            ]
                        }
                    }
                },
            ),
            AFFINITY_OP + ".nodeSelectorTerms[0].matchExpressions[0].values",
            id="gt-not-integer",
        ),
        pytest.param(
            _set("spec.template.spec.tolerations", [{"key": "k", "operator": "Maybe"}]),
            "spec.template.spec.tolerations[0].operator",
            id="toleration-operator",
        ),
        pytest.param(
            _set(
                "spec.template.spec.tolerations", [{"key": "k", "operator": "Exists", "effect": "Sometimes"}]
            ),
            "spec.template.spec.tolerations[0].effect",
            id="toleration-effect",
        ),
        pytest.param(
            _set("spec.template.spec.tolerations", [{"key": "k", "operator": "Exists", "value": "v"}]),
            "spec.template.spec.tolerations[0].operator",
            id="exists-with-value",
        ),
        pytest.param(
            _set(
                "spec.template.spec.tolerations",
                [{"key": "k", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 5}],
            ),
            "spec.template.spec.tolerations[0].effect",
            id="toleration-seconds-needs-no-execute",
        ),
        pytest.param(
            _set("spec.template.spec.containers", []), "spec.template.spec.containers", id="no-containers"
        ),
        pytest.param(_set("apiVersion", "extensions/v1beta1"), "apiVersion", id="old-api-version"),
    ],
)
def test_invalid_daemonset_fails_with_field_path(mutate: Mutation, path: str) -> None:
    doc = ds_doc()
    mutate(doc)
    with pytest.raises(ManifestInvalid) as err:
        parse_daemonset(doc)
    assert path in err.value.paths, err.value.errors
    assert isinstance(err.value, InvalidInput)


def test_every_error_is_reported_at_once() -> None:
    doc = ds_doc()
    doc["metadata"]["name"] = "Bad_Name"
    doc["spec"]["template"]["spec"]["restartPolicy"] = "OnFailure"
    doc["spec"]["minReadySeconds"] = -5
    with pytest.raises(ManifestInvalid) as err:
        parse_daemonset(doc)
    assert {"metadata.name", "spec.template.spec.restartPolicy", "spec.minReadySeconds"} <= set(
        err.value.paths
    )
    assert "metadata.name" in str(err.value)


def test_apply_generations_and_results() -> None:
    w = World()
    created = apply_daemonset(parse_daemonset(ds_doc()), None, uid="u1")
    assert (created.result, created.event.generation, created.event.uid) == ("created", 1, "u1")
    w.emit(created.event)
    same = apply_daemonset(parse_daemonset(ds_doc()), w.ds(), uid="u2")
    assert (same.result, same.event.generation, same.event.uid) == ("unchanged", 1, "u1")
    relabelled = ds_doc()
    relabelled["metadata"]["labels"] = {"team": "a"}
    meta = apply_daemonset(parse_daemonset(relabelled), w.ds(), uid="u2")
    assert (meta.result, meta.event.generation) == ("configured", 1)
    changed = apply_daemonset(parse_daemonset(ds_doc(image="v2")), w.ds(), uid="u2")
    assert (changed.result, changed.event.generation) == ("configured", 2)
    assert changed.event.template_hash != created.event.template_hash


def test_selector_is_immutable() -> None:
    w = World()
    w.apply(ds_doc())
    doc = ds_doc(labels={"name": "simple-daemon", "type": "production", "extra": "x"})
    with pytest.raises(ManifestInvalid) as err:
        apply_daemonset(parse_daemonset(doc), w.ds(), uid="u2")
    assert err.value.paths == ["spec.selector"]


NODE_LIST = {
    "apiVersion": "v1",
    "kind": "List",
    "items": [
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "node1", "labels": {"kubernetes.io/hostname": "node1", "gpu": "true"}},
            "spec": {"taints": [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]},
            "status": {
                "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "lastHeartbeatTime": "2024-01-01T00:00:00Z",
                        "lastTransitionTime": "2024-01-01T00:00:00Z",
                    }
                ],
            },
        },
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node2"}, "spec": {"unschedulable": True}},
    ],
    "metadata": {"resourceVersion": ""},
}


def test_kubectl_get_nodes_json_loads_as_it_is() -> None:
    loaded = parse_manifests(json.dumps(NODE_LIST, indent=4))
    assert [type(n) for n in loaded] == [NodeRegistered, NodeRegistered]
    first, second = loaded
    assert isinstance(first, NodeRegistered) and isinstance(second, NodeRegistered)
    assert first.labels["gpu"] == "true" and first.taints[0].effect == "NoSchedule"
    assert first.conditions[0].type == "Ready" and first.capacity["pods"] == "110"
    assert second.unschedulable


def test_node_list_kind_and_multi_document_yaml_load() -> None:
    node_list = copy.deepcopy(NODE_LIST)
    node_list["kind"] = "NodeList"
    text = yaml.safe_dump(node_list) + "---\n" + yaml.safe_dump(ds_doc()) + "---\n"
    loaded = parse_manifests(text)
    assert [type(m).__name__ for m in loaded] == ["NodeRegistered", "NodeRegistered", "DaemonSetManifest"]


@pytest.mark.parametrize(
    ("taints", "path"),
    [
        pytest.param([{"key": "k", "effect": "Sometimes"}], "spec.taints[0].effect", id="bad-effect"),
        pytest.param([{"effect": "NoSchedule"}], "spec.taints[0].key", id="missing-key"),
        pytest.param(
            [{"key": "k", "effect": "NoSchedule"}, {"key": "k", "effect": "NoSchedule"}],
            "spec.taints[1]",
            id="duplicate",
        ),
    ],
)
def test_invalid_node_taints_fail_with_field_path(taints: list[dict[str, Any]], path: str) -> None:
    doc = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"}, "spec": {"taints": taints}}
    with pytest.raises(ManifestInvalid) as err:
        parse_manifests(json.dumps(doc))
    assert path in err.value.paths


@pytest.mark.parametrize(
    ("text", "path"),
    [
        pytest.param("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n", "kind", id="unsupported-kind"),
        pytest.param("a: [unclosed\n", "", id="yaml-syntax"),
        pytest.param("- just\n- a list\n", "", id="not-an-object"),
    ],
)
def test_unreadable_input_is_refused(text: str, path: str) -> None:
    with pytest.raises(ManifestInvalid) as err:
        parse_manifests(text)
    assert err.value.paths[0] == path


TAB_INDENTED = (
    "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n\tname: foo\n\tannotations:\n\t\tnote: 'a\tb'\n"
    "spec:\n\tselector:\n\t\tmatchLabels:\n\t\t\tapp: x\n\ttemplate:\n\t\tmetadata:\n\t\t\tlabels:\n"
    "\t\t\t\tapp: x\n\t\tspec:\n\t\t\tcontainers:\n\t\t\t- name: c\n\t\t\t  image: i\n"
)


def test_tabs_inside_values_survive_the_tab_fallback() -> None:
    (ds,) = parse_manifests(TAB_INDENTED)
    assert isinstance(ds, DaemonSetManifest)
    assert ds.annotations == {"note": "a\tb"}
    assert ds.name == "foo"


def test_error_message_names_the_object_and_every_field() -> None:
    doc = ds_doc()
    doc["spec"]["minReadySeconds"] = -1
    with pytest.raises(ManifestInvalid) as err:
        parse_daemonset(doc)
    assert str(err.value).startswith("DaemonSet 'foo' is invalid: spec.minReadySeconds: Invalid value: -1")
    assert err.value.field == "spec.minReadySeconds"
