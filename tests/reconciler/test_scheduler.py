"""The scheduler as tables: each row is (time, input, the queue operations it answers with, its answer).

A fake clock is the first column; the inputs are what the controller feeds the scheduler (triggers
from the fold, starts in a lane, finishes, failures, leadership). Reading a table top to bottom is
reading what happens to a key, with every queue operation the controller would carry out.
"""

from __future__ import annotations

import ast
import pathlib
from collections.abc import Callable
from typing import Any, NamedTuple

import msgspec
import pytest

from engine.reconciler import scheduler as scheduler_module
from engine.reconciler.scheduler import (
    COMMANDS_EXPIRE,
    FULL_FOLLOW_UP,
    IN_FLIGHT_REFRESH,
    SCOPED_FIRST,
    STATUS_REFRESH,
    Add,
    AddAfter,
    CancelTimer,
    CatchUp,
    Failure,
    Full,
    Lane,
    Op,
    Outcome,
    Pace,
    Scheduler,
    Scoped,
    Skip,
    Yield,
)

FULL = Lane.FULL
NOTHING = Outcome()  # a reconcile that recorded no decision
Input = Callable[[Scheduler, float], Any]


class Row(NamedTuple):
    at: float
    input: Input
    ops: list[Op] = []
    answer: Any = None


# --- the inputs, as table cells -------------------------------------------------------------------


def lead(*keys: str) -> Input:
    return lambda s, now: s.lead(keys, now)


def step_down() -> Input:
    return lambda s, now: s.step_down()


def node(key: str, name: str) -> Input:
    return lambda s, now: s.node_changed(key, name)


def report(
    key: str, name: str, *, acts: bool = False, pace: Pace = Pace.AT_REST, folded: int | None = None
) -> Input:
    return lambda s, now: s.pod_reported(key, name, acts=acts, pace=pace, now=now, folded=folded)


def answered(key: str) -> Input:
    return lambda s, now: s.commands_answered(key)


def ds_changed(key: str) -> Input:
    return lambda s, now: s.daemonset_changed(key)


def start_scoped(key: str, folded: int = 0) -> Input:
    return lambda s, now: s.start_scoped(key, now, folded)


def full_step(key: str, folded: int = 0) -> Input:
    return lambda s, now: s.full_step(key, now, folded)


def scoped_done(key: str, outcome: Outcome | None = NOTHING, pace: Pace = Pace.AT_REST) -> Input:
    return lambda s, now: s.scoped_done(key, now, outcome, pace)


def full_done(key: str, outcome: Outcome = NOTHING, cost: float | None = None) -> Input:
    def run(s: Scheduler, now: float) -> None:
        if cost is not None:
            s.full_cost(key, cost)
        s.full_done(key, now, outcome)

    return run


def failed(key: str, lane: Lane, failure: Failure) -> Input:
    return lambda s, now: s.failed(key, lane, now, failure)


def idle() -> Input:
    return lambda s, now: s.scoped_idle


def settled(*keys: str, cost: float = 0.01) -> list[Row]:
    """Leading, each key's first full reconcile done (cost ``cost``), nothing owed."""
    rows = [Row(0.0, lead(*keys), [Add(key) for key in keys])]
    for key in keys:
        rows += [
            Row(0.0, start_scoped(key), [Add(key, FULL)], Skip()),
            Row(0.0, full_step(key), [], Yield(until=SCOPED_FIRST, sent_through=0)),
            Row(0.0, full_step(key), [], Yield(until=SCOPED_FIRST, sent_through=0)),
            Row(0.0, full_step(key), [CancelTimer(key)], Full()),
            Row(0.0, full_done(key, cost=cost)),
        ]
    return rows


def _rounded(value: Any) -> Any:
    """Float noise off (1.3 - 1.1 is not 0.2): delays and deadlines compared to the microsecond."""
    if isinstance(value, AddAfter):
        return msgspec.structs.replace(value, delay=round(value.delay, 6))
    if isinstance(value, Yield):
        return msgspec.structs.replace(value, until=round(value.until, 6))
    return value


def play(rows: list[Row], retry_delay: Callable[[int], float] = lambda n: 2.0**n) -> None:
    s = Scheduler(retry_delay=retry_delay)
    for i, row in enumerate(rows):
        answer = row.input(s, row.at)
        got = ([_rounded(op) for op in s.drain()], _rounded(answer))
        want = ([_rounded(op) for op in row.ops], _rounded(row.answer))
        assert got == want, f"row {i} (t={row.at})"


