"""Imperative operations on nodes and pods (what ``dsctl label``, ``taint``, ``cordon``, ``delete`` do).

Each reads the object's own subjects, computes the new level fact (the full label set, the full taint
list) and appends it with an optimistic check on those subjects, so two concurrent edits cannot
silently overwrite each other. Deleting a pod is not a fact but a request to its node, like
``kubectl delete pod``: a ``delete_pod`` command to the node's executor, whose reports then say what
happened.

Like ``apply``, each operation waits up to ``deadline`` (15 s) for a store that is briefly away, for its
read and its append together (``store.append_within``); one event per operation, so an operation that
gives up has appended nothing (or, if its last attempt's ack was lost, possibly its one event: a re-run
then finds the change made and says so).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from nats.aio.client import Client

from engine.cli.apply import current
from engine.runtime.retry import Deadline
from engine.store.event_store import DEFAULT_DEADLINE, EventStore, append_within
from engine.store.jetstream_api import translate_errors
from events import codec
from events.envelope import wrap
from events.errors import InvalidInput, NotFound
from events.k8s import Taint
from events.subjects import command_subject, node_tree, pod_filters
from events.types import (
    DeletePod,
    Event,
    NodeCordoned,
    NodeLabelsChanged,
    NodeRemoved,
    NodeTaintsChanged,
    NodeUncordoned,
)
from projections.model import NodeState, PodState


class NodeOps:
    def __init__(
        self, store: EventStore, *, source: str = "dsctl", deadline: float = DEFAULT_DEADLINE
    ) -> None:
        self.store = store
        self.source = source
        #: how long one operation (its read and its append together) waits for a store that is away
        self.deadline = deadline

    async def get(self, name: str, deadline: Deadline | None = None) -> tuple[NodeState, int]:
        state, last = await current(self.store, [node_tree(name)], deadline or Deadline(self.deadline))
        node = state.nodes.get(name)
        if node is None:
            raise NotFound(f'nodes "{name}" not found')
        return node, last

    async def _append(self, event: Event, name: str, expected: int, deadline: Deadline) -> int:
        # one id for every attempt: a retry after a lost ack is recognised (append_within)
        env = wrap(event, id=str(uuid.uuid4()), occurred_at=datetime.now(UTC), source=self.source)
        result = await append_within(
            self.store,
            env,
            deadline,
            expected_last_subject_seq=expected,
            expected_subject_filter=node_tree(name),
        )
        return result.seq

    async def label(
        self, name: str, set_labels: Mapping[str, str], remove: Sequence[str] = (), *, overwrite: bool = False
    ) -> bool:
        """Returns False when nothing changed. Changing a key without ``overwrite`` is refused."""
        deadline = Deadline(self.deadline)
        node, last = await self.get(name, deadline)
        for key, value in set_labels.items():
            if key in node.labels and node.labels[key] != value and not overwrite:
                raise InvalidInput(
                    f"'{key}' already has a value ({node.labels[key]}), and --overwrite is false"
                )
        labels = {k: v for k, v in node.labels.items() if k not in remove} | dict(set_labels)
        missing = [k for k in remove if k not in node.labels]
        if missing and not set_labels and len(missing) == len(remove):
            raise NotFound(f"label {missing[0]!r} not found on node {name}")
        if labels == node.labels:
            return False
        await self._append(NodeLabelsChanged(name=name, labels=labels), name, last, deadline)
        return True

    async def taint(self, name: str, add: Sequence[Taint], remove: Sequence[tuple[str, str]]) -> bool:
        """``remove`` holds (key, effect) pairs; an empty effect removes every effect of that key."""
        deadline = Deadline(self.deadline)
        node, last = await self.get(name, deadline)
        taints = list(node.taints)
        for key, effect in remove:
            kept = [t for t in taints if not (t.key == key and (not effect or t.effect == effect))]
            if len(kept) == len(taints):
                raise NotFound(f"taint {key}{':' + effect if effect else ''} not found on node {name}")
            taints = kept
        for t in add:
            same = [i for i, old in enumerate(taints) if old.key == t.key and old.effect == t.effect]
            if same:
                taints[same[0]] = t
            else:
                taints.append(t)
        if taints == list(node.taints):
            return False
        await self._append(NodeTaintsChanged(name=name, taints=tuple(taints)), name, last, deadline)
        return True

    async def cordon(self, name: str, on: bool = True) -> bool:
        deadline = Deadline(self.deadline)
        node, last = await self.get(name, deadline)
        if node.unschedulable == on:
            return False
        await self._append(NodeCordoned(name=name) if on else NodeUncordoned(name=name), name, last, deadline)
        return True

    async def remove(self, name: str) -> None:
        deadline = Deadline(self.deadline)
        _, last = await self.get(name, deadline)
        await self._append(NodeRemoved(name=name), name, last, deadline)


async def find_pod(store: EventStore, name: str, namespace: str = "default") -> PodState:
    """The pod's current state, from its own report subjects."""
    state, _ = await current(store, pod_filters(name, namespace))
    pod = state.pods.get(f"{namespace}/{name}")
    if pod is None:
        raise NotFound(f'pods "{name}" not found in namespace {namespace}')
    return pod


async def request_pod_delete(
    nc: Client, pod: PodState, *, reason: str = "deleted by user", grace_period_seconds: int | None = None
) -> str:
    """Ask the pod's executor to delete it (``kubectl delete pod``). Returns the command id."""
    cmd = DeletePod(
        id=str(uuid.uuid4()),
        node=pod.node,
        namespace=pod.namespace,
        pod_name=pod.name,
        reason=reason,
        grace_period_seconds=grace_period_seconds,
    )
    js = nc.jetstream()
    # a failure to publish is whatever NATS says it is (a store briefly away stays transient), never a
    # conflict: nothing was read, so there is nothing to re-read and retry against
    with translate_errors(f"could not send the delete to node {pod.node}"):
        await js.publish(
            command_subject(pod.node), codec.encode_command(cmd), headers={"Nats-Msg-Id": cmd.id}
        )
    return cmd.id
