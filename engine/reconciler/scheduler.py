"""When each DaemonSet key is reconciled, and how: a pure state machine the controller runs around.

    inputs                                   outputs
    ──────                                   ───────
    triggers      node_changed, pod_reported,   queue operations   Add(key, lane, urgent),
                  commands_answered,                               AddAfter(key, delay), CancelTimer(key)
                  daemonset_changed, lead,      the kind of        Scoped(nodes), Full(),
                  step_down                     reconcile          Yield(until, sent_through),
    starts        start_scoped, full_step                          CatchUp(seq), Skip()
    finishes      scoped_done, full_done, failed
    time          every input carries ``now`` (monotonic seconds); timers are AddAfter operations

Why a state machine: the scheduling state of a key (nodes changed since its last reconcile, a full
reconcile owed now or by a time, the decision it must read back, what it cost, which lane runs it)
used to live in nine controller fields changed from eight methods, with invariants nobody wrote down
(an urgent add cancels the queue's timer, so the deferred full reconcile had to be re-armed). Here
every consequence is in one place, as controller-runtime keeps its in one switch, and is tested as
tables with a fake clock (``tests/reconciler/test_scheduler.py``). It does no I/O and knows no asyncio:
the controller applies the operations to its two ``KeyQueue`` lanes, waits where a step says so, runs
the reconcile, and reports back.

The lanes (docs/design.md, "Two lanes"): ``Lane.NODES`` has several workers and runs node-scoped
reconciles (``reconcile_nodes``); ``Lane.FULL`` has one and runs full reconciles. Every timer goes
through the node lane: a key taken there with no node work owed is handed to the full lane.

The rules, in the order a key meets them:

- **A node fact** (joined, labelled, tainted): its node is owed a node-scoped reconcile at once
  (urgent: before fleet-wide work already queued); the key counts as node-scoped work pending until
  served, and full reconciles yield to that work (``SCOPED_FIRST``).
- **A pod report**: none while the DaemonSet has commands in flight (docs/upstream-semantics.md A.8:
  only status can change, and the answer to the last command triggers the next step), counting those
  of a decision recorded but not folded yet, and those of a full reconcile that was running when the
  report came (its status refresh is dropped when it recorded commands: at 50,000 pods every batch
  of creates was followed by a status-only full reconcile, half of all reconciles); a report after
  which the pod's node may need a command (failed, succeeded, deleted, evicted) makes that node owed,
  at once; any other report defers a full reconcile (``full_delay``), so a burst makes one.
- **A DaemonSet fact, a node removal, the answer to the last command in flight, becoming leader**: a
  full reconcile now, which covers whatever node-scoped work was owed.
- **A node-scoped reconcile** clears the nodes it serves and defers a full reconcile (status, rollout
  steps); one that was due already becomes owed now. One that cannot decide alone goes to the full lane.
- **A full reconcile** yields (twice, ``SCOPED_FIRST`` each) to pending node-scoped work and to the relay
  sending commands already recorded; a node of the key that changed meanwhile is served first. Then it
  clears everything owed for the key and cancels its timer (it sets its own requeue).
- **One lane at a time per key.** A start in one lane while the other runs the key is skipped and the
  key is queued on that lane again once the running reconcile finishes (no worker waits on a lock).
- **Read your writes.** After a decision at sequence S, the key is not reconciled again until the
  projection has folded S (``CatchUp``): else it would decide again from a state without its own
  commands (upstream's stale-cache duplicate pods, KEP-5647).
- **Decisions with commands** are looked at again when the commands would expire, should no answer
  come; a full reconcile waits for the last of them to be sent.
- **Timers after an add.** ``KeyQueue.add`` cancels the key's timer (an immediate add beats a timer),
  so the deferred full reconcile is armed again at every finish that leaves it owed: here, and only here.
- **Failures** retry per key with exponential backoff (``retry_delay(attempt)``), reset by a success;
  a conflict is retried at once the first time (re-read, then retry); a permanent error is not retried
  (the next trigger of the key tries again). Leadership lost is not a failure of a key: ``step_down``.
- **Leadership.** While not leading nothing is queued; finishes of reconciles that were running when
  leadership was lost queue nothing; ``lead`` forgets all but costs and owes every key a full reconcile.

Why under the reconciler and not engine/core, though it imports nothing from the shell: engine/core is
the DaemonSet semantics a replay recomputes; this is the service's own policy (lanes, the relay, the
lease), whose choices are never recorded and which may change freely without touching a decision.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable

import msgspec

from engine.core.expectations import EXPECTATIONS_TIMEOUT

#: the least a full reconcile that only refreshes status waits, so reports coalesce
STATUS_REFRESH = 0.2
#: the same while the DaemonSet has commands in flight (nothing but status can change then)
IN_FLIGHT_REFRESH = 0.5
#: the longest a full reconcile yields to pending node-scoped ones, per yield (two yields): so those
#: are never starved of the loop, and fulls are never starved by a stream of node events
SCOPED_FIRST = 0.2
#: how many times a full reconcile yields before it runs
YIELDS = 2
#: the least a full reconcile that takes a rollout a step further waits
FULL_FOLLOW_UP = 0.05
#: with no answer to its commands, a key is looked at again once they would have expired
COMMANDS_EXPIRE = EXPECTATIONS_TIMEOUT + 1.0


class Lane(enum.Enum):
    NODES = "nodes"  # node-scoped reconciles, several workers; every timer fires here
    FULL = "full"  # full reconciles, one at a time


class Pace(enum.Enum):
    """What the DaemonSet is doing, which sets how long a full reconcile of it may be deferred."""

    AT_REST = "at_rest"
    ROLLING = "rolling"  # fewer pods updated than desired: each full reconcile may take a step
    #: commands in flight: a reconcile can only recount status (docs/upstream-semantics.md A.8)
    IN_FLIGHT = "in_flight"


class Failure(enum.Enum):
    """Where a failed reconcile's error sits in ``events.errors``, which decides the retry."""

    TRANSIENT = "transient"  # backoff
    CONFLICT = "conflict"  # at once the first time, then backoff
    PERMANENT = "permanent"  # no retry