# --- the tables -----------------------------------------------------------------------------------

A_NODE_EVENT_WHILE_A_FULL_RECONCILE_IS_DUE = [
    *settled("ds"),
    # a pod turned ready: status only, a full reconcile owed by 1.2
    Row(1.0, report("ds", "n1"), [AddAfter("ds", STATUS_REFRESH)]),
    # a node joins: served at once, ahead of everything queued (the add cancels the queue's timer)
    Row(1.1, node("ds", "n2"), [Add("ds", urgent=True)]),
    Row(1.1, idle(), answer=False),
    Row(1.1, start_scoped("ds"), answer=Scoped(("n2",))),
    # done before the full reconcile is due: its timer is armed again, for the same 1.2
    Row(1.15, scoped_done("ds", Outcome(seq=7)), [AddAfter("ds", 0.05)]),
    Row(1.15, idle(), answer=True),
    # another node, served after the full reconcile was due: the full one follows at once
    Row(1.3, node("ds", "n3"), [Add("ds", urgent=True)]),
    Row(1.3, start_scoped("ds", folded=6), answer=CatchUp(7)),  # read your writes first
    Row(1.3, start_scoped("ds", folded=7), answer=Scoped(("n3",))),
    Row(1.31, scoped_done("ds", Outcome(seq=8)), [Add("ds", FULL)]),
    Row(1.31, full_step("ds", folded=8), [], Yield(until=1.51, sent_through=0)),
    # a node joining while the full one yields goes first all the same: the full one is owed now
    # and covers it, so it is not handed back
    Row(1.32, node("ds", "n4"), [Add("ds", urgent=True)]),
    Row(1.32, full_step("ds", folded=8), [], Yield(until=1.52, sent_through=0)),
    Row(1.33, start_scoped("ds", folded=8), [Add("ds", FULL)], Skip()),
    Row(1.4, full_step("ds", folded=8), [CancelTimer("ds")], Full()),
    Row(1.45, full_done("ds", Outcome(seq=9))),
]

A_DEFERRED_FULL_RECONCILE_HANDS_A_CHANGED_NODE_BACK = [
    *settled("ds"),
    Row(1.0, report("ds", "n1"), [AddAfter("ds", STATUS_REFRESH)]),
    # the timer fires: the node lane has no node work, so the full lane gets the key
    Row(1.2, start_scoped("ds"), [Add("ds", FULL)], Skip()),
    Row(1.2, full_step("ds"), [], Yield(until=1.4, sent_through=0)),
    # a node joins while it yields: that node is served first, in the node lane
    Row(1.25, node("ds", "n2"), [Add("ds", urgent=True)]),
    Row(1.25, full_step("ds"), [Add("ds", urgent=True)], Skip()),
    Row(1.25, start_scoped("ds"), answer=Scoped(("n2",))),
    # the deferred full reconcile was due at 1.2: it follows right after, and yields afresh
    Row(1.26, scoped_done("ds", Outcome(seq=4)), [Add("ds", FULL)]),
    Row(1.26, full_step("ds", folded=4), [], Yield(until=1.46, sent_through=0)),
]

A_BURST_OF_POD_REPORTS = [
    *settled("ds", cost=0.1),  # full reconciles of the fleet cost 0.1 s: defer by 4 x that
    Row(1.0, report("ds", "n1"), [AddAfter("ds", 0.4)]),
    Row(1.1, report("ds", "n2"), [AddAfter("ds", 0.3)]),  # the same deadline, 1.4: one reconcile
    Row(1.2, report("ds", "n3"), [AddAfter("ds", 0.2)]),
    # a pod failed: its node may need a command now (not urgent: a node fact would be)
    Row(1.25, report("ds", "n4", acts=True), [Add("ds")]),
    Row(1.25, idle(), answer=True),  # pod reports do not hold full reconciles back
    Row(1.25, start_scoped("ds"), answer=Scoped(("n4",))),
    Row(1.3, scoped_done("ds", Outcome(seq=3)), [AddAfter("ds", 0.1)]),  # still 1.4
    Row(1.4, start_scoped("ds", folded=3), [Add("ds", FULL)], Skip()),
    Row(1.4, full_step("ds", folded=3), [], Yield(until=1.6, sent_through=0)),
    Row(1.4, full_step("ds", folded=3), [], Yield(until=1.6, sent_through=0)),
    Row(1.4, full_step("ds", folded=3), [CancelTimer("ds")], Full()),
    # reports during the full reconcile owe the next one (nothing is lost, nothing postponed)
    Row(1.45, report("ds", "n5"), [AddAfter("ds", 0.4)]),
    Row(1.5, full_done("ds", Outcome(seq=5), cost=0.1), [AddAfter("ds", 0.35)]),
]

