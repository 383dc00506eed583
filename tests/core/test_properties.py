"""Properties of reconcile over random clusters and histories (hypothesis):

- it is deterministic and never changes the state it reads;
- a fresh DaemonSet needs one round: execute its commands, reconcile again, nothing more;
- from any history of node and DaemonSet changes it converges: one current pod on every node that
  should run one, none where a pod may not continue, at most one where it may stay (NoSchedule);
- a rolling update never has more than maxUnavailable nodes without an available pod, and a surge
  never more than maxSurge nodes with two pods.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.core.budgets import budgets
from engine.core.eligibility import evaluate, placement
from events.k8s import Taint
from events.types import NodeLabelsChanged, NodeTaintsChanged
from tests.core.world import KEY, World, ds_doc, on_delete, rolling, surge

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

NODE_NAMES = [f"n{i}" for i in range(6)]
node_labels = st.dictionaries(st.sampled_from(["gpu", "zone"]), st.sampled_from(["true", "a"]), max_size=2)
taint_lists = st.lists(
    st.builds(
        Taint,
        key=st.sampled_from(["dedicated", "node.kubernetes.io/not-ready"]),
        value=st.sampled_from(["", "user1"]),
        effect=st.sampled_from(["NoSchedule", "NoExecute", "PreferNoSchedule"]),
    ),
    max_size=2,
    unique_by=lambda t: (t.key, t.effect),
)
pod_specs = st.fixed_dictionaries(
    {},
    optional={
        "nodeSelector": st.sampled_from([{"gpu": "true"}, {"zone": "a"}]),
        "tolerations": st.sampled_from(
            [
                [{"key": "dedicated", "operator": "Exists"}],
                [{"key": "dedicated", "value": "user1", "effect": "NoSchedule"}],
            ]
        ),
        "hostNetwork": st.booleans(),
    },
)
strategies = st.sampled_from([rolling(1), rolling(2), rolling("50%"), surge(1), surge("30%"), on_delete()])


@st.composite
def daemonset_docs(draw: st.DrawFn) -> dict[str, Any]:
    return ds_doc(
        image=draw(st.sampled_from(["v1", "v2", "v3"])),
        strategy=draw(strategies),
        pod_spec=draw(pod_specs),
    )


@st.composite
def worlds(draw: st.DrawFn) -> World:
    """A cluster in some random, possibly messy, state: nodes, a DaemonSet, and pods of any kind."""
    w = World()
    for name in draw(st.lists(st.sampled_from(NODE_NAMES), unique=True, max_size=6)):
        w.node(name, draw(node_labels), draw(taint_lists))
    w.apply(draw(daemonset_docs()))
    for node in draw(st.lists(st.sampled_from(NODE_NAMES), max_size=6)):
        if node not in w.state.nodes:
            continue
        phase = draw(st.sampled_from(["Running", "Running", "Pending", "Failed", "Succeeded"]))
        revision = draw(st.sampled_from([None, "old"]))
        ready = draw(st.booleans())
        pod = w.pod(node, phase=phase, ready=ready, revision=revision)
        if draw(st.booleans()):
            w.tick(draw(st.sampled_from([0.5, 3.0])))
        if draw(st.integers(0, 5)) == 0:
            w.terminating(pod)
    return w


@SETTINGS
@given(worlds())
def test_reconcile_is_deterministic_and_pure(w: World) -> None:
    first = w.reconcile()
    assert w.reconcile() == first


@SETTINGS
@given(st.lists(st.tuples(node_labels, taint_lists), max_size=8), daemonset_docs())
def test_fresh_daemonset_needs_one_round(
    nodes: list[tuple[dict[str, str], list[Taint]]], doc: dict[str, Any]
) -> None:
    w = World()
    for i, (labels, taints) in enumerate(nodes):
        w.node(f"node-{i}", labels, taints)
    w.apply(doc)
    w.execute(w.reconcile())
    again = w.reconcile()
    assert again.decision is None or again.decision.commands == ()


def converge(w: World, rounds: int = 200) -> None:
    for _ in range(rounds):
        result = w.step()
        if result.decision is not None and result.decision.commands:
            continue
        if result.requeue_after is not None and any(p.terminal for p in w.state.pods.values()):
            w.tick(result.requeue_after)
            continue
        return
    raise AssertionError("did not converge")


def assert_one_pod_per_eligible_node(w: World, *, current: bool) -> None:
    ds = w.ds(KEY)
    where = placement(ds.spec.template)
    for name, node in w.state.nodes.items():
        e = evaluate(where, node)
        pods = [p for p in w.pods_on(name) if p.deletion_timestamp is None]
        if e.should_run:
            assert len(pods) == 1, (name, e, pods)
            assert pods[0].phase == "Running"
            if current:
                assert pods[0].revision_hash == ds.template_hash
        elif not e.should_continue_running:
            assert pods == [], (name, e)
        else:
            assert len(pods) <= 1


history_steps = st.one_of(
    st.tuples(st.just("add"), st.sampled_from(NODE_NAMES), node_labels, taint_lists),
    st.tuples(st.just("remove"), st.sampled_from(NODE_NAMES)),
    st.tuples(st.just("label"), st.sampled_from(NODE_NAMES), node_labels),
    st.tuples(st.just("taint"), st.sampled_from(NODE_NAMES), taint_lists),
    st.tuples(st.just("apply"), daemonset_docs()),
    st.tuples(st.just("fail"), st.sampled_from(NODE_NAMES)),
    st.tuples(st.just("kill"), st.sampled_from(NODE_NAMES)),
    st.tuples(st.just("reconcile"), st.integers(1, 3)),
    st.tuples(st.just("lag")),
    st.tuples(st.just("deliver")),
)


def play(w: World, step: tuple[Any, ...], lagging: list[Any]) -> None:
    """One history step; ``lag`` records a decision whose commands the executors carry out only at a
    later ``deliver`` (commands in flight meanwhile)."""
    kind = step[0]
    name = step[1] if len(step) > 1 and isinstance(step[1], str) else ""
    node_exists = name in w.state.nodes
    if kind == "add":
        w.node(name, step[2], step[3])
    elif kind == "remove" and node_exists:
        w.remove_node(name)
    elif kind == "label" and node_exists:
        w.emit(NodeLabelsChanged(name=name, labels=step[2]))
    elif kind == "taint" and node_exists:
        w.emit(NodeTaintsChanged(name=name, taints=tuple(step[2])))
    elif kind == "apply":
        w.apply(step[1])
    elif kind in ("fail", "kill") and node_exists:
        for pod in w.pods_on(name):
            w.fail(pod) if kind == "fail" else w.gone(pod)
    elif kind == "reconcile":
        for _ in range(step[1]):
            w.step()
    elif kind == "lag":
        result = w.reconcile()
        w.record(result)
        lagging.extend(result.decision.commands if result.decision else ())
    elif kind == "deliver":
        deliver(w, lagging)
    w.tick(1.0)


def deliver(w: World, lagging: list[Any]) -> None:
    for command in lagging:
        if command.node in w.state.nodes:  # an executor of a removed node reports nothing
            w.carry_out(command)
    lagging.clear()


@SETTINGS
@given(daemonset_docs(), st.lists(history_steps, max_size=25))
def test_random_histories_converge_to_one_pod_per_eligible_node(
    doc: dict[str, Any], steps: list[tuple[Any, ...]]
) -> None:
    w = World()
    w.apply(doc)
    lagging: list[Any] = []
    for step in steps:
        play(w, step, lagging)
    deliver(w, lagging)
    converge(w)
    ds = w.ds(KEY)
    assert_one_pod_per_eligible_node(w, current=ds.spec.update_strategy.type == "RollingUpdate")
    last = w.reconcile()
    assert last.decision is None or last.decision.commands == ()


@SETTINGS
@given(
    st.integers(1, 10),
    st.sampled_from([1, 2, 3, "25%", "50%", "100%"]),
    st.lists(st.booleans(), min_size=1, max_size=30),
    st.integers(0, 3),
)
def test_rolling_update_never_exceeds_max_unavailable(
    count: int, max_unavailable: int | str, readiness: list[bool], min_ready: int
) -> None:
    w = World()
    w.nodes(count)
    w.apply(ds_doc(strategy=rolling(max_unavailable), min_ready=min_ready))
    converge(w)
    w.tick(min_ready + 1)
    w.apply(ds_doc(strategy=rolling(max_unavailable), min_ready=min_ready, image="v2"))
    _, budget = budgets(w.ds().spec, count)
    for i in range(4 * count + 8):
        result = w.reconcile()
        w.execute(result, ready=readiness[i % len(readiness)])
        unavailable = sum(1 for n in w.state.nodes if not _available(w, n, min_ready))
        assert unavailable <= budget
        w.tick(min_ready + 1)


def _available(w: World, node: str, min_ready: int) -> bool:
    return any(
        p.ready
        and p.deletion_timestamp is None
        and (min_ready == 0 or (p.ready_since or 0) + min_ready < w.now)
        for p in w.pods_on(node)
    )


@SETTINGS
@given(
    st.integers(1, 10),
    st.sampled_from([1, 2, "20%", "50%"]),
    st.lists(st.booleans(), min_size=1, max_size=30),
)
def test_surge_never_exceeds_max_surge_and_keeps_every_node_available(
    count: int, max_surge: int | str, readiness: list[bool]
) -> None:
    w = World()
    w.nodes(count)
    w.apply(ds_doc(strategy=surge(max_surge)))
    converge(w)
    w.apply(ds_doc(strategy=surge(max_surge), image="v2"))
    budget, _ = budgets(w.ds().spec, count)
    for i in range(4 * count + 8):
        result = w.reconcile()
        w.execute(result, ready=readiness[i % len(readiness)])
        doubled = sum(1 for n in w.state.nodes if len(w.pods_on(n)) > 1)
        assert doubled <= budget
        assert all(_available(w, n, 0) for n in w.state.nodes)
