"""In-process scenarios (no NATS): ``fold`` (the pure fold rate) and ``scaling`` (the cost of one node
event and of one full reconcile as the fleet grows)."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

from engine.bench.common import Row, Target
from engine.bench.workload import T0, History, node_event, node_name
from engine.core.nodemap import EligibilityMemo
from engine.core.reconcile import reconcile, reconcile_nodes
from engine.core.triggers import PlacementCache, affected_keys, before
from engine.runtime.gc_tuning import tune_gc
from events.codec import decode, encode
from events.envelope import Envelope, wrap
from events.ids import stable_id
from events.types import NodeLabelsChanged
from projections.fold import apply
from projections.model import ClusterState

FOLD_TARGET = 500_000.0
DAEMONSETS = 10


def _best(fn: Callable[[], object], repeat: int, clock: Callable[[], float] = time.perf_counter) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = clock()
        fn()
        best = min(best, clock() - start)
    return best


async def fold(quick: bool) -> list[Row]:
    count = 30_000 if quick else 300_000
    envelopes = list(History(max(50, count // 40), DAEMONSETS).events(total=count))[:count]
    payloads = [encode(e) for e in envelopes]

    def fold_all() -> None:
        state = ClusterState()
        for seq, env in enumerate(envelopes, 1):
            apply(state, env, seq)

    def decode_all() -> None:
        for p in payloads:
            decode(p)

    repeat = 5  # best of: the machine is shared, and a slow run says nothing about the code
    # CPU seconds of this process: the fold and the decoder are pure code in one thread, and on a shared
    # machine the wall clock mostly measures the neighbours (equal to it on a quiet one)
    t_fold = _best(fold_all, repeat, time.process_time)
    t_decode = _best(decode_all, repeat, time.process_time)
    kinds: dict[str, int] = {}
    for e in envelopes:
        kinds[e.type] = kinds.get(e.type, 0) + 1
    mix = ", ".join(f"{k} {v * 100 // count}%" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])[:4])
    return [
        Row(
            "fold",
            f"projections.fold.apply, {count:,} decoded events ({mix})",
            count / t_fold,
            "ev/s",
            baseline=count / t_decode,
            baseline_label="events.codec.decode of the same events (the other half of a rebuild)",
            target=Target(">=", FOLD_TARGET),
            note=f"best of {repeat}, CPU time",
        )
    ]


def _converged(nodes: int) -> tuple[ClusterState, int]:
    state = ClusterState()
    seq = 0
    for seq, env in enumerate(History(nodes, DAEMONSETS).converge(), 1):
        apply(state, env, seq)
    return state, seq


def _fleet_scan(state: ClusterState) -> int:
    """The floor of any O(fleet) algorithm: look at every node and every pod once."""
    n = 0
    for node in state.nodes.values():
        if node.labels.get("kubernetes.io/os") == "linux":
            n += 1
    for pod in state.pods.values():
        if pod.ready:
            n += 1
    return n


def _measure(nodes: int, samples: int) -> dict[str, float]:
    state, seq = _converged(nodes)
    # measured as the engine runs: the read model out of the garbage collector's sight, and the
    # eligibility memo the controller keeps across reconciles
    thresholds = gc.get_threshold()
    tune_gc()
    try:
        return _measure_state(state, seq, samples)
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def _measure_state(state: ClusterState, seq: int, samples: int) -> dict[str, float]:
    nodes = len(state.nodes)
    now = T0.timestamp() + seq / 1000 + 3600
    keys = sorted(state.daemonsets)
    cache = PlacementCache()
    memo = EligibilityMemo()

    def node_op(env: Envelope) -> int:
        nonlocal seq
        seq += 1
        ctx = before(state, env.data)
        apply(state, env, seq)
        affected = affected_keys(state, env.data, ctx, cache)
        name = getattr(env.data, "name", "")
        for key in affected:
            # what the controller does at once for a node fact: the node-scoped reconcile (the full
            # one follows later, off the reaction path); a full one when the scoped one declines
            if reconcile_nodes(state, key, [name], now, memo) is None:
                reconcile(state, key, now, memo)
        return len(affected)

    def timed_ops(envs: list[Envelope]) -> tuple[float, float]:
        reconciles = 0
        start = time.perf_counter()
        for env in envs:
            reconciles += node_op(env)
        return (time.perf_counter() - start) * 1000 / len(envs), reconciles / len(envs)

    at = T0
    joins = [
        wrap(
            node_event(node_name(i, "late"), i),
            id=stable_id("late", nodes, i),
            occurred_at=at,
            source="bench",
        )
        for i in range(samples)
    ]
    join_ms, join_keys = timed_ops(joins)
    # a label change that moves no DaemonSet: triggers only, no reconcile
    relabels = []
    for i in range(samples):
        name = node_name(i * max(1, nodes // samples) % nodes)
        labels = {**state.nodes[name].labels, "bench/revision": str(i)}
        relabels.append(
            wrap(
                NodeLabelsChanged(name=name, labels=labels),
                id=stable_id("relabel", nodes, i),
                occurred_at=at,
                source="bench",
            )
        )
    relabel_ms, _ = timed_ops(relabels)

    for key in keys:  # warm the memo, as a running engine's is
        reconcile(state, key, now, memo)

    def full_round() -> None:
        for key in keys:
            reconcile(state, key, now, memo)

    full_ms = _best(full_round, 3) * 1000 / len(keys)
    scan_ms = _best(lambda: _fleet_scan(state), 5) * 1000
    return {
        "join_ms": join_ms,
        "join_keys": join_keys,
        "relabel_ms": relabel_ms,
        "full_ms": full_ms,
        "scan_ms": scan_ms,
        "pods": float(len(state.pods)),
    }


async def scaling(quick: bool) -> list[Row]:
    sizes = [100, 200, 500, 1000] if quick else [1000, 2000, 5000, 10000]
    samples = 10
    results = {n: _measure(n, samples) for n in sizes}
    base = sizes[0]
    rows: list[Row] = []
    for n in sizes:
        r = results[n]
        growth = n / base
        join_growth = r["join_ms"] / results[base]["join_ms"]
        full_growth = r["full_ms"] / results[base]["full_ms"]
        relabel_growth = r["relabel_ms"] / results[base]["relabel_ms"]
        last = n == sizes[-1]
        rows.append(
            Row(
                "scaling",
                f"{n:,} nodes: node.registered (fold+triggers+{r['join_keys']:.0f} node-scoped reconciles), "
                f"growth {join_growth:.2f}x for {growth:g}x nodes",
                r["join_ms"],
                "ms",
                baseline=r["scan_ms"],
                baseline_label="one Python pass over every node and pod",
                target=Target("<=", 2.0, label="flat in fleet (growth <= 2x)") if last else None,
                verdict=(join_growth <= 2.0) if last else None,
                extra={"growth": join_growth, "nodes": n, "pods": r["pods"]},
            )
        )
        rows.append(
            Row(
                "scaling",
                f"{n:,} nodes: node.labels_changed (no placement change), growth {relabel_growth:.2f}x",
                r["relabel_ms"],
                "ms",
                baseline=r["scan_ms"],
                baseline_label="one Python pass over every node and pod",
                target=Target("<=", 2.0, label="flat in fleet (growth <= 2x)") if last else None,
                verdict=(relabel_growth <= 2.0) if last else None,
                extra={"growth": relabel_growth, "nodes": n},
            )
        )
        rows.append(
            Row(
                "scaling",
                f"{n:,} nodes: full reconcile of one DaemonSet, growth {full_growth:.2f}x "
                f"for {growth:g}x nodes",
                r["full_ms"],
                "ms",
                baseline=r["scan_ms"],
                baseline_label="one Python pass over every node and pod",
                target=Target("<=", 1.25 * growth, label=f"<= linear ({1.25 * growth:g}x)") if last else None,
                verdict=(full_growth <= 1.25 * growth) if last else None,
                extra={"growth": full_growth, "nodes": n},
            )
        )
    return rows
