"""``replay verify`` audits effects: every recorded command was answered, is still in flight, or was
superseded after it expired; an overdue one is an orphan (exit 1); a malformed decision record is listed as
tamper evidence.

The logs are built by hand (``tests.e2e.recorded``: real reconcile decisions appended with a chosen
clock, nothing sent, no executor), except the last test's, which is a busy normal run of the engine and
a simulated fleet. One test drives the real CLI (``python -m engine.cli replay verify``)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from engine.cli.apply import Applier
from engine.cli.daemonsets import delete_daemonset
from engine.cli.verify import VerifyReport, print_verify, verify
from engine.store.event_store import JetStreamEventStore
from events.codec import encode
from events.envelope import wrap
from events.types import CreatePod, NodeLabelsChanged, NodeRemoved
from tests.conftest import TestServer
from tests.e2e.harness import Cluster, nodes_yaml, pods_of, running_nodes
from tests.e2e.recorded import T0, WEB, answer, at, later_event, record_decision, send, setup

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def printed(report: VerifyReport) -> tuple[int, str]:
    out = io.StringIO()
    code = print_verify(report, out)
    return code, out.getvalue()


def dsctl(server: TestServer, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, NATS_URL=server.url)
    env.pop("DSCTL_LOG_LEVEL", None)
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


async def test_a_recorded_command_never_sent_is_an_orphan_once_its_window_passed(
    jetstream_store: JetStreamEventStore, nc: Any, nats_server: TestServer
) -> None:
    await setup(jetstream_store, "n1", "n2")
    seq, decision = await record_decision(jetstream_store, T0 + 1)
    await later_event(jetstream_store, T0 + 1 + 400)  # the log shows 400 s going by, no answer
    report = await verify(jetstream_store, nc=nc)
    assert report.checked == 1 and report.mismatches == []
    assert [(e.decision_seq, e.command_id, e.node, e.kind, e.reason) for e in report.orphans] == [
        (seq, c.id, c.node, "create_pod", "never sent") for c in sorted(decision.commands, key=lambda c: c.id)
    ]
    assert all(e.sent == "no" and e.age_seconds == pytest.approx(400) for e in report.orphans)
    assert report.in_flight == [] and report.answered == 0 and report.commands == 2
    code, text = printed(report)
    assert code == 1
    for c in decision.commands:
        line = next(x for x in text.splitlines() if c.id in x)
        assert line.startswith(f"ORPHAN decision seq {seq} ds default/web: create_pod {c.id} node {c.node}")
        assert line.endswith("age 6m40s: never sent"), line
    assert "2 orphans" in text and "all match" in text

    # the same through the real CLI: exit 1, the orphans named; -o json carries the same verdict
    cli = await asyncio.to_thread(dsctl, nats_server, "replay", "verify")
    assert cli.returncode == 1, cli.stderr
    orphan_lines = [x for x in cli.stdout.splitlines() if x.startswith("ORPHAN")]
    assert len(orphan_lines) == 2 and all(
        f"decision seq {seq} " in x and "never sent" in x for x in orphan_lines
    )
    assert {c.node for c in decision.commands} == {x.split(" node ")[1].split()[0] for x in orphan_lines}
    cli = await asyncio.to_thread(dsctl, nats_server, "replay", "verify", "-o", "json")
    body = json.loads(cli.stdout)
    assert cli.returncode == 1 and body["ok"] is False
    assert sorted(o["command_id"] for o in body["orphans"]) == sorted(c.id for c in decision.commands)


async def test_inside_its_window_a_command_is_in_flight_not_an_orphan(
    jetstream_store: JetStreamEventStore, nc: Any, nats_server: TestServer
) -> None:
    await setup(jetstream_store, "n1", "n2")
    _, decision = await record_decision(jetstream_store, T0 + 1)
    await later_event(jetstream_store, T0 + 100)
    report = await verify(jetstream_store, nc=nc)
    assert report.orphans == [] and not report.failed
    assert sorted(e.command_id for e in report.in_flight) == sorted(c.id for c in decision.commands)
    assert all(e.reason == "in flight, not sent yet" for e in report.in_flight)
    code, text = printed(report)
    assert code == 0 and text.count("IN FLIGHT decision seq") == 2, text
    # judged at the log's end, not the wall clock (months later); --now asks about another instant
    cli = await asyncio.to_thread(dsctl, nats_server, "replay", "verify")
    assert cli.returncode == 0 and "2 in flight" in cli.stdout, cli.stdout + cli.stderr
    cli = await asyncio.to_thread(dsctl, nats_server, "replay", "verify", "--now", at(T0 + 400).isoformat())
    assert cli.returncode == 1 and cli.stdout.count("ORPHAN") == 2, cli.stdout + cli.stderr
    assert (await asyncio.to_thread(dsctl, nats_server, "replay", "verify", "--now", "now")).returncode == 1


async def test_sent_but_never_answered_and_answered_commands(
    jetstream_store: JetStreamEventStore, nc: Any
) -> None:
    await setup(jetstream_store, "n1", "n2", "n3")
    seq, decision = await record_decision(jetstream_store, T0 + 1)
    creates = sorted((c for c in decision.commands if isinstance(c, CreatePod)), key=lambda c: c.node)
    assert [c.node for c in creates] == ["n1", "n2", "n3"]
    for c in creates[:2]:
        await send(nc, c, seq)
    await answer(jetstream_store, creates[0], T0 + 2)
    await later_event(jetstream_store, T0 + 1000)
    report = await verify(jetstream_store, nc=nc)
    assert report.answered == 1 and report.answered_late == 0
    assert {e.node: e.reason for e in report.orphans} == {"n2": "sent, never answered", "n3": "never sent"}
    assert report.failed


async def test_an_expired_command_superseded_by_a_later_decision_for_its_node_is_not_an_orphan(
    jetstream_store: JetStreamEventStore, nc: Any
) -> None:
    await setup(jetstream_store, "n1", "n2")
    _, first = await record_decision(jetstream_store, T0 + 1)
    # before expiry the core waits for them: nothing new is decided for these nodes
    await later_event(jetstream_store, T0 + 200)
    # after expiry (by the decision's own clock) it stops waiting and creates again on both nodes
    second_seq, second = await record_decision(jetstream_store, T0 + 302)
    assert {c.node for c in second.commands} == {"n1", "n2"}
    assert not {c.id for c in first.commands} & {c.id for c in second.commands}
    report = await verify(jetstream_store, nc=nc)
    assert report.mismatches == [] and report.orphans == []
    assert {(e.command_id, e.superseded_by) for e in report.superseded} == {
        (c.id, second_seq) for c in first.commands
    }
    assert all(
        e.reason.startswith(f"expired unanswered, superseded by decision seq {second_seq}")
        for e in report.superseded
    )
    assert sorted(e.command_id for e in report.in_flight) == sorted(c.id for c in second.commands)
    # the new ones answered, much later: still no orphan, and the superseded ones stay listed
    for c in second.commands:
        assert isinstance(c, CreatePod)
        await answer(jetstream_store, c, T0 + 310)
    await later_event(jetstream_store, T0 + 5000)
    report = await verify(jetstream_store, nc=nc)
    assert report.answered == 2 and report.in_flight == [] and report.orphans == [] and not report.failed
    assert len(report.superseded) == 2
    code, text = printed(report)
    assert code == 0 and text.count("SUPERSEDED decision seq") == 2, text


async def test_an_expired_command_whose_node_no_later_decision_addressed_is_an_orphan(
    jetstream_store: JetStreamEventStore, nc: Any
) -> None:
    # the later decision belongs to another DaemonSet: it says nothing about web's command
    await setup(jetstream_store, "n1")
    seq, _ = await record_decision(jetstream_store, T0 + 1)
    await Applier(jetstream_store, source="test", clock=lambda: T0 + 310).apply(WEB.replace("web", "logs"))
    later_seq, later = await record_decision(jetstream_store, T0 + 311, key="default/logs")
    assert [c.node for c in later.commands] == ["n1"]
    report = await verify(jetstream_store, nc=nc)
    assert [e.decision_seq for e in report.orphans] == [seq] and report.superseded == []
    assert [e.decision_seq for e in report.in_flight] == [later_seq]


async def test_a_malformed_record_on_a_decision_subject_is_tamper_evidence_listed_every_time(
    jetstream_store: JetStreamEventStore, nc: Any
) -> None:
    await setup(jetstream_store, "n1")
    _, decision = await record_decision(jetstream_store, T0 + 1)
    for c in decision.commands:
        assert isinstance(c, CreatePod)
        await answer(jetstream_store, c, T0 + 2)
    assert not (await verify(jetstream_store, nc=nc)).failed
    garbled = await jetstream_store.append_raw(
        "dse.decision.default.web", b'{"not": "a decision"}', msg_id="bad-1"
    )
    # well formed, but not a decision: only the engine writes on the decision tree
    stray = wrap(
        NodeLabelsChanged(name="n1", labels={}), id="stray", occurred_at=at(T0 + 3), source="mallory"
    )
    misplaced = await jetstream_store.append_raw("dse.decision.default.web", encode(stray), msg_id="stray")
    # and a malformed event elsewhere stays a skip, as in the projector
    skipped = await jetstream_store.append_raw("dse.node.n9.registered", b"{}", msg_id="bad-2")
    report = await verify(jetstream_store, nc=nc)
    assert [(f.seq, f.verdict) for f in report.tampered] == [
        (garbled.seq, "malformed"),
        (misplaced.seq, "misplaced"),
    ]
    assert [f.seq for f in report.malformed_decisions] == [garbled.seq, misplaced.seq]
    # listed, never skipped quietly; but the log can never lose them, so they do not fail every audit
    assert not report.failed and report.mismatches == [] and report.orphans == []
    assert skipped.seq in report.skipped_malformed
    code, text = printed(report)
    assert code == 0
    assert f"TAMPER seq {garbled.seq} (dse.decision.default.web): a record that does not decode" in text
    assert f"TAMPER seq {misplaced.seq}" in text and "node.labels_changed" in text
    assert "tamper evidence: 2 records no engine wrote on the decision tree; none was acted on" in text
    assert (
        f"skipped 1 malformed events outside the decision tree, as the projector does: [{skipped.seq}]"
        in text
    )


# --- a busy normal run ------------------------------------------------------------------------------

DS = """
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: {name}
spec:
  selector:
    matchLabels: {{app: {name}}}
  updateStrategy:
    type: RollingUpdate
    rollingUpdate: {{maxUnavailable: 2}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      {selector}
      containers:
      - name: c
        image: example/{name}:{version}
"""


@pytest.fixture
async def cluster(nc: Any, streams: Any) -> AsyncIterator[Cluster]:
    c = await Cluster(nc).start()
    try:
        yield c
    finally:
        await c.stop()


@pytest.mark.slow
async def test_after_a_busy_normal_run_every_command_is_answered(
    cluster: Cluster, nc: Any, nats_server: TestServer
) -> None:
    nodes = [f"n{i}" for i in range(6)]
    await cluster.apply(nodes_yaml(*nodes, labels={n: {"gpu": "true"} for n in nodes[:3]}))
    for name, selector in (("a", ""), ("b", ""), ("g", 'nodeSelector: {gpu: "true"}')):
        await cluster.apply(DS.format(name=name, version=1, selector=selector))
    await cluster.wait(
        "all placed", lambda s: len(running_nodes(s, "a")) == 6 and len(running_nodes(s, "g")) == 3
    )
    # a rollout, pod deletes, a node leaving, a label change, a DaemonSet deleted
    await cluster.apply(DS.format(name="a", version=2, selector=""))
    for pod in pods_of(cluster.state, "b")[:3]:
        await cluster.delete_pod(pod.name, pod.namespace)
    await cluster.nodes.remove("n5")
    await cluster.nodes.label("n3", {"gpu": "true"}, overwrite=True)
    await cluster.apply(nodes_yaml("n6"))
    await cluster.wait(
        "rolled out",
        lambda s: (
            len(running_nodes(s, "a")) == 6
            and all(p.revision_hash == s.daemonsets["default/a"].template_hash for p in pods_of(s, "a"))
            and len(running_nodes(s, "g")) == 4
            and len(running_nodes(s, "b")) == 6
        ),
        timeout=30,
    )
    await delete_daemonset(cluster.store, "b", "default", "background", io.StringIO())
    await cluster.wait(
        "b's pods deleted, quiet", lambda s: not pods_of(s, "b") and not s.in_flight, timeout=30
    )
    report = await verify(cluster.store, nc=nc)
    assert report.mismatches == [] and report.malformed_decisions == []
    assert report.orphans == [] and report.in_flight == [] and report.superseded == []
    assert report.commands >= 30 and report.answered + report.resolved_otherwise == report.commands, report
    cli = await asyncio.to_thread(dsctl, nats_server, "replay", "verify")
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert "all match" in cli.stdout and "0 orphans" in cli.stdout and "ORPHAN" not in cli.stdout


async def test_late_answers_and_a_removed_node_count_as_answered_as_in_the_fold(
    jetstream_store: JetStreamEventStore, nc: Any
) -> None:
    await setup(jetstream_store, "n1", "n2")
    _, decision = await record_decision(jetstream_store, T0 + 1)
    by_node = {c.node: c for c in decision.commands if isinstance(c, CreatePod)}
    await answer(jetstream_store, by_node["n1"], T0 + 400)  # after its window: late, but answered
    removed = wrap(NodeRemoved(name="n2"), id="rm-n2", occurred_at=at(T0 + 500), source="test")
    await jetstream_store.append(removed)  # the fold drops the commands in flight for a removed node
    await later_event(jetstream_store, T0 + 2000)
    report = await verify(jetstream_store, nc=nc)
    assert (report.answered, report.answered_late, report.resolved_otherwise) == (1, 1, 1)
    assert report.orphans == [] and report.in_flight == [] and not report.failed