# --- outputs: queue operations -------------------------------------------------------------------


class Add(msgspec.Struct, frozen=True):
    """Queue ``key`` on ``lane`` (urgent: before the keys waiting; cancels the key's timer)."""

    key: str
    lane: Lane = Lane.NODES
    urgent: bool = False


class AddAfter(msgspec.Struct, frozen=True):
    """Queue ``key`` on the node lane in ``delay`` seconds (an earlier timer of the key wins)."""

    key: str
    delay: float


class CancelTimer(msgspec.Struct, frozen=True):
    key: str


Op = Add | AddAfter | CancelTimer


# --- outputs: what a start asks the lane to do ---------------------------------------------------


class Scoped(msgspec.Struct, frozen=True):
    """Reconcile the key for these nodes only (``reconcile_nodes``), then ``scoped_done``."""

    nodes: tuple[str, ...]


class Full(msgspec.Struct, frozen=True):
    """Reconcile the whole key (``reconcile``), then ``full_done``."""


class Yield(msgspec.Struct, frozen=True):
    """Defer the full reconcile until ``until`` at most: wait for pending node-scoped work and for the
    relay to have sent through ``sent_through``, then ask ``full_step`` again."""

    until: float
    sent_through: int


class CatchUp(msgspec.Struct, frozen=True):
    """Wait until the projection folded ``seq`` (the key's last decision), then ask again."""

    seq: int


class Skip(msgspec.Struct, frozen=True):
    """Nothing to run in this lane now (handed to the other lane, or queued again for later)."""


Step = Scoped | Full | Yield | CatchUp | Skip


class Outcome(msgspec.Struct, frozen=True):
    """What a reconcile recorded: the decision's sequence (0: none), its commands, the core's timer."""

    seq: int = 0
    commands: int = 0
    requeue_after: float | None = None