AN_URGENT_KEY_RE_ADDED_WHILE_IN_PROGRESS = [
    *settled("ds"),
    Row(1.0, node("ds", "n1"), [Add("ds", urgent=True)]),
    Row(1.0, start_scoped("ds"), answer=Scoped(("n1",))),
    # another node of the key while its node-scoped reconcile runs: queued again (the queue keeps
    # the urgency for the re-add after the run), not served by this run
    Row(1.01, node("ds", "n2"), [Add("ds", urgent=True)]),
    # the full lane takes the key meanwhile (a timer): after its yields it finds the key running in
    # the other lane, and leaves it, to be queued again when that run ends; no worker waits
    Row(1.02, ds_changed("ds"), [Add("ds", FULL)]),
    Row(1.02, full_step("ds"), [], Yield(until=1.22, sent_through=0)),
    Row(1.02, full_step("ds"), [], Yield(until=1.22, sent_through=0)),
    Row(1.03, full_step("ds"), [], Skip()),
    Row(1.04, scoped_done("ds", Outcome(seq=3)), [Add("ds", FULL)]),
    # the node lane's re-add sees the full reconcile owed: it covers n2
    Row(1.04, start_scoped("ds", folded=3), [Add("ds", FULL)], Skip()),
    Row(1.05, full_step("ds", folded=3), [CancelTimer("ds")], Full()),
    # and the other way round: a node joins while the full reconcile runs
    Row(1.06, node("ds", "n3"), [Add("ds", urgent=True)]),
    Row(1.06, start_scoped("ds", folded=3), answer=Skip()),
    Row(1.08, full_done("ds", Outcome(seq=4)), [Add("ds", urgent=True)]),
    Row(1.08, start_scoped("ds", folded=4), answer=Scoped(("n3",))),
]

COMMANDS_IN_FLIGHT = [
    *settled("ds"),
    Row(1.0, node("ds", "n1"), [Add("ds", urgent=True)]),
    Row(1.0, start_scoped("ds"), answer=Scoped(("n1",))),
    # a create recorded at 12: looked at again when it would expire, a full reconcile soon
    Row(
        1.01,
        scoped_done("ds", Outcome(seq=12, commands=1)),
        [AddAfter("ds", COMMANDS_EXPIRE), AddAfter("ds", STATUS_REFRESH)],
    ),
    # reports while commands are in flight change nothing but status (docs/upstream-semantics.md
    # A.8): nothing queued
    Row(1.05, report("ds", "n1", pace=Pace.IN_FLIGHT)),
    Row(1.05, report("ds", "n2", acts=True, pace=Pace.IN_FLIGHT)),
    # the full reconcile comes due: it lets the relay send through 12 first
    Row(1.21, start_scoped("ds", folded=12), [Add("ds", FULL)], Skip()),
    Row(1.21, full_step("ds", folded=12), [], Yield(until=1.41, sent_through=12)),
    Row(1.22, full_step("ds", folded=12), [], Yield(until=1.42, sent_through=12)),
    Row(1.23, full_step("ds", folded=12), [CancelTimer("ds")], Full()),
    Row(1.25, full_done("ds", Outcome(seq=13, requeue_after=3.0)), [AddAfter("ds", 3.0)]),
    # the answer to the last command: the next step, a full reconcile now
    Row(1.3, answered("ds"), [Add("ds", FULL)]),
    Row(1.3, full_step("ds", folded=12), [], Yield(until=1.5, sent_through=12)),
    Row(1.3, full_step("ds", folded=12), [], Yield(until=1.5, sent_through=12)),
    Row(1.31, full_step("ds", folded=12), answer=CatchUp(13)),
    Row(1.32, full_step("ds", folded=13), [CancelTimer("ds")], Full()),
]

