"""kubectl argument syntax, as tables: each spelling the CLI accepts and what it means, and each refusal
with the field it names and the reason it gives (what the user reads as ``error: FIELD: REASON``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from engine.core import arguments
from events.errors import InvalidInput
from events.k8s import LabelSelector, LabelSelectorRequirement, Taint

NOW = datetime(2026, 11, 22, 9, 0, 0, tzinfo=UTC)


def refused(call: Callable[[], Any]) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        call()
    return info.value


# --- resource types and references -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("ds", "daemonsets"),
        ("DaemonSet", "daemonsets"),
        ("daemonsets.apps", "daemonsets"),
        ("daemonset.apps", "daemonsets"),
        ("po", "pods"),
        ("pod", "pods"),
        ("PODS", "pods"),
        ("no", "nodes"),
        ("node", "nodes"),
        ("nodes", "nodes"),
    ],
)
def test_kind_of_accepts_kubectl_spellings(text: str, kind: str) -> None:
    assert arguments.kind_of(text) == kind


@pytest.mark.parametrize("text", ["deployment", "svc", "", "d s"])
def test_kind_of_refuses_other_types(text: str) -> None:
    err = refused(lambda: arguments.kind_of(text))
    assert err.field == "TYPE"
    assert err.reason == f'the server doesn\'t have a resource type "{text}" (use daemonsets, pods or nodes)'


@pytest.mark.parametrize(
    ("text", "name"),
    [("ds/fluentd", "fluentd"), ("daemonset/a", "a"), ("daemonsets.apps/x-y", "x-y")],
)
def test_parse_ds_ref(text: str, name: str) -> None:
    assert arguments.parse_ds_ref(text) == name


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("fluentd", "expected daemonset/NAME or ds/NAME, got 'fluentd'"),
        ("pod/fluentd", "rollout works on daemonsets only, not 'pod'"),
        ("ds/", "a name is required"),
        ("deploy/x", 'the server doesn\'t have a resource type "deploy" (use daemonsets, pods or nodes)'),
    ],
)
def test_parse_ds_ref_refusals(text: str, reason: str) -> None:
    err = refused(lambda: arguments.parse_ds_ref(text))
    assert err.reason == reason
    assert err.field == ("TYPE" if text.startswith("deploy") else "RESOURCE")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("kube-system/agent", ("kube-system", "agent")),
        ("agent", ("default", "agent")),
        ("/agent", ("", "agent")),
    ],
)
def test_parse_namespaced(text: str, expected: tuple[str, str]) -> None:
    assert arguments.parse_namespaced(text) == expected


# --- labels ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "set_", "remove"),
    [
        (["gpu=true"], {"gpu": "true"}, []),
        (["gpu="], {"gpu": ""}, []),
        (["gpu-"], {}, ["gpu"]),
        (["a=1", "b-", "example.com/zone=eu-1"], {"a": "1", "example.com/zone": "eu-1"}, ["b"]),
    ],
)
def test_parse_label_args(args: list[str], set_: dict[str, str], remove: list[str]) -> None:
    assert arguments.parse_label_args(args) == (set_, remove)


@pytest.mark.parametrize(
    ("arg", "field", "reason_start"),
    [
        ("gpu", "gpu", "invalid label spec 'gpu': use key=value to set, key- to remove"),
        ("=true", "=true", "invalid label spec '=true': empty key"),
        ("bad key=1", "bad key", "invalid label bad key=1: "),
        ("gpu=not ok", "gpu", "invalid label gpu=not ok: "),
        ("a=x=y", "a", "invalid label a=x=y: "),
        ("a=" + "v" * 64, "a", "invalid label a=" + "v" * 64 + ": must be no more than 63 characters"),
    ],
)
def test_parse_label_args_refusals(arg: str, field: str, reason_start: str) -> None:
    err = refused(lambda: arguments.parse_label_args([arg]))
    assert err.field == field
    assert err.reason.startswith(reason_start), err.reason


# --- taints ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "add", "remove"),
    [
        (["dedicated=x:NoExecute"], [Taint(key="dedicated", value="x", effect="NoExecute")], []),
        (["gpu:NoSchedule"], [Taint(key="gpu", value="", effect="NoSchedule")], []),
        (["k=v:PreferNoSchedule"], [Taint(key="k", value="v", effect="PreferNoSchedule")], []),
        (["dedicated:NoExecute-"], [], [("dedicated", "NoExecute")]),
        (["dedicated-"], [], [("dedicated", "")]),
        (["dedicated=x:NoSchedule-"], [], [("dedicated", "NoSchedule")]),
        (["a:NoSchedule", "b-"], [Taint(key="a", value="", effect="NoSchedule")], [("b", "")]),
    ],
)
def test_parse_taint_args(args: list[str], add: list[Taint], remove: list[tuple[str, str]]) -> None:
    assert arguments.parse_taint_args(args) == (add, remove)


EFFECTS = "NoSchedule, PreferNoSchedule, NoExecute"


@pytest.mark.parametrize(
    ("arg", "reason"),
    [
        ("dedicated=x", f"invalid taint spec 'dedicated=x': use key=value:Effect or key:Effect- ({EFFECTS})"),
        (
            "k=v:Sometimes",
            f"invalid taint spec 'k=v:Sometimes': use key=value:Effect or key:Effect- ({EFFECTS})",
        ),
        (
            "k=v:noschedule",
            f"invalid taint spec 'k=v:noschedule': use key=value:Effect or key:Effect- ({EFFECTS})",
        ),
        ("=v:NoSchedule", "invalid taint spec '=v:NoSchedule': empty key"),
        (":NoSchedule", "invalid taint spec ':NoSchedule': empty key"),
        ("k:Never-", f"invalid taint effect 'Never' in 'k:Never-' (use {EFFECTS})"),
    ],
)
def test_parse_taint_args_refusals(arg: str, reason: str) -> None:
    err = refused(lambda: arguments.parse_taint_args([arg]))
    assert err.field == arg
    assert err.reason == reason


# --- durations and points in the log ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("30", 30.0),
        ("2.5", 2.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1m30s", 90.0),
        ("1h30m", 5400.0),
        ("500ms", 0.5),
        (" 10s ", 10.0),
        ("1.5m", 90.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert arguments.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "10x", "5 m", "-5s", "1d", "m5", "10s junk"])
def test_parse_duration_refusals(text: str) -> None:
    err = refused(lambda: arguments.parse_duration(text))
    assert err.field == "--timeout"
    assert err.reason == f"invalid duration {text!r} (e.g. 30s, 5m, 1h30m)"


def test_parse_duration_names_the_flag_it_came_from() -> None:
    assert refused(lambda: arguments.parse_duration("soon", "--wait")).field == "--wait"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1234", 1234),
        (" 7 ", 7),
        ("2026-11-22T09:00:00Z", NOW),
        ("2026-11-22T09:00:00", NOW),  # no zone: the log's clock, UTC
        ("2026-11-22T10:00:00+01:00", datetime(2026, 11, 22, 10, tzinfo=timezone(timedelta(hours=1)))),
    ],
)
def test_parse_at(text: str, expected: int | datetime) -> None:
    assert arguments.parse_at(text) == expected


@pytest.mark.parametrize(("text", "flag"), [("yesterday", "--at"), ("-3", "--at"), ("12:00", "--since")])
def test_parse_at_refusals(text: str, flag: str) -> None:
    err = refused(lambda: arguments.parse_at(text, flag))
    assert err.field == flag
    assert err.reason == (
        f"{text!r} is neither a stream sequence nor an RFC 3339 time (e.g. 2026-11-22T09:00:00Z)"
    )


def test_parse_time_accepts_only_times() -> None:
    assert arguments.parse_time("2026-11-22T09:00:00Z", "--until") == NOW
    err = refused(lambda: arguments.parse_time("42", "--until"))
    assert (err.field, err.reason) == ("--until", "'42' is not an RFC 3339 time")
    assert refused(lambda: arguments.parse_time("never", "--now")).field == "--now"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10m", NOW - timedelta(minutes=10)),
        ("1h30m", NOW - timedelta(minutes=90)),
        ("30", NOW - timedelta(seconds=30)),  # plain seconds are a duration, never a sequence
        ("2026-11-21T09:00:00Z", NOW - timedelta(days=1)),
    ],
)
def test_parse_since(text: str, expected: datetime) -> None:
    assert arguments.parse_since(text, NOW) == expected


@pytest.mark.parametrize("text", ["recently", "10x", "2026-13-01"])
def test_parse_since_refusals(text: str) -> None:
    err = refused(lambda: arguments.parse_since(text, NOW))
    assert err.field == "--since"
    assert err.reason == f"{text!r} is neither a duration (10m, 1h30m) nor an RFC 3339 time"


# --- cascade ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "policy"),
    [
        ("background", "Background"),
        ("Background", "Background"),
        ("true", "Background"),
        ("foreground", "Foreground"),
        ("orphan", "Orphan"),
        ("false", "Orphan"),
    ],
)
def test_parse_cascade(text: str, policy: str) -> None:
    assert arguments.parse_cascade(text) == policy


@pytest.mark.parametrize("text", ["", "none", "yes"])
def test_parse_cascade_refusals(text: str) -> None:
    err = refused(lambda: arguments.parse_cascade(text))
    assert err.field == "--cascade"
    assert err.reason == f"invalid cascade value {text!r} (use background, foreground or orphan)"


# --- label selectors -------------------------------------------------------------------------------


def req(key: str, operator: str, *values: str) -> LabelSelectorRequirement:
    return LabelSelectorRequirement(key=key, operator=operator, values=values)


@pytest.mark.parametrize(
    ("text", "requirements"),
    [
        ("app=web", [req("app", "In", "web")]),
        ("app==web", [req("app", "In", "web")]),
        ("app!=web", [req("app", "NotIn", "web")]),
        ("tier in (a, b)", [req("tier", "In", "a", "b")]),
        ("tier notin (a)", [req("tier", "NotIn", "a")]),
        ("gpu", [req("gpu", "Exists")]),
        ("!gpu", [req("gpu", "DoesNotExist")]),
        (
            "app=web,tier in (a,b),!legacy",
            [req("app", "In", "web"), req("tier", "In", "a", "b"), req("legacy", "DoesNotExist")],
        ),
        (" app = web ", [req("app", "In", "web")]),
    ],
)
def test_parse_label_selector(text: str, requirements: list[LabelSelectorRequirement]) -> None:
    assert arguments.parse_label_selector(text) == LabelSelector(match_expressions=tuple(requirements))


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty requirement in selector ''"),
        ("app=web,", "empty requirement in selector 'app=web,'"),
        ("tier in a,b", "values of 'tier in a' must be in parentheses"),
        ("=web", "invalid label key in selector '=web'"),
        ("two words", "invalid label key in selector 'two words'"),
    ],
)
def test_parse_label_selector_refusals(text: str, reason: str) -> None:
    err = refused(lambda: arguments.parse_label_selector(text))
    assert (err.field, err.reason) == ("--selector", reason)


# --- objects: TYPE NAME..., TYPE/NAME..., TYPE,TYPE --------------------------------------------------

T = arguments.Target


@pytest.mark.parametrize(
    ("args", "targets"),
    [
        (["ds"], [T("daemonsets")]),
        (["ds", "a"], [T("daemonsets", ("a",))]),
        (["daemonset.apps", "a", "b"], [T("daemonsets", ("a", "b"))]),
        (["nodes", "n1", "n2", "n1"], [T("nodes", ("n1", "n2"))]),
        (["ds,nodes"], [T("daemonsets"), T("nodes")]),
        (["po,ds,pods"], [T("pods"), T("daemonsets")]),
        (["ds,no", "x"], [T("daemonsets", ("x",)), T("nodes", ("x",))]),
        (["ds/a"], [T("daemonsets", ("a",))]),
        (["ds/a", "daemonset/b", "node/n1"], [T("daemonsets", ("a", "b")), T("nodes", ("n1",))]),
        (["no/n1", "ds/a", "nodes/n2"], [T("nodes", ("n1", "n2")), T("daemonsets", ("a",))]),
        (["DaemonSet/a"], [T("daemonsets", ("a",))]),
        (["all"], [T("pods"), T("daemonsets")]),
        (["nodes,all"], [T("nodes"), T("pods"), T("daemonsets")]),
    ],
)
def test_parse_targets(args: list[str], targets: list[arguments.Target]) -> None:
    assert arguments.parse_targets(args, "get") == targets


NO_SVC = 'the server doesn\'t have a resource type "svc" (use daemonsets, pods or nodes)'


@pytest.mark.parametrize(
    ("args", "field", "reason"),
    [
        ([], "TYPE", "you must specify the type of resource to get (daemonsets, pods or nodes), as "
         "TYPE NAME or TYPE/NAME"),
        (["ds", "ds/a"], "TYPE/NAME", "there is no need to specify a resource type as a separate argument "
         "when passing arguments in resource/name form (e.g. 'dsctl get resource/<name>' instead of "
         "'dsctl get resource resource/<name>'): 'ds'"),
        (["ds/"], "TYPE/NAME", "'ds/' is not of the form TYPE/NAME"),
        (["ds/a/b"], "TYPE/NAME", "'ds/a/b' is not of the form TYPE/NAME"),
        (["ds,no/a"], "TYPE/NAME", "'ds,no/a' is not of the form TYPE/NAME"),
        (["ds,"], "TYPE", "empty resource type in 'ds,'"),
        (["ds,svc"], "TYPE", NO_SVC),
        (["svc/a"], "TYPE", NO_SVC),
        (["ds", ""], "NAME", "a name cannot be empty"),
    ],
)  # fmt: skip
def test_parse_targets_refusals(args: list[str], field: str, reason: str) -> None:
    err = refused(lambda: arguments.parse_targets(args, "get"))
    assert (err.field, err.reason) == (field, reason)


def test_parse_targets_keeps_a_verb_to_its_kinds() -> None:
    assert arguments.parse_targets(["pod/p"], "explain", kinds=("pods", "nodes")) == [T("pods", ("p",))]
    err = refused(lambda: arguments.parse_targets(["ds", "x"], "explain", kinds=("pods", "nodes")))
    assert (err.field, err.reason) == ("TYPE", "explain works on pods or nodes only, not daemonsets")


@pytest.mark.parametrize(
    ("args", "names"),
    [(["n1"], ["n1"]), (["node/n1", "n2"], ["n1", "n2"]), (["no/n1", "nodes/n1"], ["n1"])],
)
def test_parse_node_names(args: list[str], names: list[str]) -> None:
    assert arguments.parse_node_names(args, "cordon") == names


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        ([], "cordon needs a node name (NODE or node/NODE)"),
        (["pod/p"], "cordon works on nodes only, not 'pod'"),
        (["node/"], "'node/' names no node"),
    ],
)
def test_parse_node_names_refusals(args: list[str], reason: str) -> None:
    assert refused(lambda: arguments.parse_node_names(args, "cordon")).reason == reason


@pytest.mark.parametrize(
    ("args", "nodes", "edits"),
    [
        (["nodes", "n1", "a=b"], ["n1"], ["a=b"]),
        (["node/n1", "node/n2", "a=b", "c-"], ["n1", "n2"], ["a=b", "c-"]),
        (["no", "n1", "n2", "k=v:NoSchedule", "k:NoExecute-"], ["n1", "n2"],
         ["k=v:NoSchedule", "k:NoExecute-"]),
        (["nodes", "n1", "dedicated-"], ["n1"], ["dedicated-"]),
    ],
)  # fmt: skip
def test_split_edits(args: list[str], nodes: list[str], edits: list[str]) -> None:
    targets, got = arguments.split_edits(args, "label")
    assert [n for t in targets for n in t.names] == nodes
    assert got == edits


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["nodes", "a=b"], "label needs a node name (nodes NAME or node/NAME)"),
        (["ds", "x", "a=b"], "label works on nodes only, not daemonsets"),
        (["nodes", "n1", "nonsense"],
         "at least one label update is required (KEY=VALUE or KEY-; 'n1', 'nonsense' read as node names)"),
    ],
)  # fmt: skip
def test_split_edits_refusals(args: list[str], reason: str) -> None:
    assert refused(lambda: arguments.split_edits(args, "label")).reason == reason


@pytest.mark.parametrize(
    ("args", "many", "parsed"),
    [
        (["ds/web"], False, (["web"], None)),
        (["daemonset", "web"], False, (["web"], None)),
        (["daemonsets.apps", "web", "40%"], False, (["web"], "40%")),
        (["ds/web", "2"], False, (["web"], "2")),
        (["ds/a", "daemonset/b"], True, (["a", "b"], None)),
        (["ds", "a", "b", "a"], True, (["a", "b"], None)),
        (["ds/a"], True, (["a"], None)),
    ],
)
def test_parse_rollout_args(args: list[str], many: bool, parsed: tuple[list[str], str | None]) -> None:
    assert arguments.parse_rollout_args(args, many=many) == parsed


@pytest.mark.parametrize(
    ("args", "many", "reason"),
    [
        ([], False, "rollout needs a DaemonSet: ds/NAME or daemonset NAME"),
        (["daemonset"], False, "daemonset needs a NAME (daemonset NAME or ds/NAME)"),
        (["pods", "x"], False, "rollout works on daemonsets only, not 'pods'"),
        (["ds/web", "1", "2"], False, "unexpected arguments: 2"),
        (["ds/a", "ds/b"], False, "this rollout action takes one DaemonSet"),
        (["ds/a", "x", "ds/b"], True, "unexpected arguments: x ds/b"),
        (["ds/a", "x"], True, "unexpected arguments: x"),
    ],
)
def test_parse_rollout_args_refusals(args: list[str], many: bool, reason: str) -> None:
    err = refused(lambda: arguments.parse_rollout_args(args, many=many))
    assert (err.field, err.reason) == ("RESOURCE", reason)


# --- --dry-run -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "allowed", "value"),
    [
        ("client", ("none", "client"), "client"),
        ("None", ("none", "client"), "none"),
        ("server", ("none", "client", "server"), "server"),
    ],
)
def test_parse_dry_run(text: str, allowed: tuple[arguments.DryRun, ...], value: str) -> None:
    assert arguments.parse_dry_run(text, allowed) == value


def test_parse_dry_run_refuses_server_where_the_verb_has_none() -> None:
    err = refused(lambda: arguments.parse_dry_run("server"))
    assert (err.field, err.reason) == ("--dry-run", "invalid value 'server': must be 'none', 'client'")


# --- --at ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "point"),
    [
        ("1234", 1234),
        ("0", 0),
        ("5m", NOW - timedelta(minutes=5)),
        ("1h30m", NOW - timedelta(hours=1, minutes=30)),
        ("90s", NOW - timedelta(seconds=90)),
        ("2026-11-22T08:00:00Z", datetime(2026, 11, 22, 8, 0, tzinfo=UTC)),
        ("2026-11-22T08:00:00", datetime(2026, 11, 22, 8, 0, tzinfo=UTC)),
        ("2026-11-22T10:00:00+02:00", datetime(2026, 11, 22, 8, 0, tzinfo=UTC)),
    ],
)
def test_parse_point_takes_what_since_takes_and_sequences(text: str, point: int | datetime) -> None:
    assert arguments.parse_point(text, NOW) == point


@pytest.mark.parametrize("text", ["yesterday", "5 m", "-3", "m5"])
def test_parse_point_refusals(text: str) -> None:
    err = refused(lambda: arguments.parse_point(text, NOW))
    assert err.field == "--at"
    assert err.reason == (
        f"{text!r} is neither a stream sequence, a duration (5m, 1h30m) nor an RFC 3339 time "
        "(e.g. 2026-11-22T09:00:00Z)"
    )


FIRST = NOW - timedelta(hours=1)
LOG = {"first_seq": 3, "last_seq": 40, "first_time": FIRST, "now": NOW}


@pytest.mark.parametrize(
    "point", [3, 40, 17, FIRST, NOW, NOW - timedelta(minutes=5)]
)  # fmt: skip
def test_check_point_accepts_the_log_from_end_to_end(point: int | datetime) -> None:
    arguments.check_point(point, **LOG)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("point", "log", "reason"),
    [
        (41, LOG, "sequence 41 is past the end of the log (last sequence 40)"),
        (2, LOG, "sequence 2 is before the first in the log (3)"),
        (0, LOG, "sequence 0 is before the first in the log (3)"),
        (FIRST - timedelta(seconds=1), LOG,
         "2026-11-22T07:59:59Z is before the first event in the log (2026-11-22T08:00:00Z)"),
        (NOW + timedelta(minutes=1), LOG, "2026-11-22T09:01:00Z is in the future"),
        (1, {**LOG, "first_seq": 0, "last_seq": 0, "first_time": None},
         "the log is empty: there is no sequence to show"),
        (NOW, {**LOG, "first_seq": 0, "last_seq": 0, "first_time": None},
         "the log is empty: there is no time to show"),
    ],
)  # fmt: skip
def test_check_point_refuses_past_either_end(point: int | datetime, log: dict[str, Any], reason: str) -> None:
    err = refused(lambda: arguments.check_point(point, **log))
    assert (err.field, err.reason) == ("--at", reason)


# --- did you mean ----------------------------------------------------------------------------------------

VERBS = ["apply", "diff", "delete", "get", "describe", "rollout", "label", "taint", "cordon", "uncordon"]
FLAGS = ["-n", "--namespace", "-o", "--output", "--user", "--selector", "--dry-run"]


@pytest.mark.parametrize(
    ("word", "candidates", "close"),
    [
        ("aply", VERBS, "apply"),
        ("descibe", VERBS, "describe"),
        ("rolout", VERBS, "rollout"),
        ("gett", VERBS, "get"),
        ("frobnicate", VERBS, None),
        ("--namspace", FLAGS, "--namespace"),
        ("--dryrun", FLAGS, "--dry-run"),
        ("--outptu", FLAGS, "--output"),
        ("--bogus", FLAGS, None),
    ],
)
def test_did_you_mean(word: str, candidates: list[str], close: str | None) -> None:
    assert arguments.did_you_mean(word, candidates) == close
