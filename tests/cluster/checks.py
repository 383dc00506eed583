"""The promises every failover test checks after its disruption, in one place so each test states only
what it does to the cluster.

- **Acknowledged means kept**: every append the store acknowledged is in the log, with the same id at
  the same sequence (``AckLedger`` records them as they happen); every event that was in the log before
  the disruption is still there; no event id is stored twice.
- **Never two pods of one DaemonSet on a node**: the log is folded event by event, and after each fold
  no node has two live (neither terminating nor terminal) pods of one DaemonSet, whatever their
  revisions. Checked on the log rather than on an engine's live view, so every intermediate state
  counts, not the ones an observer happened to sample.
- **The rollout converged**, and a replay of the log agrees with the live view that it did.
- **``replay verify`` with its effects audit is clean**: no recomputed decision differs, no command is
  overdue, no malformed record sits on the decision tree.

Outcomes are collected as a list of problems, so a failing test names every broken promise at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from engine.cli.verify import VerifyReport, verify
from engine.store.embedded_cluster import EmbeddedCluster
from engine.store.jetstream_store import JetStreamEventStore
from engine.store.port import AppendResult
from events.envelope import Envelope
from events.errors import TransientError
from projections.fold import apply
from projections.model import ClusterState
from projections.replay import replay
from tests.e2e.harness import pods_of

#: every stream and bucket a rollout touches; a disruption is over once each has a leader and current peers
STREAMS = ("DSE_EVENTS", "DSE_COMMANDS", "KV_dse_leader", "KV_dse_node_leases")


class AckLedger:
    """Every append a store acknowledged, as (seq, message id): what the cluster promised to keep.

    Observes the store objects the engines, the executor, the applier and the node operations append
    through, by wrapping their append methods on the instance (behaviour unchanged)."""

    def __init__(self, *stores: JetStreamEventStore) -> None:
        self.acked: dict[int, str] = {}
        #: two different ids acknowledged at one sequence: the cluster gave a sequence away twice
        self.conflicts: list[tuple[int, str, str]] = []
        for store in stores:
            self.watch(store)

    def watch(self, store: JetStreamEventStore) -> None:
        for name in ("append", "append_many", "append_many_settled", "append_raw"):
            method = getattr(store, name, None)
            if method is not None:
                setattr(store, name, self._wrap(name, method))

    def _wrap(self, name: str, method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def recorded(*args: Any, **kwargs: Any) -> Any:
            result = await method(*args, **kwargs)
            if name == "append":
                self._note(result, args[0].id)
            elif name == "append_raw":
                self._note(result, kwargs.get("msg_id") or "")
            else:
                for envelope, outcome in zip(args[0], result, strict=True):
                    self._note(outcome, envelope.id)
            return result

        return recorded

    def _note(self, result: Any, msg_id: str) -> None:
        if isinstance(result, AppendResult):
            earlier = self.acked.get(result.seq)
            if earlier is not None and earlier != msg_id:
                self.conflicts.append((result.seq, earlier, msg_id))
            self.acked[result.seq] = msg_id


async def read_log(store: JetStreamEventStore, timeout: float = 30.0) -> list[tuple[int, Envelope]]:
    """The whole event log as it is now, in order. A read that meets a store still settling after a
    disruption (a TransientError) starts again, within ``timeout``."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                async with contextlib.aclosing(store.read()) as events:
                    return [(e.seq, e.envelope) async for e in events]
            except TransientError:
                await asyncio.sleep(0.2)


def rollout_done(state: ClusterState, ds_key: str, nodes: Iterable[str]) -> bool:
    """One pod of the DaemonSet per node, each on the current template, ready and not terminating."""
    ds_state = state.daemonsets.get(ds_key)
    if ds_state is None:
        return False
    namespace, _, name = ds_key.partition("/")
    pods = pods_of(state, name, namespace)
    return (
        sorted(p.node for p in pods) == sorted(nodes)
        and all(p.revision_hash == ds_state.template_hash and p.ready for p in pods)
        and all(p.deletion_timestamp is None for p in pods)
    )


