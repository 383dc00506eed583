"""The printed JSON Schema of an ingest line (``dsctl schema -o json``, ``ingest_line``) and the ingest
service's admission (``engine.core.admission.envelope_from``, called directly: no server) give the same
verdict on one corpus of good and bad requests: the cases the issue found (an unknown field, a taint
effect "Sometimes", a node named "Node_7"), every family of the ingest fuzz corpus
(``tests/ingest/corpus.py``), and many generated node facts (hypothesis).

The rules no JSON Schema can say are ingest's alone (``docs/ingest.md``, "The contract"): a DaemonSet
spec ``dsctl apply`` would refuse, one taint per key and effect, the stored size, a payload at an older
schema version. Where the verdicts differ, the refusal must be one of those, named by its field.
"""

from __future__ import annotations

import json
import random
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from engine.core import admission, names
from engine.core.event_validation import CONDITION_STATUSES, EVENT_ID, MAX_INT64
from engine.core.refusals import refusal
from engine.core.tolerations import TAINT_EFFECTS
from engine.ingest.contract import schema_text
from events import schema
from events.errors import InvalidInput
from events.types import BY_TAG
from tests.ingest import corpus

jsonschema = pytest.importorskip("jsonschema")

NOW = datetime(2026, 1, 1, tzinfo=UTC)
DOC = json.loads(schema_text("json"))
LINE = jsonschema.Draft202012Validator(DOC["ingest_line"])
BATCH = jsonschema.Draft202012Validator(DOC["ingest_batch"])


def schema_accepts(request: Any) -> bool:
    return bool(LINE.is_valid(request))


def ingest_refusal(request: Any) -> list[str] | None:
    """None when ingest admits the request, else the fields its refusal names."""
    try:
        admission.envelope_from(json.dumps(request).encode(), now=NOW, new_id=lambda: "drawn-id")
    except InvalidInput as err:
        return [d.field for d in refusal(err).errors]
    return None


def ingest_only(request: Any, fields: list[str]) -> bool:
    """Whether a refusal is for a rule only ingest checks (see the module docstring)."""
    cls = BY_TAG.get(request.get("type")) if isinstance(request.get("type"), str) else None
    older = cls is not None and request.get("schema_version") not in (None, cls.VERSION)
    return (
        older  # an older payload is upcast first: its shape is described in docs/ingest.md, not checked
        or all(f.startswith("$.data.spec") for f in fields)
        or all(re.fullmatch(r"\$\.data\.taints\[\d+\]", f) for f in fields)  # one taint per key, effect
    )


def assert_agree(request: Any) -> None:
    refused_by = ingest_refusal(request)
    accepted = schema_accepts(request)
    if refused_by is None:
        assert accepted, (
            "ingest admits, the schema refuses",
            request,
            [e.message for e in LINE.iter_errors(request)],
        )
    elif accepted:
        assert ingest_only(request, refused_by), ("the schema accepts, ingest refuses", request, refused_by)


# --- the cases of the issue ----------------------------------------------------------------------------

GOOD_NODE: dict[str, Any] = {
    "type": "node.registered",
    "data": {
        "name": "node-7",
        "labels": {"topology.kubernetes.io/zone": "eu-1a"},
        "taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}],
        "conditions": [{"type": "Ready", "status": "True"}],
        "capacity": {"cpu": "4", "memory": "16Gi"},
    },
}


def changed(path: list[Any], value: Any, base: dict[str, Any] = GOOD_NODE) -> dict[str, Any]:
    request = json.loads(json.dumps(base))
    node = request
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return request


