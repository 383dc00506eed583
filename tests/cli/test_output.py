"""``get``'s output options: kubectl's JSONPath subset and custom-columns as tables of template, object
and text; then through a real ``dsctl up --demo``, each ``dsctl get`` run as its own process:
jsonpath, custom-columns, --show-labels, --no-headers, --sort-by, the API-shaped objects' uids and
conditions agreeing with the tables, and one-line errors for bad templates."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.cli import columns, jsonpath
from engine.cli.get import Query, dump, pyyaml_dump, render, select
from events.errors import InvalidInput
from tests.cli.test_cli import Up, converged, fails, ok, wait_for
from tests.core.world import World

OBJ: dict[str, Any] = {
    "kind": "List",
    "items": [
        {
            "metadata": {"name": "a", "labels": {"app.kubernetes.io/name": "x"}},
            "status": {
                "numberReady": 9,
                "conditions": [{"type": "Ready", "status": "True"}, {"type": "Other", "status": "False"}],
            },
            "spec": {"flag": True, "ports": [80, 443]},
        },
        {"metadata": {"name": "b"}, "status": {"numberReady": 10}, "spec": {"flag": False}},
    ],
}


@pytest.mark.parametrize(
    ("template", "text"),
    [
        ("{.items[*].metadata.name}", "a b"),
        ("{.kind}", "List"),
        ("{kind}", "List"),
        ("{$.kind}", "List"),
        ("{['kind']}", "List"),
        ("{.items[0].metadata.name}", "a"),
        ("{.items[-1].metadata.name}", "b"),
        ("{.items[-1:].metadata.name}", "b"),
        ("{.items[0:1].metadata.name}", "a"),
        ("{.items[::-1].metadata.name}", "b a"),
        ("{.items[0,1].status.numberReady}", "9 10"),
        ("{.items[*]['metadata.name', 'status.numberReady']}", "a 9 b 10"),
        ("{..name}", "a b"),
        ('{.items[0].status.conditions[?(@.type=="Ready")].status}', "True"),
        ("{.items[0].status.conditions[?(@.type!='Ready')].type}", "Other"),
        ("{.items[?(@.status.numberReady>9)].metadata.name}", "b"),
        ("{.items[?(@.status.numberReady<=9)].metadata.name}", "a"),
        ("{.items[?(@.spec.flag==true)].metadata.name}", "a"),
        ("{.items[?(@.metadata.labels)].metadata.name}", "a"),
        ("{.items[0].metadata.labels.app\\.kubernetes\\.io/name}", "x"),
        ("{.items[0].spec.flag} {.items[1].spec.flag}", "true false"),
        ("{.items[0].spec.ports}", "[80,443]"),
        ("{.items[1].metadata}", '{"name":"b"}'),
        ("{.items[0].nothing}", ""),
        ("{.items[7].metadata.name}", ""),
        ("names: {.items[*].metadata.name}.", "names: a b."),
        ('{range .items[*]}{.metadata.name}{"\\t"}{.status.numberReady}{"\\n"}{end}', "a\t9\nb\t10\n"),
        ("{range .items[*]}[{.metadata.name}, {$.kind}] {end}", "[a, List] [b, List] "),
        ("{range .items[*]}{range .status.conditions[*]}{.type},{end};{end}", "Ready,Other,;;"),
        ('{"a{b}c"}', "a{b}c"),
    ],
)
def test_jsonpath(template: str, text: str) -> None:
    assert jsonpath.execute(jsonpath.parse(template), OBJ) == text


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{.items[", "unclosed '{' (expected '}') at position 0"),
        ("{.items[0}", "unclosed '[' (expected ']') at position 9"),
        ("{range .items[*]}{.a}", "{range} without {end} at position 21"),
        ("{.a}{end}", "{end} without {range} at position 4"),
        ("x}", "'}' without '{' at position 1"),
        ("{.items[?(@.a=~'x')]}", "regular expressions (=~) are not supported, as in kubectl at position 13"),
        (
            "{.items[?(@.a==)]}",
            "expected @.path, a quoted string, a number, true, false or nil at position 15",
        ),
        ("{.items[1:2:3:4]}", "a slice has at most start:end:step at position 13"),
        ("{.items[::0]}", "a slice step cannot be 0 at position 11"),
        ("{.a..}", "expected a field name after '..' at position 5"),
        ("{'open}", "unterminated string (expected ') at position 1"),
    ],
)
def test_a_bad_template_is_one_line_naming_it_and_the_position(template: str, message: str) -> None:
    with pytest.raises(InvalidInput) as e:
        jsonpath.parse(template)
    assert str(e.value) == f"jsonpath template {template!r}: {message}"
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("jsonpath=", "-o: jsonpath= needs a template, e.g. jsonpath={.items[*].metadata.name}"),
        ("custom-columns=", "-o: custom-columns= needs NAME:PATH[,NAME:PATH...]"),
        ("custom-columns=NAME", "-o: custom-columns: 'NAME' is not NAME:PATH (e.g. NAME:.metadata.name)"),
        ("custom-columns=A:.a,:.b", "-o: custom-columns: ':.b' is not NAME:PATH (e.g. NAME:.metadata.name)"),
        ("custom-columns=A:.a[", "-o: custom-columns column A: jsonpath template '{.a[}': unclosed '['"),
        ("tabular", "-o: 'tabular' is not an output format"),
    ],
)
def test_bad_output_formats(text: str, message: str) -> None:
    with pytest.raises(InvalidInput) as e:
        columns.parse_output(text)
    assert str(e.value).startswith(message)


def test_custom_columns_cells_and_relaxed_paths() -> None:
    cols = columns.parse_columns("NAME:metadata.name,READY:{.status.numberReady},PORTS:.spec.ports[*],X:.x")
    headers, rows = columns.column_rows(cols, OBJ["items"])
    assert headers == ["NAME", "READY", "PORTS", "X"]
    assert rows == [["a", "9", "80,443", "<none>"], ["b", "10", "<none>", "<none>"]]
    [cond] = columns.parse_columns('C:.status.conditions[?(@.type=="Ready")].status')
    assert columns.cell(cond.path, OBJ["items"][0]) == "True"


@pytest.mark.parametrize(
    ("values", "order"),
    [
        ([9, 10, 1], [2, 0, 1]),  # numbers as numbers
        (["9", "10", "1"], [2, 1, 0]),  # strings as strings, as kubectl sorts them
        ([None, "b", "a"], [0, 2, 1]),  # objects without the field first
        ([2.5, 2, 3], [1, 0, 2]),
    ],
)
def test_sort_order(values: list[Any], order: list[int]) -> None:
    objs = [{"v": v} if v is not None else {} for v in values]
    assert columns.sort_order(columns.sort_template(".v"), objs, ".v") == order


def test_sorting_by_a_field_no_object_has_is_refused() -> None:
    with pytest.raises(InvalidInput, match=r"no object has the field '\.nope'"):
        columns.sort_order(columns.sort_template(".nope"), [{"a": 1}], ".nope")


def test_dump_is_kubectls_yaml() -> None:
    text = dump({"b": {"x": "1", "y": "", "z": "True"}, "a": "two\nlines\n", "c": None, "d": {}}, "yaml")
    assert text == 'a: |\n  two\n  lines\nb:\n  x: "1"\n  y: ""\n  z: "True"\nc: null\nd: {}\n'
    assert yaml.safe_load(text)["a"] == "two\nlines\n"


_SPECIAL = ["1", "", "True", "yes", "~", "a: b", "- x", "#x", "x\ny\n", " lead\nx", "r\n\n", "1.5", "\t"]


#: characters PyYAML writes its own way (escapes, ``? `` keys) where ours is as valid: read-back only
_EXOTIC = ["Cs", "Cc", "Zl", "Zp"]


def _trees(text: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(min_value=-(10**12), max_value=10**12)
        | text
        | st.sampled_from(_SPECIAL)
    )
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
        max_leaves=25,
    )


@settings(max_examples=300, deadline=None)
@given(_trees(st.text(st.characters(max_codepoint=0xFFFF, exclude_categories=_EXOTIC), max_size=10)))
def test_the_fast_yaml_is_pyyamls(tree: Any) -> None:
    obj = {"object": tree}  # what get prints is always a map
    # PyYAML ends a document whose last scalar keeps its trailing lines with "...", kubectl does not
    assert dump(obj, "yaml") == pyyaml_dump(obj).removesuffix("...\n")


@settings(max_examples=300, deadline=None)
@given(_trees(st.text(max_size=10)))
def test_the_fast_yaml_reads_back(tree: Any) -> None:
    assert yaml.safe_load(dump(tree, "yaml")) == tree


@pytest.fixture
def world() -> World:
    from tests.core.world import ds_doc

    w = World()
    w.node("n1", {"zone": "a"})
    w.node("n2")
    w.apply(ds_doc())
    w.settle()
    return w


def test_tables_with_labels_and_without_headers(world: World) -> None:
    q = Query(kind="nodes")
    nodes = select(world.state, q)
    text = render(world.state, q, nodes, "table", world.now, show_labels=True)
    assert text.splitlines()[0].split() == ["NAME", "STATUS", "ROLES", "AGE", "VERSION", "LABELS"]
    assert [line.split()[-1] for line in text.splitlines()[1:]] == ["zone=a", "<none>"]
    bare = render(world.state, q, nodes, "table", world.now, header=False)
    assert bare.splitlines()[0].split()[0] == "n1" and len(bare.splitlines()) == 2
    pods = Query(kind="pods")
    text = render(world.state, pods, select(world.state, pods), "wide", world.now, show_labels=True)
    assert text.splitlines()[0].endswith("LABELS")
    assert all("controller-revision-hash=" in line for line in text.splitlines()[1:])
    cc = render(
        world.state, q, nodes, "custom-columns=NAME:.metadata.name,ZONE:.metadata.labels.zone", world.now
    )
    assert cc.splitlines() == ["NAME   ZONE", "n1     a", "n2     <none>"]
    assert render(world.state, q, [], "custom-columns=NAME:.metadata.name", world.now) == "NAME\n"


# --- through dsctl up --demo -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    server = Up(tmp_path_factory.mktemp("up"))
    try:
        wait_for("the demo to converge", lambda: all(
            converged(server, n, ns) for n, ns in
            (("myweb-ds", "default"), ("fluentd", "default"), ("fluentd-elasticsearch", "kube-system"))
        ), timeout=90)  # fmt: skip
        yield server
    finally:
        server.stop()


UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@pytest.mark.integration
@pytest.mark.slow
def test_jsonpath_and_custom_columns_through_the_cli(up: Up) -> None:
    listing = json.loads(ok(up, "get", "ds", "-A", "-o", "json"))
    want = {
        f"{i['metadata']['namespace']}/{i['metadata']['name']}\t{i['status']['numberReady']}"
        for i in listing["items"]
    }
    template = (
        'jsonpath={range .items[*]}{.metadata.namespace}/{.metadata.name}{"\\t"}{.status.numberReady}{"\\n"}'
        "{end}"
    )
    assert set(ok(up, "get", "ds", "-A", "-o", template).splitlines()) == want
    names = ok(up, "get", "pods", "-n", "kube-system", "-o", "jsonpath={.items[*].metadata.name}").split()
    assert len(names) == 3 and all(n.startswith("fluentd-elasticsearch-") for n in names)
    ready = ok(up, "get", "node", "node1", "-o", 'jsonpath={.status.conditions[?(@.type=="Ready")].status}')
    assert ready == "True"
    cc = ok(
        up,
        "get",
        "ds",
        "-n",
        "kube-system",
        "-o",
        "custom-columns=NAME:.metadata.name,READY:.status.numberReady,X:.spec.nope",
    )
    assert cc.splitlines()[0].split() == ["NAME", "READY", "X"]
    assert cc.splitlines()[1].split() == ["fluentd-elasticsearch", "3", "<none>"]


@pytest.mark.integration
@pytest.mark.slow
def test_objects_have_uuids_that_match_owners_and_conditions_that_match_the_tables(up: Up) -> None:
    daemonsets = json.loads(ok(up, "get", "ds", "-A", "-o", "json"))["items"]
    by_uid = {d["metadata"]["uid"]: d for d in daemonsets}
    assert all(UUID.match(uid) for uid in by_uid)
    for ds in daemonsets:
        assert ds["spec"]["updateStrategy"]["type"] in ("RollingUpdate", "OnDelete")
        assert ds["spec"]["revisionHistoryLimit"] >= 0
        assert ds["spec"]["template"]["spec"]["dnsPolicy"] == "ClusterFirst"
        assert ds["metadata"].get("labels") != {} and ds["metadata"].get("annotations") != {}
        assert ds["metadata"]["resourceVersion"].isdigit()
    pods = json.loads(ok(up, "get", "pods", "-A", "-o", "json"))["items"]
    assert pods and all(UUID.match(p["metadata"]["uid"]) for p in pods)
    for pod in pods:
        [owner] = pod["metadata"]["ownerReferences"]
        assert by_uid[owner["uid"]]["metadata"]["name"] == owner["name"]
        types = [c["type"] for c in pod["status"]["conditions"]]
        assert {"PodScheduled", "Initialized", "ContainersReady", "Ready"} <= set(types)
    table = {line.split()[0]: line.split()[1] for line in ok(up, "get", "nodes").splitlines()[1:]}
    for node in json.loads(ok(up, "get", "nodes", "-o", "json"))["items"]:
        assert UUID.match(node["metadata"]["uid"])
        ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
        assert (ready["status"] == "True") == table[node["metadata"]["name"]].startswith("Ready")
        assert node["spec"].get("unschedulable", True) is True  # present only when true
        assert node["spec"].get("taints", [1]) != []


@pytest.mark.integration
@pytest.mark.slow
def test_show_labels_no_headers_and_sort_by_through_the_cli(up: Up) -> None:
    labelled = ok(up, "get", "ds", "-n", "kube-system", "--show-labels").splitlines()
    assert labelled[0].split()[-1] == "LABELS" and labelled[1].split()[-1] == "k8s-app=fluentd-logging"
    bare = ok(up, "get", "nodes", "--no-headers").splitlines()
    assert [line.split()[0] for line in bare] == ["node1", "node2", "node3"]
    cc = ok(up, "get", "nodes", "--no-headers", "-o", "custom-columns=N:.metadata.name").split()
    assert cc == ["node1", "node2", "node3"]
    order = ok(up, "get", "ds", "-A", "--sort-by=.status.desiredNumberScheduled", "-o", "name").split()
    assert order[-1] == "daemonset.apps/fluentd-elasticsearch"
    reverse = ok(up, "get", "nodes", "--sort-by={.metadata.creationTimestamp}", "--no-headers").split("\n")
    assert len([r for r in reverse if r]) == 3
    listed = json.loads(ok(up, "get", "ds", "-A", "--sort-by=.status.desiredNumberScheduled", "-o", "json"))
    counts = [i["status"]["desiredNumberScheduled"] for i in listed["items"]]
    assert counts == sorted(counts) and counts[-1] == 3


@pytest.mark.integration
@pytest.mark.slow
def test_bad_templates_fail_in_one_line(up: Up) -> None:
    err = fails(up, "get", "ds", "-o", "jsonpath={.items[")
    assert err.strip().splitlines() == [
        "error: jsonpath template '{.items[': unclosed '{' (expected '}') at position 0"
    ]
    err = fails(up, "get", "ds", "-A", "--sort-by=.spec.nothing")
    assert len(err.strip().splitlines()) == 1 and "no object has the field" in err
    err = fails(up, "get", "ds", "-o", "custom-columns=NAME")
    assert len(err.strip().splitlines()) == 1 and "is not NAME:PATH" in err