A_BATCH_OF_CREATES_IS_NOT_FOLLOWED_BY_A_STATUS_RECONCILE = [
    *settled("ds"),
    Row(1.0, answered("ds"), [Add("ds", FULL)]),
    Row(1.0, full_step("ds"), [], Yield(until=1.2, sent_through=0)),
    Row(1.0, full_step("ds"), [], Yield(until=1.2, sent_through=0)),
    Row(1.0, full_step("ds"), [CancelTimer("ds")], Full()),
    # the last batch's pods turn ready while the next batch is decided: a status refresh is owed...
    Row(1.01, report("ds", "n1", pace=Pace.ROLLING, folded=10), [AddAfter("ds", FULL_FOLLOW_UP)]),
    # ...until the reconcile records commands: in flight, only status could change
    # (docs/upstream-semantics.md A.8)
    Row(
        1.03,
        full_done("ds", Outcome(seq=12, commands=250)),
        [CancelTimer("ds"), AddAfter("ds", COMMANDS_EXPIRE)],
    ),
    # recorded, not folded yet: the state shows no command in flight, the scheduler knows better
    Row(1.04, report("ds", "n2", pace=Pace.ROLLING, folded=11)),
    Row(1.04, report("ds", "n3", acts=True, pace=Pace.ROLLING, folded=11)),
    Row(1.05, report("ds", "n4", pace=Pace.IN_FLIGHT, folded=12)),
    # the answer to the last command brings the next batch
    Row(2.0, answered("ds"), [Add("ds", FULL)]),
    # with no commands recorded, a report while it ran still owes the refresh
    Row(2.0, full_step("ds", folded=12), [], Yield(until=2.2, sent_through=12)),
    Row(2.0, full_step("ds", folded=12), [], Yield(until=2.2, sent_through=12)),
    Row(2.0, full_step("ds", folded=12), [CancelTimer("ds")], Full()),
    Row(2.01, report("ds", "n5", pace=Pace.ROLLING, folded=13), [AddAfter("ds", FULL_FOLLOW_UP)]),
    Row(2.03, full_done("ds", Outcome(seq=14)), [AddAfter("ds", 0.03)]),
]

LEADERSHIP_LOST_MID_RECONCILE = [
    Row(0.0, lead("a", "b"), [Add("a"), Add("b")]),
    Row(0.0, start_scoped("a"), [Add("a", FULL)], Skip()),
    Row(0.1, node("b", "n1"), [Add("b", urgent=True)]),
    Row(0.1, start_scoped("b"), answer=Scoped(("n1",))),
    Row(0.1, full_step("a"), [], Yield(until=0.3, sent_through=0)),
    Row(0.2, step_down()),
    Row(0.2, idle(), answer=True),  # nobody waits for work that will not be done
    # the decision that was being appended finishes after all: nothing follows from it
    Row(0.3, scoped_done("b", Outcome(seq=5, commands=2))),
    Row(0.3, full_step("a"), answer=Skip()),
    Row(0.4, node("b", "n2")),
    Row(0.4, report("b", "n2", acts=True)),
    Row(0.4, ds_changed("a")),
    Row(0.4, answered("a")),
    Row(0.4, failed("a", FULL, Failure.TRANSIENT)),
    # leading again: every key is owed a full reconcile; what the last leadership owed is forgotten
    Row(5.0, lead("a", "b"), [Add("a"), Add("b")]),
    Row(5.0, start_scoped("b"), [Add("b", FULL)], Skip()),
    Row(5.0, full_step("b"), [], Yield(until=5.2, sent_through=0)),
]

RETRIES_BACK_OFF_PER_KEY = [
    *settled("ds", "other"),
    Row(1.0, failed("ds", FULL, Failure.TRANSIENT), [AddAfter("ds", 2.0)]),
    Row(3.0, failed("ds", FULL, Failure.TRANSIENT), [AddAfter("ds", 4.0)]),
    Row(3.0, failed("other", FULL, Failure.TRANSIENT), [AddAfter("other", 2.0)]),  # its own count
    Row(7.0, failed("ds", Lane.NODES, Failure.TRANSIENT), [AddAfter("ds", 8.0)]),
    # a success resets the count
    Row(15.0, start_scoped("ds"), [Add("ds", FULL)], Skip()),
    Row(15.0, full_step("ds"), [], Yield(until=15.2, sent_through=0)),
    Row(15.0, full_step("ds"), [], Yield(until=15.2, sent_through=0)),
    Row(15.0, full_step("ds"), [CancelTimer("ds")], Full()),
    Row(15.1, full_done("ds")),
    Row(16.0, failed("ds", FULL, Failure.TRANSIENT), [AddAfter("ds", 2.0)]),
    # a conflict: re-read and retry at once, the first time; then back off
    Row(20.0, failed("other", FULL, Failure.CONFLICT), [AddAfter("other", 4.0)]),
    Row(20.0, start_scoped("ds"), [Add("ds", FULL)], Skip()),
    Row(20.0, full_step("ds"), [], Yield(until=20.2, sent_through=0)),
    Row(20.0, full_step("ds"), [], Yield(until=20.2, sent_through=0)),
    Row(20.0, full_step("ds"), [CancelTimer("ds")], Full()),
    Row(20.1, full_done("ds")),
    Row(21.0, failed("ds", FULL, Failure.CONFLICT), [Add("ds")]),
    Row(21.0, failed("ds", FULL, Failure.CONFLICT), [AddAfter("ds", 4.0)]),
    # a permanent error: not retried (the key's next trigger reconciles it again)
    Row(30.0, failed("ds", FULL, Failure.PERMANENT)),
    # a failed node-scoped reconcile does not leave full reconciles waiting for it
    Row(31.0, node("ds", "n1"), [Add("ds", urgent=True)]),
    Row(31.0, start_scoped("ds"), answer=Scoped(("n1",))),
    Row(31.0, idle(), answer=False),
    Row(31.1, failed("ds", Lane.NODES, Failure.TRANSIENT), [AddAfter("ds", 2.0)]),
    Row(31.1, idle(), answer=True),
]

