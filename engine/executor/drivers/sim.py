"""The simulated driver: pods that only exist as reports, steered by pod-template annotations.

Used by the demo, the tests and the scale benchmarks. Defaults: Ready ``ready_after`` seconds after
creation (0.0 = at once), deleted pods gone at once. Annotations on the pod template change that:

    sim.dsctl.io/ready-after: "<seconds>"      Running at once, Ready after that long
    sim.dsctl.io/never-ready: "true"           Running, never Ready (stalls a rolling update)
    sim.dsctl.io/fail-after: "<seconds>"       phase Failed after that long
    sim.dsctl.io/exit-after: "<seconds>"       phase Succeeded after that long
    sim.dsctl.io/terminate-after: "<seconds>"  a deleted pod stays Terminating that long

Each pod's lifecycle is kept as its log (``sim_log.py``: started, ready, stopping, stopped, failed,
exited, each with its time), which ``dsctl logs`` shows.

A malformed value (``"soon"``) is reported as a pod failure with a reason naming the annotation,
rather than crashing the executor: the template came from a user.

A pod's life (and a lingering termination) runs in a task of its own. A report that fails there is
logged and the life goes on: with the executor's appender a report only fails when the store refused it
for good or the executor is closing, and stopping the life would leave the pod stuck in its last phase
with nothing left to report the next one. Every such task has a done-callback that reads its outcome,
so nothing ends as "Task exception was never retrieved".
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

import structlog

from engine.executor.drivers.base import (
    LocalPod,
    LogRead,
    PodReporter,
    created_report,
    gone_report,
    pod_fields,
    report_terminating,
)
from engine.executor.drivers.sim_log import SimLogBook
from events.types import PodEvent, PodFailed, PodReady, PodRunning, PodSucceeded

ANNOTATION_PREFIX = "sim.dsctl.io/"
READY_AFTER = ANNOTATION_PREFIX + "ready-after"
NEVER_READY = ANNOTATION_PREFIX + "never-ready"
FAIL_AFTER = ANNOTATION_PREFIX + "fail-after"
EXIT_AFTER = ANNOTATION_PREFIX + "exit-after"
TERMINATE_AFTER = ANNOTATION_PREFIX + "terminate-after"

log = structlog.get_logger("dsctl.executor")


class BadAnnotation(ValueError):
    pass


def _seconds(annotations: dict[str, str], key: str) -> float | None:
    raw = annotations.get(key)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise BadAnnotation(f"annotation {key}={raw!r} is not a number of seconds") from None
    if value < 0:
        raise BadAnnotation(f"annotation {key}={raw!r} is negative")
    return value


class SimDriver:
    name = "sim"

    def __init__(self, ready_after: float = 0.0) -> None:
        self.ready_after = ready_after
        self._tasks: dict[str, asyncio.Task[None]] = {}
        #: each pod's lifecycle lines (what ``dsctl logs`` shows of a simulated pod)
        self.log = SimLogBook()

    async def read_log(
        self,
        namespace: str,
        name: str,
        *,
        cursor: int | None,
        tail: int,
        limit: int,
        partial: bool,
        pod: LocalPod | None,
    ) -> LogRead | None:
        """``KeepsLogs``: the pod's lifecycle lines (always whole lines, so ``partial`` changes nothing)."""
        return self.log.read(f"{namespace}/{name}", cursor=cursor, tail=tail, limit=limit, pod=pod)

    def _spawn(self, key: str, coro: Coroutine[Any, Any, None]) -> None:
        old = self._tasks.pop(key, None)
        if old is not None:
            old.cancel()
        task = asyncio.ensure_future(coro)
        self._tasks[key] = task

        def forget(done: asyncio.Task[None]) -> None:
            if self._tasks.get(key) is done:
                del self._tasks[key]
            if done.cancelled():
                return
            err = done.exception()
            if err is not None:  # the life guards its reports, so this is a bug: say it, once
                log.error("sim.pod_task_failed", pod=key, exc_info=err)

        task.add_done_callback(forget)

    @staticmethod
    async def _report(reporter: PodReporter, event: PodEvent, command_id: str) -> None:
        """Report from a pod's own task: a failure is logged, never raised (see the module docstring)."""
        try:
            await reporter.report(event, causation_id=command_id)
        except Exception as err:
            log.error(
                "sim.report_failed",
                pod=f"{event.namespace}/{event.name}",
                report=event.TAG,
                error=f"{type(err).__name__}: {err}",
            )

    async def start(self, pod: LocalPod, command_id: str, reporter: PodReporter) -> None:
        await reporter.report(created_report(pod, command_id), causation_id=command_id)
        self.log.begin(pod.key, "created")
        await self.resume(pod, command_id, reporter)

    async def resume(self, pod: LocalPod, command_id: str, reporter: PodReporter) -> None:
        """Carry a created pod on through its life (also after an executor restart)."""
        if not self.log.knows(pod.key):
            self.log.add(pod.key, f"this executor took the pod over as {pod.phase} (its earlier lines were "
                         "kept by the executor before it)")  # fmt: skip
        self._spawn(pod.key, self._life(pod, command_id, reporter))

    async def _life(self, pod: LocalPod, command_id: str, reporter: PodReporter) -> None:
        ann = pod.template.metadata.annotations
        common = pod_fields(pod, command_id)
        try:
            ready_after = _seconds(ann, READY_AFTER)
            fail_after = _seconds(ann, FAIL_AFTER)
            exit_after = _seconds(ann, EXIT_AFTER)
        except BadAnnotation as err:
            await self._report(reporter, PodFailed(**common, reason=str(err)), command_id)
            pod.phase = "Failed"
            self.log.add(pod.key, f"failed: {err}")
            return
        if pod.phase == "Pending":
            await self._report(reporter, PodRunning(**common), command_id)
            pod.phase = "Running"
            self.log.add(pod.key, "started")
        never_ready = ann.get(NEVER_READY, "").lower() == "true"
        end = min((t for t in (fail_after, exit_after) if t is not None), default=None)
        ready_at = ready_after if ready_after is not None else self.ready_after
        if not never_ready and not pod.ready and (end is None or ready_at < end):
            if ready_at > 0:
                await asyncio.sleep(ready_at)
            await self._report(reporter, PodReady(**common), command_id)
            pod.ready = True
            self.log.add(pod.key, "ready")
        if end is None:
            return
        await asyncio.sleep(max(0.0, end - (ready_at if pod.ready else 0.0)))
        if fail_after is not None and end == fail_after:
            await self._report(
                reporter, PodFailed(**common, reason="sim: fail-after", exit_code=1), command_id
            )
            pod.phase = "Failed"
            self.log.add(pod.key, "failed: sim: fail-after (exit code 1)")
        else:
            await self._report(reporter, PodSucceeded(**common), command_id)
            pod.phase = "Succeeded"
            self.log.add(pod.key, "exited: Succeeded")
        pod.ready = False

    async def stop(
        self, pod: LocalPod, command_id: str, reporter: PodReporter, *, grace_seconds: float, evict: bool
    ) -> None:
        life = self._tasks.pop(pod.key, None)
        if life is not None:
            life.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):  # an exception: logged already
                await life
        try:
            linger = _seconds(pod.template.metadata.annotations, TERMINATE_AFTER) or 0.0
        except BadAnnotation:
            linger = 0.0
        await report_terminating(pod, command_id, reporter, grace_seconds)
        self.log.add(pod.key, f"{'evicting' if evict else 'stopping'} (grace {grace_seconds:g}s)")
        if linger > 0:
            self._spawn(pod.key, self._finish(pod, command_id, reporter, linger, evict))
        else:
            await self._finish(pod, command_id, reporter, 0.0, evict)

    async def _finish(
        self, pod: LocalPod, command_id: str, reporter: PodReporter, linger: float, evict: bool
    ) -> None:
        event = gone_report(pod, command_id, evict=evict)
        if linger > 0:
            # in a task of its own: guarded like a life
            await asyncio.sleep(linger)
            await self._report(reporter, event, command_id)
        else:
            # awaited by the executor's delete: a failure goes back to it, so the command is retried
            await reporter.report(event, causation_id=command_id)
        pod.phase = "Deleted"
        self.log.add(pod.key, "evicted" if evict else "stopped")
        self.log.retire(pod.key)

    async def forget(self, pod: LocalPod) -> None:
        """``Forgets``: the pod's node was removed; its life ends here, unreported, and its log lines
        stay readable as a deleted pod's (``SimLogBook`` keeps a bounded number of those)."""
        life = self._tasks.pop(pod.key, None)
        if life is not None:
            life.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):  # an exception: logged already
                await life
        pod.phase = "Deleted"
        pod.ready = False
        if self.log.knows(pod.key):
            self.log.add(pod.key, f"node {pod.node} removed: the pod is gone with it")
            self.log.retire(pod.key)

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
