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
- Each is recorded in ``<state_dir>/<node>/pods/<namespace>_<pod>.json`` (``PidRecord``): the pid and
  the process start time (field 22 of ``/proc/<pid>/stat``, clock ticks since boot) with the boot id,
  the pod uid, the create command id, argv, log path and start wall time. The file is written atomically
  (temp file, fsync, rename) before the pod is reported running, and removed once the process is gone.
- A restarted executor re-attaches (``reattach``): a recorded pid counts as ours only if ``/proc`` shows
  a live process with the same start time on the same boot, so a recycled pid is never mistaken for the
  pod, nor signalled. A pod whose process is gone is reported Failed, so the engine replaces it.
- A re-attached process is not our child: its exit is watched through a pidfd registered with the event
  loop (Linux 5.3+), or by polling ``/proc`` twice a second where ``os.pidfd_open`` is missing, and its
  exit code is unknown, so it is reported Failed with a reason saying so (a daemon is not meant to exit;
  a Succeeded would also be replaced, so nothing is lost by the cautious choice).
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

import msgspec
import structlog

from engine.executor.drivers.base import LocalPod, PodReporter, created_report, pod_fields
from events.types import (
    PodDeleted,
    PodEvicted,
    PodFailed,
    PodReady,
    PodRunning,
    PodSucceeded,
    PodTerminating,
)

log = structlog.get_logger("dsctl.process")

#: polling period where pidfds are not available
POLL_SECONDS = 0.5
#: how long to wait for a process after SIGKILL before giving up on it (a process in D state)
KILL_WAIT_SECONDS = 10.0
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


class PidRecord(msgspec.Struct, kw_only=True):
    """What identifies a pod's process on its node across executor restarts."""

    namespace: str
    name: str
    node: str
    uid: str
    pid: int
    #: field 22 of /proc/<pid>/stat (clock ticks after boot): with the pid, the process's identity
    start_time: int
    boot_id: str
    command_id: str
    argv: list[str]
    log_path: str
    started_at: float

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


_record_decoder = msgspec.json.Decoder(PidRecord)


def current_boot_id() -> str:
    """The kernel's boot id: start times count from boot, so a record from another boot is never ours."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time) from /proc/<pid>/stat; None when there is no such process (or no /proc)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may contain spaces or parentheses itself
    fields = raw[raw.rindex(b")") + 2 :].split()
    try:
        return fields[0].decode(), int(fields[19])
    except (IndexError, ValueError):
        return None


def running_as(pid: int, start_time: int) -> bool:
    """True while ``pid`` is a live (not zombie) process that started at ``start_time``."""
    stat = proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X") and stat[1] == start_time


class _Process:
    """A pod's process: our child (its exit code is known) or re-attached (it is not)."""

    def __init__(self, record: PidRecord, child: subprocess.Popen[bytes] | None) -> None:
        self.record = record
        self.child = child
        self.exited = asyncio.Event()
        self.code: int | None = None

    @property
    def pid(self) -> int:
        return self.record.pid

    def running(self) -> bool:
        if self.exited.is_set():
            return False
        if self.child is not None:
            return self.child.poll() is None
        return running_as(self.record.pid, self.record.start_time)

    def signal_group(self, sig: signal.Signals) -> None:
        """Signal the process group, only while its leader is still the process we started (a pid
        number alone may by now belong to someone else)."""
        if not self.running():
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.record.pid, sig)

    async def watch(self) -> None:
        """Return once the process has exited; sets ``exited`` (and ``code`` for a child)."""
        try:
            fd = os.pidfd_open(self.record.pid)
        except ProcessLookupError:
            fd = None
        except (AttributeError, OSError):
            fd = -1
        try:
            if fd is None:
                pass  # already gone (and reaped)
            elif fd < 0:
                while self.running():
                    await asyncio.sleep(POLL_SECONDS)
            elif self.running():  # checked after opening: the pidfd now pins this very process
                loop = asyncio.get_running_loop()
                readable: asyncio.Future[None] = loop.create_future()

                def ready() -> None:
                    if not readable.done():
                        readable.set_result(None)

                loop.add_reader(fd, ready)
                try:
                    await readable
                finally:
                    loop.remove_reader(fd)
        finally:
            if fd is not None and fd >= 0:
                os.close(fd)
        if self.child is not None:
            self.code = self.child.poll()
        self.exited.set()


async def _terminate(proc: _Process, grace_seconds: float) -> None:
    """SIGTERM the process group, then SIGKILL it once the grace period is over (``exited`` is set by
    the process's watcher, which must be running)."""
    proc.signal_group(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.exited.wait(), timeout=max(grace_seconds, 0.1))
        return
    except TimeoutError:
        proc.signal_group(signal.SIGKILL)
    try:
        await asyncio.wait_for(proc.exited.wait(), timeout=KILL_WAIT_SECONDS)
    except TimeoutError:
        log.error("process.unkillable", pid=proc.pid, seconds=KILL_WAIT_SECONDS)


class _Tracked:
    """A pod this driver runs: its process, the task watching it, and whether a stop is under way."""

    def __init__(self, pod: LocalPod, proc: _Process) -> None:
        self.pod = pod
        self.proc = proc
        self.stopping = False
        #: set once Running/Ready are reported, so an exit report never comes before them
        self.announced = asyncio.Event()
        self.watcher: asyncio.Task[None] | None = None


