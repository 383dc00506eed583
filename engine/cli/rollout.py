"""``dsctl rollout status|history|undo|restart`` on a DaemonSet, as kubectl's.

``status`` follows the DaemonSet's own subjects (its facts and its decisions, which carry the status)
until the rollout completes; ``undo`` and ``restart`` append the next generation with an optimistic
check on the sequence the DaemonSet was read at (``_rollout_read``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TextIO

import msgspec

from engine.cli import present
from engine.cli.apply import current
from engine.cli.queries import load_state
from engine.core.revisions import retained_revisions, revision_by_number, rollback_template
from engine.core.status import rollout_complete
from engine.runtime.retry import Deadline
from engine.store.event_store import DEFAULT_DEADLINE, EventStore, append_within
from events.envelope import wrap
from events.errors import ConflictError, InvalidInput, NotFound, TransientError
from events.k8s import CHANGE_CAUSE_ANNOTATION, PodTemplate
from events.subjects import daemonset_filters, daemonset_tree
from events.template_hash import template_hash
from events.types import DaemonSetApplied
from projections.fold import apply
from projections.model import ClusterState, DaemonSetState, PodState

#: a restart means "new pods from the current template", whatever that is, so it re-reads and retries
RESTART_ATTEMPTS = 5


class TimedOut(TransientError):
    """``rollout status --timeout`` ran out before the rollout finished. Nothing was wrong with the
    input, and waiting longer (or running it again) may well see it finish: transient, not invalid."""


async def _ds_with_status(
    store: EventStore, namespace: str, name: str
) -> tuple[ClusterState, DaemonSetState, int]:
    state, last = await current(store, daemonset_filters(namespace, name))
    ds = state.daemonsets.get(f"{namespace}/{name}")
    if ds is None:
        raise NotFound(f'daemonsets.apps "{name}" not found')
    return state, ds, last


def rollout_message(ds: DaemonSetState) -> tuple[bool, str]:
    st = ds.status
    if st.observed_generation < ds.generation:
        return False, "Waiting for daemon set spec update to be observed...\n"
    desired = st.desired_number_scheduled
    if st.updated_number_scheduled < desired:
        return False, (
            f'Waiting for daemon set "{ds.name}" rollout to finish: '
            f"{st.updated_number_scheduled} out of {desired} new pods have been updated...\n"
        )
    if st.number_available < desired:
        return False, (
            f'Waiting for daemon set "{ds.name}" rollout to finish: '
            f"{st.number_available} of {desired} updated pods are available...\n"
        )
    return True, f'daemon set "{ds.name}" successfully rolled out\n'


async def rollout_status(store: EventStore, name: str, namespace: str, timeout: float, out: TextIO) -> int:
    state, ds, last = await _ds_with_status(store, namespace, name)
    if ds.spec.update_strategy.type != "RollingUpdate":
        raise InvalidInput(
            "rollout status is only available for RollingUpdate strategy type", "spec.updateStrategy"
        )
    shown = ""

    def step() -> bool:
        nonlocal shown
        d = state.daemonsets.get(f"{namespace}/{name}")
        if d is None:
            raise NotFound(f'daemonsets.apps "{name}" not found')
        done, msg = rollout_message(d)
        if done and not rollout_complete(d, d.status):
            done = False
        if msg != shown:
            out.write(msg)
            out.flush()
            shown = msg
        return done

    if step():
        return 0
    subjects = daemonset_filters(namespace, name)

    async def follow() -> None:
        async with contextlib.aclosing(store.follow(last + 1, subjects)) as events:
            async for stored in events:
                apply(state, stored.envelope, stored.seq)
                if step():
                    return

    try:
        await asyncio.wait_for(follow(), timeout=timeout if timeout > 0 else None)
    except TimeoutError:
        raise TimedOut("timed out waiting for the condition") from None
    return 0


async def rollout_history(
    store: EventStore, name: str, namespace: str, revision: int | None, out: TextIO
) -> int:
    _state, ds, _ = await _ds_with_status(store, namespace, name)
    pods = await _owned_pods(store, ds)
    if revision:
        rev = revision_by_number(ds, revision)
        out.write(f"daemonset.apps/{name} with revision #{rev.number}\n")
        out.write("\n".join(present.template_lines(rev.template)) + "\n")
        return 0
    out.write(f"daemonset.apps/{name}\n")
    out.write(present.revision_rows(retained_revisions(ds, pods)))
    return 0


async def _owned_pods(store: EventStore, ds: DaemonSetState) -> list[PodState]:
    state = await load_state(store)
    return [state.pods[k] for k in state.pods_by_owner.get(ds.uid, ())]


async def _rollout_read(store: EventStore, namespace: str, name: str) -> tuple[DaemonSetState, int]:
    """The DaemonSet a rollout command bases its new generation on, and the sequence its append must
    expect on the DaemonSet's subjects.

    The expected sequence comes from the first read, the DaemonSet (with its decisions, for the
    collision count) from a read after it: anything appended to the DaemonSet after the first read,
    even between the two, makes the append fail with a conflict. Re-reading the sequence just before
    appending would instead let a concurrent ``apply`` be overwritten by a generation computed from
    stale state (two applies with the same generation in the log)."""
    _, expected = await current(store, [daemonset_tree(namespace, name)])
    _, ds, _ = await _ds_with_status(store, namespace, name)
    if ds.deleting:
        raise NotFound(f'daemonsets.apps "{name}" not found')
    return ds, expected


async def _reapply(
    store: EventStore,
    ds: DaemonSetState,
    expected: int,
    template: PodTemplate,
    annotations: dict[str, str] | None = None,
) -> None:
    """Append the next generation of ``ds`` with ``template``; ``expected`` is the sequence ``ds`` was
    read at (from ``_rollout_read``), so a concurrent change raises ConflictError instead of being
    overwritten."""
    spec = msgspec.structs.replace(ds.spec, template=template)
    event = DaemonSetApplied(
        namespace=ds.namespace,
        name=ds.name,
        uid=ds.uid,
        generation=ds.generation + 1,
        spec=spec,
        template_hash=template_hash(template, ds.collision_count),
        labels=dict(ds.labels),
        annotations=dict(annotations if annotations is not None else ds.annotations),
    )
    env = wrap(event, id=str(uuid.uuid4()), occurred_at=datetime.now(UTC), source="dsctl")
    tree = daemonset_tree(ds.namespace, ds.name)
    await append_within(
        store,
        env,
        Deadline(DEFAULT_DEADLINE),
        expected_last_subject_seq=expected,
        expected_subject_filter=tree,
    )


async def rollout_undo(store: EventStore, name: str, namespace: str, to_revision: int, out: TextIO) -> int:
    """Not retried on a conflict: "the previous revision" is relative to what the user saw, and a
    concurrent apply changes it; rolling back that apply unseen is not what was asked."""
    ds, expected = await _rollout_read(store, namespace, name)
    template = rollback_template(ds, to_revision)
    if template_hash(template, ds.collision_count) == ds.template_hash:
        rev = ds.revisions[ds.template_hash].number
        out.write(
            f"daemonset.apps/{name} skipped rollback (current template already matches revision {rev})\n"
        )
        return 0
    annotations = {k: v for k, v in ds.annotations.items() if k != CHANGE_CAUSE_ANNOTATION}
    try:
        await _reapply(store, ds, expected, template, annotations)
    except ConflictError as err:
        raise ConflictError(
            f'daemonsets.apps "{name}" changed while rolling back (nothing was written); '
            f"check `dsctl rollout history ds/{name}` and run the undo again ({err})"
        ) from err
    out.write(f"daemonset.apps/{name} rolled back\n")
    return 0


async def rollout_restart(
    store: EventStore, name: str, namespace: str, out: TextIO, clock: Callable[[], float] = time.time
) -> int:
    stamp = datetime.fromtimestamp(clock(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    for attempt in range(1, RESTART_ATTEMPTS + 1):
        ds, expected = await _rollout_read(store, namespace, name)
        t = ds.spec.template
        meta = msgspec.structs.replace(
            t.metadata, annotations={**t.metadata.annotations, "kubectl.kubernetes.io/restartedAt": stamp}
        )
        try:
            await _reapply(store, ds, expected, msgspec.structs.replace(t, metadata=meta))
        except ConflictError as err:
            if attempt == RESTART_ATTEMPTS:
                raise ConflictError(
                    f'daemonsets.apps "{name}" kept changing during the restart '
                    f"({RESTART_ATTEMPTS} attempts, nothing was written): {err}"
                ) from err
            continue
        break
    out.write(f"daemonset.apps/{name} restarted\n")
    return 0
