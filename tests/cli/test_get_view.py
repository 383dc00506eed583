"""The live view of ``dsctl up`` at 80 columns: no name cut, the feed never wraps mid-word (issue 13)."""

from __future__ import annotations

import io

import msgspec
from rich.console import Console

from engine.bench.workload import History
from engine.cli.view import Activity, render
from projections.fold import apply
from projections.model import ClusterState

LONG = "fluentd-elasticsearch-logging-agent"


def _state() -> ClusterState:
    state = ClusterState()
    history = History(3, 2)
    for seq, env in enumerate([*history.register_nodes(), history.apply(0), history.apply(1)], 1):
        apply(state, env, seq)
    ds = next(iter(state.daemonsets.values()))
    state.daemonsets[f"kube-system/{LONG}"] = msgspec.structs.replace(ds, name=LONG)
    return state


def _screen(width: int) -> str:
    activity = Activity()
    activity.lines.append(
        f"12:00:00 #123 decision kube-system/{LONG}: create 5 pods on node-1, node-2, node-3"
    )
    buf = io.StringIO()
    Console(file=buf, width=width, color_system=None).print(render(_state(), "dsctl up", activity, width))
    return buf.getvalue()


def test_names_are_whole_at_80_columns_and_the_feed_does_not_wrap() -> None:
    screen = _screen(80)
    assert f"kube-system/{LONG}" in screen
    assert "kube-system/agent-00" in screen and "kube-system/agent-01" in screen
    assert all(len(line) <= 80 for line in screen.splitlines())
    feed = screen.split("recent:")[1].strip().splitlines()
    assert len(feed) == 1 and feed[0].endswith("…")
    assert "rolling" in screen  # the state in words beside its colour


def test_wide_terminals_get_kubectl_headers() -> None:
    assert "UP-TO-DATE" in _screen(120) and "UPD" in _screen(80)
