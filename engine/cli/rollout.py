"""``dsctl rollout status|history|undo|restart|pause|resume|partition`` on a DaemonSet, as kubectl's
plus the rollout controls of docs/rollout-control.md.

``status`` folds the whole log and follows it until the rollout completes, naming the nodes that hold
the budgets and why, and stopping (exit ``STOPPED``) when a control keeps the rollout from going further
or (exit ``GUARDED``) when the availability guard stopped it; ``undo``, ``restart``, ``pause``,
``resume`` and ``partition`` append the next generation with an optimistic check on the sequence the
DaemonSet was read at (``_rollout_read``).
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
from engine.core.progress import Progress, rollout_progress
from engine.core.revisions import retained_revisions, revision_by_number, rollback_template
from engine.core.scaling import BadIntOrPercent, parse_int_or_percent
from engine.core.status import rollout_complete
from engine.runtime.retry import Deadline
from engine.store.event_store import DEFAULT_DEADLINE, EventStore, append_within
from events.envelope import wrap
from events.errors import ConflictError, InvalidInput, NotFound, TransientError
from events.k8s import CHANGE_CAUSE_ANNOTATION, DaemonSetSpec, PodTemplate, RollingUpdate
from events.subjects import daemonset_filters, daemonset_tree
from events.template_hash import template_hash
from events.types import DaemonSetApplied
from projections.fold import apply
from projections.model import ClusterState, DaemonSetState, PodState

#: a restart means "new pods from the current template", whatever that is, so it re-reads and retries
RESTART_ATTEMPTS = 5
#: ``rollout status`` exit codes beyond 0 (complete) and 1 (an error, a timeout): a control keeps the
#: rollout from going further (paused, partition, selector), or the availability guard stopped it
STOPPED = 3
GUARDED = 4
#: at most this many blocking nodes are listed (the rest are counted)
SHOWN_BLOCKERS = 10


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


def progress_lines(progress: Progress) -> list[str]:
    """What holds the rollout up, a line per node (docs/rollout-control.md)."""
    lines = [f"  controls: {', '.join(progress.controls)}"] if progress.controls else []
    for b in progress.blockers[:SHOWN_BLOCKERS]:
        lines.append(f"  {b.node} holds {b.budget}: {b.why}")
    if len(progress.blockers) > SHOWN_BLOCKERS:
        lines.append(f"  ... and {len(progress.blockers) - SHOWN_BLOCKERS} more nodes")
    return lines


def _held_summary(progress: Progress) -> str:
    names = [n for n, _ in progress.held]
    shown = ", ".join(names[:SHOWN_BLOCKERS]) + (", ..." if len(names) > SHOWN_BLOCKERS else "")
    codes = ", ".join(sorted({c for _, c in progress.held}))
    return f"{len(names)} node(s) kept on their revision ({codes}): {shown}"


async def rollout_status(
    store: EventStore,
    name: str,
    namespace: str,
    timeout: float,
    out: TextIO,
    clock: Callable[[], float] = time.time,
) -> int:
    """Waits for the rollout; 0 when complete, ``STOPPED`` when a control holds the remaining nodes
    and nothing else is in progress, ``GUARDED`` when the availability guard stopped it."""
    key = f"{namespace}/{name}"
    state = await load_state(store)
    ds = state.daemonsets.get(key)
    if ds is None or ds.deleting:
        raise NotFound(f'daemonsets.apps "{name}" not found')
    if ds.spec.update_strategy.type != "RollingUpdate":
        raise InvalidInput(
            "rollout status is only available for RollingUpdate strategy type", "spec.updateStrategy"
        )
    shown = ""

    def step() -> int | None:
        nonlocal shown
        d = state.daemonsets.get(key)
        if d is None:
            raise NotFound(f'daemonsets.apps "{name}" not found')
        done, msg = rollout_message(d)
        if done and not rollout_complete(d, d.status):
            done = False
        # printed again only when the facts change, not when only an age moved on
        steady = rollout_progress(state, key, clock(), stable=True)
        seen = msg + steady.phase + "".join(progress_lines(steady))
        if seen == shown and steady.phase in ("progressing", "complete") and not done:
            return None
        progress = rollout_progress(state, key, clock())
        code: int | None = 0 if done and progress.phase != "guarded" else None
        text = msg
        if progress.phase == "guarded":
            text = f'daemon set "{d.name}" rollout stopped by the availability guard: {progress.guard}\n'
            code = GUARDED
        elif progress.phase == "stopped" and d.status.observed_generation >= d.generation:
            text = (
                f'daemon set "{d.name}" rolled out as far as its controls allow: {_held_summary(progress)}\n'
            )
            code = STOPPED
        if code is None:
            text += "".join(f"{line}\n" for line in progress_lines(progress))
        elif progress.controls and code != 0:
            text += f"  controls: {', '.join(progress.controls)}\n"
        if seen != shown:
            out.write(text)
            out.flush()
            shown = seen
        return code

    finished = step()
    if finished is not None:
        return finished
    last = state.seq

    async def follow() -> int:
        async with contextlib.aclosing(store.follow(last + 1)) as events:
            async for stored in events:
                apply(state, stored.envelope, stored.seq)
                result = step()
                if result is not None:
                    return result
        return 0

    try:
        return await asyncio.wait_for(follow(), timeout=timeout if timeout > 0 else None)
    except TimeoutError:
        raise TimedOut("timed out waiting for the condition") from None


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


async def _reapply_strategy(
    store: EventStore, name: str, namespace: str, change: Callable[[RollingUpdate], RollingUpdate | None]
) -> str:
    """Append the next generation with ``change`` applied to ``rollingUpdate``; ``change`` returns
    None when there is nothing to do. Returns what happened: "" (unchanged) or "changed"."""
    ds, expected = await _rollout_read(store, namespace, name)
    strategy = ds.spec.update_strategy
    if strategy.type != "RollingUpdate" or strategy.rolling_update is None:
        raise InvalidInput(
            "rollout controls are only available for RollingUpdate strategy type", "spec.updateStrategy"
        )
    changed = change(strategy.rolling_update)
    if changed is None:
        return ""
    spec = msgspec.structs.replace(
        ds.spec, update_strategy=msgspec.structs.replace(strategy, rolling_update=changed)
    )
    try:
        await _append_spec(store, ds, expected, spec)
    except ConflictError as err:
        raise ConflictError(
            f'daemonsets.apps "{name}" changed meanwhile (nothing was written); run it again ({err})'
        ) from err
    return "changed"


async def _append_spec(store: EventStore, ds: DaemonSetState, expected: int, spec: DaemonSetSpec) -> None:
    event = DaemonSetApplied(
        namespace=ds.namespace,
        name=ds.name,
        uid=ds.uid,
        generation=ds.generation + 1,
        spec=spec,
        template_hash=template_hash(spec.template, ds.collision_count),
        labels=dict(ds.labels),
        annotations=dict(ds.annotations),
    )
    env = wrap(event, id=str(uuid.uuid4()), occurred_at=datetime.now(UTC), source="dsctl")
    await append_within(
        store,
        env,
        Deadline(DEFAULT_DEADLINE),
        expected_last_subject_seq=expected,
        expected_subject_filter=daemonset_tree(ds.namespace, ds.name),
    )


async def rollout_pause(store: EventStore, name: str, namespace: str, out: TextIO) -> int:
    """``rollingUpdate.paused: true`` (docs/rollout-control.md): only the rolling-update step stops."""

    def pause(ru: RollingUpdate) -> RollingUpdate | None:
        return None if ru.paused else msgspec.structs.replace(ru, paused=True)

    done = await _reapply_strategy(store, name, namespace, pause)
    out.write(f"daemonset.apps/{name} {'paused' if done else 'already paused'}\n")
    return 0


async def rollout_resume(store: EventStore, name: str, namespace: str, out: TextIO) -> int:
    """``rollingUpdate.paused: false``. A tripped availability guard stays tripped: only a new
    template clears it (docs/rollout-control.md)."""

    def resume(ru: RollingUpdate) -> RollingUpdate | None:
        return msgspec.structs.replace(ru, paused=False) if ru.paused else None

    done = await _reapply_strategy(store, name, namespace, resume)
    out.write(f"daemonset.apps/{name} {'resumed' if done else 'is not paused'}\n")
    return 0


def parse_partition(value: str) -> int | str:
    """``N`` or ``P%`` as ``rollingUpdate.partition`` takes it (docs/rollout-control.md)."""
    try:
        number, percent = parse_int_or_percent(value if value.endswith("%") else int(value))
    except (BadIntOrPercent, ValueError):
        raise InvalidInput(
            f"partition {value!r} is not a count or a percentage (2, 40%)", "partition"
        ) from None
    if number < 0 or (percent and number > 100):
        raise InvalidInput(f"partition {value!r} must be between 0 and 100% of the nodes", "partition")
    return value if percent else number


async def rollout_partition(store: EventStore, name: str, namespace: str, value: str, out: TextIO) -> int:
    """Set ``rollingUpdate.partition``: this many nodes (or percent of them) stay on the old revision."""
    partition = parse_partition(value)

    def set_partition(ru: RollingUpdate) -> RollingUpdate | None:
        return None if ru.partition == partition else msgspec.structs.replace(ru, partition=partition)

    done = await _reapply_strategy(store, name, namespace, set_partition)
    what = "partitioned" if done else "unchanged"
    out.write(f"daemonset.apps/{name} {what} (partition {partition})\n")
    return 0
