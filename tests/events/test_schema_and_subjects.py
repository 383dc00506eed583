from __future__ import annotations

import pytest

from events import subjects
from events.schema import command_schema, envelope_schema, event_schemas
from events.types import (
    BY_TAG,
    DaemonSetApplied,
    DecisionRecorded,
    NodeRegistered,
    PodReady,
)


def test_json_schema_is_produced_for_every_tag() -> None:
    schemas = event_schemas()
    assert set(schemas) == set(BY_TAG)
    for tag, schema in schemas.items():
        assert schema["title"] == tag
        assert schema["x-schema-version"] == BY_TAG[tag].VERSION
        assert "$ref" in schema or "properties" in schema


def test_the_node_registered_schema_requires_the_name() -> None:
    schema = event_schemas()["node.registered"]
    body = schema["$defs"]["NodeRegistered"]
    assert body["required"] == ["name"]
    assert set(body["properties"]) >= {"name", "labels", "taints", "unschedulable", "conditions", "capacity"}


def test_envelope_and_command_schemas_exist() -> None:
    assert "occurred_at" in envelope_schema()["$defs"]["Envelope"]["properties"]
    assert "anyOf" in command_schema()


@pytest.mark.parametrize(
    ("event", "subject"),
    [
        (NodeRegistered(name="node1.example.com"), "dse.node.node1_example_com.registered"),
        (
            PodReady(namespace="kube-system", name="fluentd-abcde", node="n1"),
            "dse.pod.n1.kube-system.fluentd-abcde.ready",
        ),
    ],
)
def test_subjects_keep_each_name_one_token(event: NodeRegistered | PodReady, subject: str) -> None:
    assert subjects.subject_for(event) == subject


def test_every_event_type_has_a_subject_inside_the_event_stream() -> None:
    import fnmatch

    for cls in BY_TAG.values():
        if cls is DaemonSetApplied or cls is DecisionRecorded:
            continue
        fields = {f: "x" for f in ("name", "namespace", "node")}
        try:
            event = cls(**{k: v for k, v in fields.items() if k in cls.__struct_fields__})
        except TypeError:
            continue  # needs more fields; covered by the codec round trip
        subject = subjects.subject_for(event)
        assert any(fnmatch.fnmatch(subject, pat.replace(">", "*")) for pat in subjects.EVENT_SUBJECTS)


def test_type_filters_match_the_subjects_they_select() -> None:
    assert subjects.type_filter("node.cordoned") == "dse.node.*.cordoned"
    assert subjects.type_filter("pod.ready") == "dse.pod.*.*.*.ready"
    assert subjects.type_filter("daemonset.applied") == "dse.ds.*.*.applied"
    with pytest.raises(ValueError):
        subjects.type_filter("weird.thing")


def test_filters_are_built_from_one_scheme() -> None:
    assert subjects.node_tree("a.b") == "dse.node.a_b.>"
    assert subjects.daemonset_tree("kube-system", "x.y") == "dse.ds.kube-system.x_y.>"
    assert subjects.decision_subject("ns", "x.y") == "dse.decision.ns.x_y"
    assert subjects.pod_tree("n.1", "ns", "p") == "dse.pod.n_1.ns.p.>"
    assert subjects.pod_reports() == subjects.POD_TREE == "dse.pod.>"
    assert subjects.pod_reports("n.1") == "dse.pod.n_1.>"
    assert subjects.node_filters("n.1") == ["dse.node.n_1.>", "dse.pod.n_1.>"]
    assert subjects.daemonset_filters("ns", "d") == ["dse.ds.ns.d.>", "dse.decision.ns.d"]
    assert subjects.pod_filters("p") == ["dse.pod.*.*.p.>"]
    assert subjects.pod_filters("p", "ns") == ["dse.pod.*.ns.p.>"]
    assert subjects.type_filter("decision.recorded") == "dse.decision.*.*"
    assert subjects.COMMAND_TREE == "dse.cmd.>" and subjects.command_subject("n.1") == "dse.cmd.n_1"
    assert subjects.rejected_subject("too_large") == "dse.rejected.too_large"
    assert (subjects.INGEST_EVENT_SUBJECT, subjects.INGEST_BATCH_SUBJECT) == (
        "dse.ingest.event",
        "dse.ingest.batch",
    )


def test_the_stream_names_are_the_ones_the_store_creates() -> None:
    from engine.store import streams

    assert (subjects.EVENTS_STREAM, subjects.COMMANDS_STREAM, subjects.REJECTED_STREAM) == (
        streams.EVENTS_STREAM,
        streams.COMMANDS_STREAM,
        streams.REJECTED_STREAM,
    )
    assert {d.name for d in streams.load_definitions()} >= {
        subjects.EVENTS_STREAM,
        subjects.COMMANDS_STREAM,
        subjects.REJECTED_STREAM,
    }
