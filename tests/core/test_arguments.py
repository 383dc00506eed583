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