A_NODE_LANE_RESULT_THAT_NEEDS_THE_FULL_LANE = [
    *settled("ds"),
    Row(1.0, node("ds", "n1"), [Add("ds", urgent=True)]),
    Row(1.0, start_scoped("ds"), answer=Scoped(("n1",))),
    # reconcile_nodes could not decide alone (a pod to adopt, ...): the full lane
    Row(1.01, scoped_done("ds", None), [Add("ds", FULL)]),
    Row(1.01, idle(), answer=True),
]


@pytest.mark.parametrize(
    "rows",
    [
        pytest.param(A_NODE_EVENT_WHILE_A_FULL_RECONCILE_IS_DUE, id="node-event-while-full-due"),
        pytest.param(A_DEFERRED_FULL_RECONCILE_HANDS_A_CHANGED_NODE_BACK, id="full-hands-node-back"),
        pytest.param(A_BURST_OF_POD_REPORTS, id="burst-of-pod-reports"),
        pytest.param(AN_URGENT_KEY_RE_ADDED_WHILE_IN_PROGRESS, id="urgent-re-add-in-progress"),
        pytest.param(COMMANDS_IN_FLIGHT, id="commands-in-flight"),
        pytest.param(A_BATCH_OF_CREATES_IS_NOT_FOLLOWED_BY_A_STATUS_RECONCILE, id="batch-no-status-after"),
        pytest.param(LEADERSHIP_LOST_MID_RECONCILE, id="leadership-lost-mid-reconcile"),
        pytest.param(RETRIES_BACK_OFF_PER_KEY, id="retries-back-off-per-key"),
        pytest.param(A_NODE_LANE_RESULT_THAT_NEEDS_THE_FULL_LANE, id="scoped-needs-full"),
    ],
)
def test_table(rows: list[Row]) -> None:
    play(rows)


@pytest.mark.parametrize(
    ("pace", "own", "others", "delay"),
    [
        (Pace.AT_REST, 0.0, 0.0, STATUS_REFRESH),
        (Pace.AT_REST, 0.01, 0.2, 4 * 0.21),  # grows with what every full reconcile costs
        (Pace.ROLLING, 0.0, 0.0, FULL_FOLLOW_UP),
        (Pace.ROLLING, 0.1, 5.0, 0.2),  # a rollout waits for its own cost only
        (Pace.IN_FLIGHT, 0.0, 0.0, IN_FLIGHT_REFRESH),
        (Pace.IN_FLIGHT, 0.1, 0.1, 0.8),
    ],
)
def test_how_long_a_full_reconcile_may_be_deferred(
    pace: Pace, own: float, others: float, delay: float
) -> None:
    s = Scheduler(retry_delay=lambda n: 1.0)
    if own:
        s.full_cost("ds", own)
    if others:
        s.full_cost("other", others)
    assert s.full_delay("ds", pace) == pytest.approx(delay)


def test_the_scheduler_is_pure() -> None:
    # no asyncio, no I/O, nothing of the shell: what makes the tables above the whole story
    tree = ast.parse(pathlib.Path(scheduler_module.__file__).read_text())
    imported = {
        name
        for node in ast.walk(tree)
        for name in (
            [a.name for a in node.names]
            if isinstance(node, ast.Import)
            else [node.module or ""]
            if isinstance(node, ast.ImportFrom)
            else []
        )
    }
    allowed = {"__future__", "enum", "collections.abc", "msgspec"}
    assert {m for m in imported if not m.startswith("engine.core.")} <= allowed, imported
