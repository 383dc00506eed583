"""The process driver: a pod is its first container's ``command`` + ``args`` run as a local process.

Ready as soon as the process has started (there are no probes here); Failed when it exits non-zero,
Succeeded when it exits zero; stopped on delete with SIGTERM to its process group, then SIGKILL after the
pod's ``terminationGracePeriodSeconds``. Output goes to ``<log_dir>/<namespace>_<pod>.log``. ``env``
entries with a literal ``value`` are passed on; ``valueFrom`` is not supported and is reported in the log.

**Pods outlive the executor** (a ``Lasting`` driver), as containers outlive a kubelet restart, so that
upgrading or restarting executors never takes the daemons down:

- A pod's process is started with ``subprocess.Popen`` in a session (process group) of its own, not
  with asyncio's subprocess transport: that transport kills a child still running when it is closed,
  which is what every executor exit used to do to every pod.
- Each is recorded (``pid_records.py``: pid, start time and boot id, written atomically) before the pod
  is reported running, and the record is removed once the process is gone.
- A restarted executor re-attaches (``reattach``) to a recorded process only if it is provably the same
  one (``PidRecords.ours``), so a recycled pid is never mistaken for the pod, nor signalled. A pod whose
  process is gone is reported Failed, so the engine replaces it.
- A re-attached process is not our child: its exit is watched without a wait status (``proc.py``) and
  its exit code is unknown, so it is reported Failed with a reason saying so (a daemon is not meant to
  exit; a Succeeded would also be replaced, so nothing is lost by the cautious choice).
- Where ``/proc`` is missing (not Linux) no pid can be proven ours: pods are then reported Failed after
  a restart rather than signalled blindly.

At an executor stop, ``shutdown`` leaves the processes running (their records stay for the next
executor) unless ``stop_pods`` is set (``--stop-pods-on-exit``): each is then stopped as on a delete and
reported Failed with reason ``Terminated: ...``, as a kubelet's graceful node shutdown marks its pods,
so the log never says Running for a process that is gone and the engine replaces the pod when an
executor serves the node again. ``close`` (the plain Driver contract) stops everything and reports
nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

from engine.executor.drivers import log_files
from engine.executor.drivers.base import (
    LocalPod,
    LogRead,
    PodReporter,
    created_report,
    gone_report,
    pod_fields,
    report_terminating,
)
from engine.executor.drivers.pid_records import PidRecord, PidRecords
from engine.executor.drivers.proc import WatchedProcess, proc_stat
from events.types import PodFailed, PodReady, PodRunning, PodSucceeded

log = structlog.get_logger("dsctl.process")

#: grace given to a process the log has no pod for (it is stopped at start-up)
ORPHAN_GRACE_SECONDS = 5.0
#: how long a report made while stopping pods at exit may wait (the next executor corrects a lost one)
EXIT_REPORT_SECONDS = 10.0

EXIT_UNKNOWN = "process exited; its exit code is unknown (it was started by an earlier executor)"
GONE_WHILE_DOWN = "process exited while the executor was down"
NO_RECORD = (
    "no record of its process on this node (the executor's state dir was lost, or the pod ran under "
    "another driver)"
)
STOPPED_ON_EXIT = "Terminated: stopped with its executor (--stop-pods-on-exit)"


def container_argv(spec: dict[str, Any]) -> list[str]:
    """``command`` + ``args`` of the first container; raises ValueError naming the field if absent."""
    containers = spec.get("containers") or []
    if not containers or not isinstance(containers[0], dict):
        raise ValueError("spec.containers[0] is missing")
    first = containers[0]
    argv = [str(a) for a in (first.get("command") or [])] + [str(a) for a in (first.get("args") or [])]
    if not argv:
        raise ValueError("spec.containers[0] has no command or args to run")
    return argv


class _Tracked:
    """A pod this driver runs: its process, the task watching it, and whether a stop is under way."""

    def __init__(self, pod: LocalPod, proc: WatchedProcess) -> None:
        self.pod = pod
        self.proc = proc
        self.stopping = False
        #: set once Running/Ready are reported, so an exit report never comes before them
        self.announced = asyncio.Event()
        self.watcher: asyncio.Task[None] | None = None


def _exit_code(code: int) -> int:
    """A wait status as a shell shows it: a death by signal N is 128 + N."""
    return 128 - code if code < 0 else code


def _exit_report(pod: LocalPod, code: int | None) -> PodFailed | PodSucceeded:
    common = pod_fields(pod, pod.command_id)
    if code == 0:
        return PodSucceeded(**common)
    if code is None:
        return PodFailed(**common, reason=EXIT_UNKNOWN)
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
        return PodFailed(**common, reason=f"process killed by {name}", exit_code=_exit_code(code))
    return PodFailed(**common, reason=f"process exited with code {code}", exit_code=code)


def _log_watch_failure(task: asyncio.Task[None]) -> None:
    """A watcher whose exit report was refused: say so (the pod stays as last reported)."""
    if not task.cancelled() and task.exception() is not None:
        log.error("process.exit_unreported", error=repr(task.exception()))


class ProcessDriver:
    name = "process"

    def __init__(self, log_dir: Path, state_dir: Path | None = None) -> None:
        """``state_dir``: where pid records live (default ``<log_dir>/.state``)."""
        self.log_dir = log_dir
        self.state_dir = state_dir if state_dir is not None else log_dir / ".state"
        self.records = PidRecords(self.state_dir)
        self._tracked: dict[str, _Tracked] = {}

    # --- life ---------------------------------------------------------------------------------------

    def log_path(self, namespace: str, name: str) -> Path:
        return self.log_dir / f"{namespace}_{name}.log"

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
        """The pod's output file (``KeepsLogs``), read in a thread: a slow disk never stalls commands."""
        path = self.log_path(namespace, name)
        return await asyncio.to_thread(
            log_files.read_from, path, cursor=cursor, tail=tail, limit=limit, partial=partial
        )

    def pid_of(self, pod: LocalPod) -> int | None:
        tracked = self._tracked.get(pod.key)
        return tracked.proc.pid if tracked is not None else None

    def _track(self, pod: LocalPod, proc: WatchedProcess, reporter: PodReporter | None) -> _Tracked:
        tracked = _Tracked(pod, proc)
        self._tracked[pod.key] = tracked
        tracked.watcher = asyncio.ensure_future(self._watch(tracked, reporter))
        tracked.watcher.add_done_callback(_log_watch_failure)
        return tracked

    async def start(self, pod: LocalPod, command_id: str, reporter: PodReporter) -> None:
        pod.command_id = pod.command_id or command_id
        await reporter.report(created_report(pod, command_id), causation_id=command_id)
        await self._run(pod, command_id, reporter)

    async def _run(self, pod: LocalPod, command_id: str, reporter: PodReporter) -> None:
        if pod.key in self._tracked:
            return
        common = pod_fields(pod, command_id)
        try:
            argv = container_argv(pod.template.spec)
        except ValueError as err:
            await self._failed(pod, PodFailed(**common, reason=str(err)), reporter)
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_path(pod.namespace, pod.name)
        env = dict(os.environ)
        for item in (pod.template.spec.get("containers") or [{}])[0].get("env") or []:
            if isinstance(item, dict) and "name" in item and "value" in item:
                env[str(item["name"])] = str(item["value"])
        with log_path.open("ab") as out:
            try:
                child = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
            except OSError as err:
                reason = f"cannot start {argv[0]!r}: {err.strerror}"
                await self._failed(pod, PodFailed(**common, reason=reason), reporter)
                return
        stat = proc_stat(child.pid)
        record = PidRecord(
            namespace=pod.namespace,
            name=pod.name,
            node=pod.node,
            uid=pod.uid,
            pid=child.pid,
            start_time=stat[1] if stat is not None else -1,
            boot_id=self.records.boot_id,
            command_id=pod.command_id or command_id,
            argv=argv,
            log_path=str(log_path),
            started_at=time.time(),
        )
        # no await between the spawn and the record: a cancelled executor never loses track of it
        self.records.write(record)
        tracked = self._track(pod, WatchedProcess(record.pid, record.start_time, child), reporter)
        try:
            await reporter.report(PodRunning(**common), causation_id=command_id)
            pod.phase = "Running"
            await reporter.report(PodReady(**common), causation_id=command_id)
            pod.ready = True
        finally:
            tracked.announced.set()
        log.info("process.started", pod=pod.key, pid=child.pid, argv=argv)

    async def _failed(self, pod: LocalPod, report: PodFailed, reporter: PodReporter) -> None:
        await reporter.report(report, causation_id=report.command_id)
        pod.phase, pod.ready, pod.reason = "Failed", False, report.reason

    async def _watch(self, tracked: _Tracked, reporter: PodReporter | None) -> None:
        await tracked.proc.watch()
        if tracked.stopping or reporter is None:
            return
        await tracked.announced.wait()  # set by then or soon: _run sets it even when cancelled
        if tracked.stopping or self._tracked.get(tracked.pod.key) is not tracked:
            return
        del self._tracked[tracked.pod.key]
        pod = tracked.pod
        self.records.remove(pod.node, pod.namespace, pod.name)
        report = _exit_report(pod, tracked.proc.code)
        log.warning("process.exited", pod=pod.key, pid=tracked.proc.pid, code=tracked.proc.code)
        await reporter.report(report, causation_id=pod.command_id)
        pod.ready = False
        if isinstance(report, PodFailed):
            pod.phase, pod.reason = "Failed", report.reason
        else:
            pod.phase = "Succeeded"

    async def stop(
        self, pod: LocalPod, command_id: str, reporter: PodReporter, *, grace_seconds: float, evict: bool
    ) -> None:
        tracked = self._tracked.get(pod.key)
        if tracked is not None:
            tracked.stopping = True
        await report_terminating(pod, command_id, reporter, grace_seconds)
        if tracked is not None:
            await tracked.proc.terminate(grace_seconds)
            await self._forget(tracked)
        self.records.remove(pod.node, pod.namespace, pod.name)
        await reporter.report(gone_report(pod, command_id, evict=evict), causation_id=command_id)
        pod.phase, pod.ready = "Deleted", False
        log.info("process.stopped", pod=pod.key, pid=tracked.proc.pid if tracked is not None else None)

    async def _forget(self, tracked: _Tracked) -> None:
        if self._tracked.get(tracked.pod.key) is tracked:
            del self._tracked[tracked.pod.key]
        watcher = tracked.watcher
        if watcher is not None and not watcher.done():
            watcher.cancel()
        if watcher is not None:
            with contextlib.suppress(
                asyncio.CancelledError, Exception
            ):  # a failure is logged by its callback
                await watcher

    # --- executor restarts --------------------------------------------------------------------------

    async def reattach(
        self, pods: Sequence[LocalPod], reporter: PodReporter, *, nodes: frozenset[str] | None
    ) -> None:
        records: dict[str, PidRecord] = {}
        strays: list[PidRecord] = []
        for found in self.records.read(nodes):
            records[found.key] = found
        for pod in pods:
            if pod.key in self._tracked or pod.phase == "Deleted":
                records.pop(pod.key, None)
                continue
            record: PidRecord | None = records.pop(pod.key, None)
            if record is not None and record.uid != pod.uid:
                strays.append(record)  # an earlier pod of the same name
                record = None
            await self._reattach_one(pod, record, reporter)
        strays.extend(records.values())
        for record in strays:
            await self._stop_stray(record)

    async def _reattach_one(self, pod: LocalPod, record: PidRecord | None, reporter: PodReporter) -> None:
        if not pod.command_id and record is not None:
            pod.command_id = record.command_id
        common = pod_fields(pod, pod.command_id)
        if record is not None and self.records.ours(record):
            tracked = self._track(pod, WatchedProcess(record.pid, record.start_time), reporter)
            try:
                if not pod.terminal and not pod.terminating:
                    # the log may lag what happened (the executor stopped between spawn and reports)
                    if pod.phase != "Running":
                        await reporter.report(PodRunning(**common), causation_id=pod.command_id)
                        pod.phase = "Running"
                    if not pod.ready:
                        await reporter.report(PodReady(**common), causation_id=pod.command_id)
                        pod.ready = True
            finally:
                tracked.announced.set()
            log.info("process.reattached", pod=pod.key, pid=record.pid)
            return
        if record is not None:
            self.records.remove(pod.node, pod.namespace, pod.name)
        if pod.terminal or pod.terminating:
            return  # nothing runs, and the log already says it ends (the executor finishes a stop)
        if record is None and pod.phase == "Pending":
            await self._run(pod, pod.command_id, reporter)  # created, never started
            return
        reason = GONE_WHILE_DOWN if record is not None else NO_RECORD
        log.warning(
            "process.lost", pod=pod.key, pid=record.pid if record is not None else None, reason=reason
        )
        await self._failed(pod, PodFailed(**common, reason=reason), reporter)

    async def _stop_stray(self, record: PidRecord) -> None:
        """A process recorded for a pod the log does not place here (deleted meanwhile, its node
        removed): nothing will ever stop it but us, and it must not run beside its replacement."""
        if self.records.ours(record):
            log.warning("process.stray_stopped", pod=record.key, node=record.node, pid=record.pid)
            proc = WatchedProcess(record.pid, record.start_time)
            watcher = asyncio.ensure_future(proc.watch())
            try:
                await proc.terminate(ORPHAN_GRACE_SECONDS)
            finally:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
        self.records.remove(record.node, record.namespace, record.name)

    async def shutdown(self, reporter: PodReporter | None, *, stop_pods: bool) -> None:
        tracked = list(self._tracked.values())
        if stop_pods:
            results = await asyncio.gather(
                *(self._halt(t, reporter) for t in tracked), return_exceptions=True
            )
            for t, result in zip(tracked, results, strict=True):
                if isinstance(result, BaseException):
                    log.error("process.stop_failed", pod=t.pod.key, error=repr(result))
        elif tracked:
            log.info("process.left_running", pods=sorted(f"{t.pod.key}={t.proc.pid}" for t in tracked))
        for t in tracked:
            await self._forget(t)

    async def _halt(self, tracked: _Tracked, reporter: PodReporter | None) -> None:
        tracked.stopping = True
        pod = tracked.pod
        await tracked.proc.terminate(pod.grace_seconds)
        self.records.remove(pod.node, pod.namespace, pod.name)
        code = tracked.proc.code
        exit_code = None if code is None else _exit_code(code)
        pod.phase, pod.ready, pod.reason = "Failed", False, STOPPED_ON_EXIT
        if reporter is None or pod.terminating:
            return  # a pod being deleted needs no failure: the next executor finishes its delete
        report = PodFailed(**pod_fields(pod, pod.command_id), reason=STOPPED_ON_EXIT, exit_code=exit_code)
        try:
            async with asyncio.timeout(EXIT_REPORT_SECONDS):
                await reporter.report(report, causation_id=pod.command_id)
        except TimeoutError:
            # the next executor finds the process gone and reports it then
            log.warning("process.stop_unreported", pod=pod.key)

    async def close(self) -> None:
        await self.shutdown(None, stop_pods=True)