def _grace(pod: LocalPod) -> float:
    return float(pod.template.spec.get("terminationGracePeriodSeconds", 30))


def _exit_report(pod: LocalPod, code: int | None) -> PodFailed | PodSucceeded:
    common = pod_fields(pod, pod.command_id)
    if code == 0:
        return PodSucceeded(**common)
    if code is None:
        return PodFailed(**common, reason=EXIT_UNKNOWN)
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
        return PodFailed(**common, reason=f"process killed by {name}", exit_code=128 - code)
    return PodFailed(**common, reason=f"process exited with code {code}", exit_code=code)


def _log_watch_failure(task: asyncio.Task[None]) -> None:
    """A watcher whose exit report was refused: say so (the pod stays as last reported)."""
    if not task.cancelled() and task.exception() is not None:
        log.error("process.exit_unreported", error=repr(task.exception()))


def _dir_name(name: str) -> str:
    """A node or pod name as one path component (DNS names already are; be safe with anything else)."""
    safe = name.replace("/", "_").replace("\0", "_")
    return f"_{safe}" if safe in ("", ".", "..") else safe


class ProcessDriver:
    name = "process"

    def __init__(self, log_dir: Path, state_dir: Path | None = None) -> None:
        """``state_dir``: where pid records live (default ``<log_dir>/.state``)."""
        self.log_dir = log_dir
        self.state_dir = state_dir if state_dir is not None else log_dir / ".state"
        self._boot_id = current_boot_id()
        self._tracked: dict[str, _Tracked] = {}

    # --- records ------------------------------------------------------------------------------------

    def record_path(self, node: str, namespace: str, name: str) -> Path:
        return self.state_dir / _dir_name(node) / "pods" / f"{_dir_name(namespace)}_{_dir_name(name)}.json"

    def _write_record(self, record: PidRecord) -> None:
        path = self.record_path(record.node, record.namespace, record.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        with tmp.open("wb") as out:
            out.write(msgspec.json.encode(record))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)

    def _remove_record(self, pod: LocalPod) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.record_path(pod.node, pod.namespace, pod.name).unlink()

    def _read_records(self, nodes: frozenset[str] | None) -> list[tuple[Path, PidRecord]]:
        dirs = (
            sorted(self.state_dir.glob("*/pods"))
            if nodes is None
            else [self.state_dir / _dir_name(n) / "pods" for n in sorted(nodes)]
        )
        out: list[tuple[Path, PidRecord]] = []
        for directory in dirs:
            for path in sorted(directory.glob("*.json")):
                try:
                    out.append((path, _record_decoder.decode(path.read_bytes())))
                except (OSError, msgspec.DecodeError) as err:
                    log.warning("process.bad_record", path=str(path), error=str(err))
        return out

    def ours(self, record: PidRecord) -> bool:
        """Whether the recorded process is still the one we started (same boot, same start time)."""
        return (
            bool(self._boot_id)
            and record.boot_id == self._boot_id
            and running_as(record.pid, record.start_time)
        )

    # --- life ---------------------------------------------------------------------------------------

    def pid_of(self, pod: LocalPod) -> int | None:
        tracked = self._tracked.get(pod.key)
        return tracked.proc.pid if tracked is not None else None

    def _track(self, pod: LocalPod, proc: _Process, reporter: PodReporter | None) -> _Tracked:
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
        log_path = self.log_dir / f"{pod.namespace}_{pod.name}.log"
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
            boot_id=self._boot_id,
            command_id=pod.command_id or command_id,
            argv=argv,
            log_path=str(log_path),
            started_at=time.time(),
        )
        # no await between the spawn and the record: a cancelled executor never loses track of it
        self._write_record(record)
        tracked = self._track(pod, _Process(record, child), reporter)
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
        self._remove_record(pod)
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
        common = pod_fields(pod, command_id)
        tracked = self._tracked.get(pod.key)
        if tracked is not None:
            tracked.stopping = True
        if not pod.terminating:
            pod.terminating = True
            await reporter.report(
                PodTerminating(**common, grace_period_seconds=int(grace_seconds)), causation_id=command_id
            )
        if tracked is not None:
            await _terminate(tracked.proc, grace_seconds)
            await self._forget(tracked)
        self._remove_record(pod)
        done = PodEvicted(**common, reason="evicted") if evict else PodDeleted(**common)
        await reporter.report(done, causation_id=command_id)
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
        for _, found in self._read_records(nodes):
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
        if record is not None and self.ours(record):
            tracked = self._track(pod, _Process(record, None), reporter)
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
            self._remove_record(pod)
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
        if self.ours(record):
            log.warning("process.stray_stopped", pod=record.key, node=record.node, pid=record.pid)
            proc = _Process(record, None)
            watcher = asyncio.ensure_future(proc.watch())
            try:
                await _terminate(proc, ORPHAN_GRACE_SECONDS)
            finally:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
        with contextlib.suppress(FileNotFoundError):
            self.record_path(record.node, record.namespace, record.name).unlink()

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
        await _terminate(tracked.proc, _grace(pod))
        self._remove_record(pod)
        code = tracked.proc.code
        exit_code = None if code is None else (128 - code if code < 0 else code)
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