@pytest.mark.parametrize(
    "request_",
    [
        changed(["data", "colour"], "blue"),
        changed(["corelation_id"], "x"),
        changed(["data", "taints", 0, "effect"], "Sometimes"),
        changed(["data", "name"], "Node_7"),
        changed(["data", "name"], "node-7\n"),
        changed(["data", "labels"], {"zone": "eu-1a\n"}),
        changed(["data", "labels"], {"a/b/c": "v"}),
        changed(["data", "capacity"], {"cpu": "-4"}),
        changed(["data", "capacity"], {"cpu": "NaN"}),
        changed(["data", "conditions"], [{"type": "Ready", "status": "Maybe"}]),
        changed(["id"], "has space"),
        changed(["id"], "id\n"),
        changed(["source"], "cmdb\n"),
        changed(["occurred_at"], "2026-01-01T00:00:00"),
        changed(["schema_version"], 2),
        changed(["type"], "pod.ready"),
        changed(["type"], "decision.recorded"),
        changed(["type"], "node.exploded"),
    ],
)
def test_what_ingest_refuses_the_schema_refuses(request_: dict[str, Any]) -> None:
    assert ingest_refusal(request_) is not None
    assert not schema_accepts(request_)


@pytest.mark.parametrize(
    "request_",
    [
        GOOD_NODE,
        changed(["id"], ""),
        changed(["schema_version"], None),
        changed(["schema_version"], 1),
        changed(["occurred_at"], "2026-03-01 12:00:00.123456789+01:00"),
        changed(["data", "taints", 0, "timeAdded"], None),
        changed(["data", "capacity"], {"nvidia.com/gpu": "+1", "memory": "1.5e3"}),
        {
            "type": "node.condition_changed",
            "schema_version": 1,
            "data": {"name": "n", "type": "Ready", "status": "True"},
        },
        *corpus.BASES,
    ],
)
def test_what_ingest_admits_the_schema_admits(request_: dict[str, Any]) -> None:
    assert ingest_refusal(request_) is None
    assert schema_accepts(request_)


def test_the_schema_constants_are_ingests() -> None:
    assert schema.TAINT_EFFECTS == TAINT_EFFECTS
    assert schema.CONDITION_STATUSES == CONDITION_STATUSES
    assert schema.MAX_INT64 == MAX_INT64
    assert schema.EVENT_ID["pattern"].startswith("^(?:(?:" + EVENT_ID.pattern)
    assert set(DOC["ingest_line"]["properties"]["type"]["enum"]) == set(schema.ingested_tags())


def test_a_batch_is_an_array_of_lines() -> None:
    assert BATCH.is_valid([GOOD_NODE, corpus.BASES[1]])
    assert not BATCH.is_valid([])
    assert not BATCH.is_valid([GOOD_NODE, changed(["data", "name"], "Node_7")])
    assert not BATCH.is_valid([GOOD_NODE] * 1001)


# --- the ingest fuzz corpus ------------------------------------------------------------------------------

FAMILIES = [
    corpus.poisoned_value,
    corpus.wrong_type,
    corpus.unknown_field,
    corpus.missing_required,
    corpus.bad_name,
    corpus.executor_or_engine_type,
    corpus.bad_daemonset,
]


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.__name__)
def test_the_fuzz_corpus_gets_the_same_verdict(family: Any) -> None:
    rng = random.Random(f"schema-{family.__name__}")
    for _ in range(300):
        assert_agree(family(rng))


# --- generated node facts ------------------------------------------------------------------------------