class KeyState(msgspec.Struct):
    """The scheduling state of one key (everything the controller used to keep in separate fields)."""

    #: nodes changed since the key's last reconcile: owed a node-scoped reconcile
    nodes: set[str] = msgspec.field(default_factory=set)
    #: a full reconcile is owed now and covers the node-scoped work (a DaemonSet fact, ...)
    full_now: bool = False
    #: a full reconcile is owed by then (status, rollout steps); node-scoped work goes on meanwhile
    full_due: float | None = None
    #: the lane running the key's reconcile, if any
    running: Lane | None = None
    #: lanes to queue the key on when that reconcile finishes (a start there found it running)
    rerun: set[Lane] = msgspec.field(default_factory=set)
    #: the key's last decision: not reconciled again until the projection folded it
    min_seq: int = 0
    #: times the full lane yielded for the key before running it
    yields: int = 0
    #: failed attempts in a row (for the backoff); a success resets it
    failures: int = 0
    #: the key's last decision that issued commands: until the projection folds it, its commands are
    #: in flight though the state does not show them yet
    commanded: int = 0


class Scheduler:
    def __init__(self, retry_delay: Callable[[int], float]) -> None:
        #: the pause after failed attempt number n of a key (``engine.runtime.retry.Backoff.delay``)
        self._retry_delay = retry_delay
        self.leading = False
        #: the last decision recorded with commands: full reconciles let the relay send it first
        self.commanded_seq = 0
        self._keys: dict[str, KeyState] = {}
        #: seconds a full reconcile of each key took lately (moving average); kept across leaderships
        self._cost: dict[str, float] = {}
        #: keys with node-scoped work (from node facts) not yet served
        self._scoped_pending: set[str] = set()
        self._ops: list[Op] = []

    # --- reading ------------------------------------------------------------------------------------

    def drain(self) -> list[Op]:
        """The queue operations decided since the last drain, in order."""
        ops, self._ops = self._ops, []
        return ops

    @property
    def scoped_idle(self) -> bool:
        """No node-scoped work from node facts is waiting (full reconciles let it go first)."""
        return not self._scoped_pending

    def state(self, key: str) -> KeyState:
        return self._keys.setdefault(key, KeyState())

    def full_delay(self, key: str, pace: Pace) -> float:
        """How long a full reconcile that is not urgent may wait, so a flood of pod reports (or of
        node joins, each followed by a full reconcile for status) makes one reconcile, not one each.

        A full reconcile walks every node and blocks the event loop while it does (30 ms at 5,000
        nodes), so the wait grows with what full reconciles of every DaemonSet cost together: they
        then take at most about a quarter of the engine's time, whatever the churn, and node events
        never queue behind them for long. A DaemonSet mid-rollout waits only for its own cost, so
        rollouts are not slowed by the rest of the fleet.
        """
        everyone = 4 * sum(self._cost.values())
        if pace is Pace.IN_FLIGHT:
            # a reconcile can only recount status (docs/upstream-semantics.md A.8); the answer to the
            # last command triggers the next step at once (commands_answered)
            return max(IN_FLIGHT_REFRESH, everyone)
        if pace is Pace.ROLLING:
            return max(FULL_FOLLOW_UP, 2 * self._cost.get(key, 0.0))
        return max(STATUS_REFRESH, everyone)

    # --- leadership -----------------------------------------------------------------------------------

    def lead(self, keys: Iterable[str], now: float) -> None:
        """Start leading: forget what the last leadership left (a full reconcile of every key covers
        it), keep what reconciles cost, and queue every key for a full reconcile."""
        self.leading = True
        self.commanded_seq = 0  # the relay starts again from its stored position
        self._keys.clear()
        self._scoped_pending.clear()
        self._ops.clear()
        for key in keys:
            self.state(key).full_due = now  # owed now, after any node-scoped work that comes first
            self._ops.append(Add(key))

    def step_down(self) -> None:
        """Leadership lost: queue nothing more; reconciles still running finish without effect."""
        self.leading = False
        self._keys.clear()
        self._scoped_pending.clear()
        self._ops.clear()

    # --- triggers (from the fold) -------------------------------------------------------------------

    def node_changed(self, key: str, node: str) -> None:
        """A node fact: reconcile just that node now (reconcile_nodes), the whole DaemonSet after."""
        if not self.leading:
            return
        self.state(key).nodes.add(node)
        self._scoped_pending.add(key)
        self._ops.append(Add(key, urgent=True))

    def pod_reported(
        self, key: str, node: str, *, acts: bool, pace: Pace, now: float, folded: int | None = None
    ) -> None:
        """A pod report; ``acts``: the pod failed, finished or went, so its node may need a command.
        ``folded``: the sequence the projection has folded (None: unknown)."""
        if not self.leading or pace is Pace.IN_FLIGHT:
            # commands in flight: nothing but status can change until they are answered
            # (docs/upstream-semantics.md A.8), and the answer to the last one triggers the next step
            # (commands_answered)
            return
        if folded is not None and self.state(key).commanded > folded:
            # the same, for commands recorded but not folded yet (the state does not show them)
            return
        if acts:
            self.state(key).nodes.add(node)
            self._ops.append(Add(key))
        else:
            # running, ready, ...: only status and rollout steps depend on it: one full reconcile,
            # soon, for a burst of them
            self._defer_full(key, pace, now)
            self._arm(key, now)

    def commands_answered(self, key: str) -> None:
        """The last command in flight is answered: the next batch or rollout step may be due now."""
        self._full_now(key)

    def daemonset_changed(self, key: str) -> None:
        """A DaemonSet fact, a node removal: the whole DaemonSet, at once."""
        self._full_now(key)

    # --- starts ---------------------------------------------------------------------------------------

    def start_scoped(self, key: str, now: float, folded: int, *, forward: bool = True) -> Step:
        """A node-lane worker took ``key``: serve its changed nodes, or hand it to the full lane
        (``forward=False``: the caller runs the full reconcile itself, as ``reconcile_key`` does)."""
        if not self.leading:
            return Skip()
        ks = self.state(key)
        if ks.running is Lane.FULL:
            ks.rerun.add(Lane.NODES)
            return Skip()
        if ks.nodes and not ks.full_now:
            if ks.min_seq > folded:
                return CatchUp(ks.min_seq)
            nodes = tuple(sorted(ks.nodes))
            ks.nodes.clear()
            ks.running = Lane.NODES
            return Scoped(nodes)
        # nothing node-scoped to do (a timer, a retry, a lead) or a full reconcile owed now covers it
        ks.nodes.clear()
        self._settle(key)
        if forward:
            self._ops.append(Add(key, Lane.FULL))
        return Skip() if forward else Full()

    def full_step(self, key: str, now: float, folded: int) -> Step:
        """The full lane took ``key`` (or is back from a Yield or a CatchUp): what next."""
        if not self.leading:
            return Skip()
        ks = self.state(key)
        if ks.yields < YIELDS:
            if ks.nodes and not ks.full_now:
                # a node of this DaemonSet changed meanwhile: serve that node first (node-scoped, in
                # the other lane); the full reconcile is owed and follows right after it
                ks.yields = 0
                self._ops.append(Add(key, urgent=True))
                return Skip()
            ks.yields += 1
            # node-scoped work goes first (briefly): it is what a joining node waits for; and the
            # commands recorded go out first: a full reconcile blocks the loop, sends included
            return Yield(until=now + SCOPED_FIRST, sent_through=self.commanded_seq)
        if ks.running is Lane.NODES:
            ks.rerun.add(Lane.FULL)
            return Skip()
        if ks.min_seq > folded:
            return CatchUp(ks.min_seq)
        ks.yields = 0
        ks.running = Lane.FULL
        ks.full_now = False
        ks.full_due = None
        ks.nodes.clear()
        self._ops.append(CancelTimer(key))  # this reconcile covers the key's timer; it sets its own
        return Full()

    # --- finishes -------------------------------------------------------------------------------------

    def scoped_done(self, key: str, now: float, outcome: Outcome | None, pace: Pace) -> None:
        """A node-scoped reconcile finished; ``outcome`` None: it could not decide alone."""
        ks = self.state(key)
        ks.running = None
        if not self.leading:
            return
        ks.failures = 0
        if outcome is None:
            self._ops.append(Add(key, Lane.FULL))
        else:
            self._recorded(key, outcome)
            if ks.full_now:
                pass  # a full reconcile is owed now already (queued on the full lane)
            elif ks.full_due is not None and now >= ks.full_due:
                self._full_now(key)  # the deferred one is overdue: right after this
            else:
                self._defer_full(key, pace, now)  # status, rollout and everything else, soon
        self._finished(key, now)

    def full_cost(self, key: str, seconds: float) -> None:
        """What a full reconcile of ``key`` just took (its decision not yet recorded)."""
        self._cost[key] = 0.7 * self._cost.get(key, seconds) + 0.3 * seconds

    def full_done(self, key: str, now: float, outcome: Outcome) -> None:
        ks = self.state(key)
        ks.running = None
        if not self.leading:
            return
        ks.failures = 0
        if outcome.commands and ks.full_due is not None and not ks.full_now:
            # reports folded while it ran owed a status refresh; its commands are in flight now, so
            # that refresh could only recount status, and the answer to the last command brings the
            # next full reconcile anyway (as ``pod_reported`` while commands are in flight)
            ks.full_due = None
            self._ops.append(CancelTimer(key))
        self._recorded(key, outcome)
        self._finished(key, now)

    def failed(self, key: str, lane: Lane, now: float, failure: Failure) -> None:
        """A start or a reconcile of ``key`` raised (leadership lost excepted: ``step_down``)."""
        ks = self.state(key)
        if ks.running is lane:
            ks.running = None
        ks.yields = 0
        if not self.leading:
            return
        if failure is Failure.PERMANENT:
            ks.failures = 0  # not retried: the key's next trigger reconciles it again
        else:
            ks.failures += 1
            if failure is Failure.CONFLICT and ks.failures == 1:
                self._ops.append(Add(key))  # re-read and retry, now
            else:
                self._ops.append(AddAfter(key, self._retry_delay(ks.failures)))
        self._finished(key, now)

    # --- the rules shared by several inputs ---------------------------------------------------------

    def _full_now(self, key: str) -> None:
        if not self.leading:
            return
        self.state(key).full_now = True
        self._ops.append(Add(key, Lane.FULL))

    def _defer_full(self, key: str, pace: Pace, now: float) -> None:
        """Owe a full reconcile of ``key`` by a time (kept if one is owed already: never postponed)."""
        ks = self.state(key)
        if ks.full_due is None:
            ks.full_due = now + self.full_delay(key, pace)

    def _recorded(self, key: str, outcome: Outcome) -> None:
        ks = self.state(key)
        if outcome.seq:
            ks.min_seq = outcome.seq
        if outcome.commands:
            ks.commanded = max(ks.commanded, outcome.seq)
            # should no answer ever come, look again when the commands expire
            self._ops.append(AddAfter(key, COMMANDS_EXPIRE))
            self.commanded_seq = max(self.commanded_seq, outcome.seq)
        if outcome.requeue_after is not None:
            self._ops.append(AddAfter(key, outcome.requeue_after))

    def _finished(self, key: str, now: float) -> None:
        """Every finish: queue the key where a start found it running, re-arm the owed full reconcile
        (an Add cancels the key's timer), and settle its node-scoped work."""
        ks = self.state(key)
        for lane in sorted(ks.rerun, key=lambda lane: lane.value):
            self._ops.append(Add(key, lane, urgent=lane is Lane.NODES))
        ks.rerun.clear()
        self._arm(key, now)
        self._settle(key)

    def _arm(self, key: str, now: float) -> None:
        """Arm the key's timer for the full reconcile it owes by a time, if it owes one."""
        ks = self.state(key)
        if ks.full_due is not None and not ks.full_now:
            self._ops.append(AddAfter(key, max(0.0, ks.full_due - now)))

    def _settle(self, key: str) -> None:
        if key in self._scoped_pending and not self.state(key).nodes:
            self._scoped_pending.discard(key)
