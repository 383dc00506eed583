"""The process driver: a pod is its first container's ``command`` + ``args`` run as a local process.

Ready as soon as the process has started (there are no probes here); Failed when it exits non-zero,
Succeeded when it exits zero; stopped on delete with SIGTERM, then SIGKILL after the pod's
``terminationGracePeriodSeconds``. Output goes to ``<log_dir>/<namespace>_<pod>.log``. ``env`` entries
with a literal ``value`` are passed on; ``valueFrom`` is not supported and is reported in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path
from typing import Any

from engine.shell.drivers.base import LocalPod, PodReporter, created_report, pod_fields
from events.types import (
    PodDeleted,
    PodEvicted,
    PodFailed,
    PodReady,
    PodRunning,
    PodSucceeded,
    PodTerminating,
)


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


class ProcessDriver:
    name = "process"

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._procs: dict[str, asyncio.subprocess.Process] = {}
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._stopping: set[str] = set()

    async def start(self, pod: LocalPod, command_id: str, reporter: PodReporter) -> None:
        await reporter.report(created_report(pod, command_id), causation_id=command_id)
        await self.resume(pod, command_id, reporter)

    async def resume(self, pod: LocalPod, command_id: str, reporter: PodReporter) -> None:
        if pod.key in self._procs:
            return
        common = pod_fields(pod, command_id)
        try:
            argv = container_argv(pod.template.spec)
        except ValueError as err:
            await reporter.report(PodFailed(**common, reason=str(err)), causation_id=command_id)
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{pod.namespace}_{pod.name}.log"
        env = dict(os.environ)
        for item in (pod.template.spec.get("containers") or [{}])[0].get("env") or []:
            if isinstance(item, dict) and "name" in item and "value" in item:
                env[str(item["name"])] = str(item["value"])
        with log_path.open("ab") as out:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *argv, stdout=out, stderr=asyncio.subprocess.STDOUT, env=env, start_new_session=True
                )
            except OSError as err:
                await reporter.report(
                    PodFailed(**common, reason=f"cannot start {argv[0]!r}: {err.strerror}"),
                    causation_id=command_id,
                )
                return
        self._procs[pod.key] = proc
        await reporter.report(PodRunning(**common), causation_id=command_id)
        await reporter.report(PodReady(**common), causation_id=command_id)
        self._watchers[pod.key] = asyncio.ensure_future(self._watch(pod, proc, command_id, reporter))

    async def _watch(
        self, pod: LocalPod, proc: asyncio.subprocess.Process, command_id: str, reporter: PodReporter
    ) -> None:
        code = await proc.wait()
        self._procs.pop(pod.key, None)
        if pod.key in self._stopping:
            return
        common = pod_fields(pod, command_id)
        if code == 0:
            await reporter.report(PodSucceeded(**common), causation_id=command_id)
        else:
            await reporter.report(
                PodFailed(**common, reason=f"process exited with code {code}", exit_code=code),
                causation_id=command_id,
            )

    async def stop(
        self, pod: LocalPod, command_id: str, reporter: PodReporter, *, grace_seconds: float, evict: bool
    ) -> None:
        common = pod_fields(pod, command_id)
        self._stopping.add(pod.key)
        try:
            if not pod.terminating:
                pod.terminating = True
                await reporter.report(
                    PodTerminating(**common, grace_period_seconds=int(grace_seconds)), causation_id=command_id
                )
            proc = self._procs.pop(pod.key, None)
            if proc is not None and proc.returncode is None:
                await _terminate(proc, grace_seconds)
            watcher = self._watchers.pop(pod.key, None)
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            done = PodEvicted(**common, reason="evicted") if evict else PodDeleted(**common)
            await reporter.report(done, causation_id=command_id)
        finally:
            self._stopping.discard(pod.key)

    async def close(self) -> None:
        for key, proc in list(self._procs.items()):
            self._stopping.add(key)
            if proc.returncode is None:
                await _terminate(proc, 2.0)
        for task in self._watchers.values():
            task.cancel()
        for task in self._watchers.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._procs.clear()
        self._watchers.clear()


async def _terminate(proc: asyncio.subprocess.Process, grace_seconds: float) -> None:
    """SIGTERM the process group, then SIGKILL it once the grace period is over."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), timeout=max(grace_seconds, 0.1))
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