_odd = st.sampled_from(["", "-", "_", ".", "/", "A", "é", " ", "\n", "\x00", "*", "x" * 63, "x" * 64, "1"])
_name_chars = st.sampled_from("abz09-._/A \n")
texts = st.one_of(
    st.from_regex(r"[a-z0-9]([-a-z0-9.]{0,10}[a-z0-9])?", fullmatch=True),
    st.text(_name_chars, max_size=12),
    st.tuples(st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True), _odd).map("".join),
    st.builds(lambda n: "a" * n, st.sampled_from([62, 63, 64, 252, 253, 254])),
    _odd,
)
quantities = st.one_of(
    st.from_regex(r"[+-]?[0-9]{0,3}(\.[0-9]{0,2})?([KMGTPE]i|[numkMGTPE]|e[0-9]|Zi)?", fullmatch=True),
    st.sampled_from(["NaN", "Infinity", "4\n", " 4", "1e", "0x10", "+", "1" * 65]),
)
taints = st.fixed_dictionaries(
    {"key": texts, "effect": st.sampled_from([*TAINT_EFFECTS, "Sometimes", "", "noschedule"])},
    optional={"value": texts},
)
conditions = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["Ready", "", "NetworkUnavailable"]),
        "status": st.sampled_from(["True", "False", "Unknown", "Maybe", ""]),
    }
)
payloads = st.fixed_dictionaries(
    {"name": texts},
    optional={
        "labels": st.dictionaries(texts, texts, max_size=3),
        "taints": st.lists(taints, max_size=3),
        "conditions": st.lists(conditions, max_size=2),
        "capacity": st.dictionaries(texts, quantities, max_size=3),
        "unschedulable": st.booleans(),
        "colour": st.just("blue"),
    },
)
requests = st.fixed_dictionaries(
    {
        "type": st.sampled_from(
            ["node.registered", "node.labels_changed", "node.taints_changed", "node.cordoned"]
        ),
        "data": payloads,
    },
    optional={
        "id": st.one_of(texts, st.from_regex(r"[!-~]{1,130}", fullmatch=True)),
        "source": texts,
        "correlation_id": texts,
        "schema_version": st.sampled_from([None, 0, 1, 2]),
        "occurred_at": st.sampled_from(
            ["2026-01-01T00:00:00Z", "2026-01-01T00:00:00", "2026-02-30T00:00:00Z", "x"]
        ),
    },
)


def _fits(request: dict[str, Any]) -> dict[str, Any]:
    """Keep only the fields each type has (so the draw tests values, not mostly unknown fields)."""
    allowed = {
        "node.registered": {"name", "labels", "taints", "conditions", "capacity", "unschedulable"},
        "node.labels_changed": {"name", "labels"},
        "node.taints_changed": {"name", "taints"},
        "node.cordoned": {"name"},
    }[request["type"]]
    data = request["data"]
    request["data"] = {
        k: v for k, v in data.items() if k in allowed or (k == "colour" and len(data) % 3 == 0)
    }
    return request


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests.map(_fits))
def test_generated_node_facts_get_the_same_verdict(request: dict[str, Any]) -> None:
    # 2026-02-30 is a date no pattern refuses without a calendar; ingest's decoder does
    assume(not str(request.get("occurred_at", "")).startswith("2026-02-30"))
    keys = [(t["key"], t["effect"]) for t in request["data"].get("taints", [])]
    assume(len(keys) == len(set(keys)))  # one taint per key and effect: ingest's alone
    refused = ingest_refusal(request) is not None
    assert schema_accepts(request) is not refused, (request, ingest_refusal(request))


def test_name_patterns_agree_with_the_name_rules() -> None:
    """The patterns by themselves, on strings at every length boundary."""
    samples = ["a", "a.b", "a/b", "x" * 253 + "/a", "x" * 254 + "/a", "a" * 63, "a" * 64, "A", "a_b", "a\n"]
    samples += [
        "a." * 126 + "a",
        "a." * 127 + "a",
        "-a",
        "a-",
        "example.com/" + "k" * 63,
        "example.com/" + "k" * 64,
    ]
    for value in samples:
        for rule, check in (
            (schema.DNS1123_SUBDOMAIN, names.dns1123_subdomain),
            (schema.DNS1123_LABEL, names.dns1123_label),
            (schema.QUALIFIED_NAME, names.qualified_name),
            (schema.LABEL_VALUE, names.label_value),
        ):
            assert jsonschema.Draft202012Validator(rule).is_valid(value) is (check(value) == []), (
                rule,
                value,
            )
