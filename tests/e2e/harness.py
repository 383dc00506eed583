"""An in-process cluster for end-to-end tests: the engine and a simulated fleet executor, both talking
to the test's real nats-server, plus helpers that act like a user and wait (bounded) for outcomes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from engine.cli.apply import Applier
from engine.cli.operations import NodeOps, find_pod, request_pod_delete
from engine.executor.drivers.sim import SimDriver
from engine.executor.run import run_executor
from engine.reconciler.engine import Engine, prepare
from engine.store.event_store import JetStreamEventStore
from projections.model import ClusterState, PodState

NODES_YAML = """
apiVersion: v1
kind: List
items:
{items}
"""


def nodes_yaml(
    *names: str, taints: dict[str, str] | None = None, labels: dict[str, dict[str, str]] | None = None
) -> str:
    items = []
    for n in names:
        item = f"- apiVersion: v1\n  kind: Node\n  metadata:\n    name: {n}\n"
        for k, v in ((labels or {}).get(n) or {}).items():
            if "labels:" not in item:
                item += "    labels:\n"
            item += f'      {k}: "{v}"\n'
        if taints and n in taints:
            key, _, effect = taints[n].partition(":")
            item += f"  spec:\n    taints:\n    - key: {key}\n      effect: {effect}\n"
        items.append(item)
    return NODES_YAML.format(items="".join(items))


class Cluster:
    def __init__(
        self, nc: Any, *, lease_ttl: float = 2.0, identity: str = "engine-a", replicas: int | None = None
    ) -> None:
        self.nc = nc
        self.lease_ttl = lease_ttl
        #: forwarded to prepare(): 3 on a 3-node cluster (tests/cluster), None on a single server
        self.replicas = replicas
        self.identity = identity
        self.store = JetStreamEventStore(nc, heartbeat=0.5)
        self.engine: Engine | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        #: the stores of engines added with ``add_engine`` (closed by ``stop``)
        self._stores: list[JetStreamEventStore] = []
        self.applier = Applier(self.store, source="test")
        self.nodes = NodeOps(self.store, source="test")
        self.observers: list[Callable[[ClusterState], None]] = []

    @property
    def state(self) -> ClusterState:
        assert self.engine is not None and self.engine.projector is not None
        return self.engine.projector.state

    async def start(self, *, executor: bool = True, engine: bool = True, ready_after: float = 0.0) -> Cluster:
        await prepare(self.nc, lease_ttl=self.lease_ttl, replicas=self.replicas)
        self.engine = Engine(self.nc, identity=self.identity, lease_ttl=self.lease_ttl, store=self.store)
        projector = await self.engine.start()

        def observe(state: ClusterState, event: object, ctx: object) -> None:
            for obs in self.observers:
                obs(state)

        projector.listen(lambda s, e: None, observe)
        if engine:
            self._tasks.append(asyncio.ensure_future(self.engine.run()))
            await asyncio.wait_for(self.engine.leading.wait(), timeout=self.lease_ttl * 4)
        else:
            self._tasks.append(asyncio.ensure_future(projector.run()))
        if executor:
            ready = asyncio.Event()
            self._tasks.append(
                asyncio.ensure_future(
                    run_executor(
                        self.nc,
                        SimDriver(ready_after=ready_after),
                        store=self.store,
                        state=self.state,
                        ready=ready,
                    )
                )
            )
            await asyncio.wait_for(ready.wait(), timeout=10)
        return self

    async def add_engine(self, nc: Any, identity: str) -> tuple[Engine, JetStreamEventStore]:
        """A further engine on its own connection and store (what a second ``dsctl engine run`` is):
        it follows the log and waits for the leader lease, for failover tests. Stopped by ``stop``."""
        store = JetStreamEventStore(nc, heartbeat=0.5)
        engine = Engine(nc, identity=identity, lease_ttl=self.lease_ttl, store=store)
        await engine.start()
        self._tasks.append(asyncio.ensure_future(engine.run()))
        self._stores.append(store)
        return engine, store

    async def stop(self) -> None:
        for task in reversed(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        for store in self._stores:
            await store.close()
        await self.store.close()

    async def apply(self, text: str, namespace: str | None = None) -> list[str]:
        """Apply, then wait until the projection has folded what was appended (read your writes)."""
        lines = await self.applier.apply(text, namespace)
        assert self.engine is not None and self.engine.projector is not None
        assert await self.engine.projector.wait_for(await self.store.last_seq(), timeout=10)
        return lines

    async def delete_pod(self, name: str, namespace: str = "default") -> None:
        pod = await find_pod(self.store, name, namespace)
        await request_pod_delete(self.nc, pod)

    async def wait(self, what: str, predicate: Callable[[ClusterState], bool], timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.state):
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"timed out after {timeout}s waiting for: {what}\n{describe(self.state)}")


def pods_of(state: ClusterState, ds_name: str, namespace: str = "default") -> list[PodState]:
    return sorted(
        (p for p in state.pods.values() if p.owner_name == ds_name and p.namespace == namespace),
        key=lambda p: p.node,
    )


def running_nodes(state: ClusterState, ds_name: str, namespace: str = "default") -> list[str]:
    """Nodes with a ready, non-terminating pod of the DaemonSet."""
    return sorted(
        p.node for p in pods_of(state, ds_name, namespace) if p.ready and p.deletion_timestamp is None
    )


def describe(state: ClusterState) -> str:
    lines = [f"seq={state.seq} nodes={sorted(state.nodes)} in_flight={len(state.in_flight)}"]
    for key, ds in sorted(state.daemonsets.items()):
        lines.append(f"  ds {key} gen={ds.generation} hash={ds.template_hash} status={ds.status}")
    for key, p in sorted(state.pods.items()):
        lines.append(
            f"  pod {key} node={p.node} owner={p.owner_name} rev={p.revision_hash} phase={p.phase} "
            f"ready={p.ready} deleting={p.deletion_timestamp is not None}"
        )
    return "\n".join(lines)