def doubled_pods(log: list[tuple[int, Envelope]]) -> list[str]:
    """Every folded state in which a node had two live pods of one DaemonSet (revision-agnostic), as
    "seq N: node X runs a, b of ns/ds". Live: not terminating and not terminal."""
    state = ClusterState()
    found: list[str] = []
    for seq, envelope in log:
        apply(state, envelope, seq)
        live: dict[tuple[str, str], list[str]] = defaultdict(list)
        for pod in state.pods.values():
            if pod.owner_uid and pod.deletion_timestamp is None and not pod.terminal:
                live[(pod.node, f"{pod.namespace}/{pod.owner_name}")].append(pod.name)
        for (node, ds_key), names in sorted(live.items()):
            if len(names) > 1:
                found.append(f"seq {seq}: node {node} runs {', '.join(sorted(names))} of {ds_key}")
    return found


def verify_problems(report: VerifyReport) -> list[str]:
    problems = []
    if report.mismatches:
        problems.append(f"replay verify: {len(report.mismatches)} mismatches: {report.mismatches[:5]}")
    if report.orphans:
        problems.append(f"replay verify: {len(report.orphans)} overdue commands: {report.orphans[:5]}")
    if report.malformed_decisions:
        problems.append(f"replay verify: malformed decision records: {report.malformed_decisions[:5]}")
    return problems


async def wait_all_current(
    cluster: EmbeddedCluster, nc: Any, timeout: float, streams: Iterable[str] = STREAMS
) -> dict[str, str]:
    """Wait until every stream has a leader and all its peers are current; returns the leaders."""
    names = list(streams)
    leaders = await asyncio.gather(
        *(cluster.wait_for_stream_leader(n, timeout=timeout, all_current=True, nc=nc) for n in names)
    )
    return dict(zip(names, leaders, strict=True))


class Audit:
    """The after-the-fact checks of one scenario. ``before`` is the log as it was just before the
    disruption (its events must all survive)."""

    def __init__(self, ledger: AckLedger, before: dict[int, str]) -> None:
        self.ledger = ledger
        self.before = before
        self.problems: list[str] = []
        self.report: VerifyReport | None = None
        self.log: list[tuple[int, Envelope]] = []
        self.verify_seconds = 0.0

    async def run(
        self,
        store: JetStreamEventStore,
        nc: Any,
        *,
        ds_key: str,
        nodes: list[str],
        live_done: bool,
    ) -> list[str]:
        """Read the log through ``store`` and check every promise; returns (and keeps) the problems.
        ``live_done``: whether the live view saw the rollout complete (a replay must agree)."""
        self.log = log = await read_log(store)
        after = {seq: env.id for seq, env in log}
        lost_before = {seq: i for seq, i in self.before.items() if after.get(seq) != i}
        lost_acked = {seq: i for seq, i in self.ledger.acked.items() if after.get(seq) != i}
        if lost_before:
            self.problems.append(
                f"{len(lost_before)} events in the log before the disruption are gone or changed: "
                f"{dict(list(lost_before.items())[:10])}"
            )
        if lost_acked:
            self.problems.append(
                f"{len(lost_acked)} acknowledged appends are missing from the log (seq: id): "
                f"{dict(list(lost_acked.items())[:10])}"
            )
        if self.ledger.conflicts:
            self.problems.append(f"one sequence acknowledged for two ids: {self.ledger.conflicts[:5]}")
        doubled = sorted(i for i, n in Counter(after.values()).items() if n > 1)
        if doubled:
            self.problems.append(f"event ids stored twice (a retry not deduplicated): {doubled[:10]}")
        two = doubled_pods(log)
        if two:
            self.problems.append(f"{len(two)} folded states with two live pods on a node: {two[:5]}")
        if live_done and not rollout_done(replay(log), ds_key, nodes):
            self.problems.append(
                "the live state says the rollout completed, but a replay of the log does not"
            )
        started = time.monotonic()
        report = None
        async with asyncio.timeout(90):
            while report is None:
                try:  # a read meeting a cluster still settling after a restart starts again
                    report = await verify(store, nc=nc)
                except TransientError:
                    await asyncio.sleep(0.5)
        self.report = report
        self.verify_seconds = time.monotonic() - started
        self.problems.extend(verify_problems(report))
        return self.problems

    def summary(self) -> str:
        report = self.report
        checked = report.checked if report is not None else 0
        commands = report.commands if report is not None else 0
        return (
            f"acknowledged appends: {len(self.ledger.acked)}, log: {len(self.log)} events, "
            f"verify checked {checked} decisions and {commands} commands"
        )
