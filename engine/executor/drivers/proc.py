"""A local process as the process driver sees it: identified by ``/proc``, watched, signalled, stopped.

A pid alone does not name a process for long: once the process exits and is reaped, the kernel hands the
number to someone else. So a process is named by its pid *and* its start time (field 22 of
``/proc/<pid>/stat``, clock ticks since boot), on one boot (``current_boot_id``); only while both match
is it signalled.

A process is watched either as our child (``subprocess.Popen``: its exit code is known) or, after an
executor restart, as a process someone else started (its exit code is not). Its exit is seen through a
pidfd registered with the event loop (Linux 5.3+), or by polling ``/proc`` twice a second where
``os.pidfd_open`` is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from pathlib import Path

import structlog

log = structlog.get_logger("dsctl.process")

#: polling period where pidfds are not available
POLL_SECONDS = 0.5
#: how long to wait for a process after SIGKILL before giving up on it (a process in D state)
KILL_WAIT_SECONDS = 10.0


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


class WatchedProcess:
    """One process: our child (its exit code is known) or re-attached (it is not)."""

    def __init__(self, pid: int, start_time: int, child: subprocess.Popen[bytes] | None = None) -> None:
        self.pid = pid
        self.start_time = start_time
        self.child = child
        self.exited = asyncio.Event()
        self.code: int | None = None

    def running(self) -> bool:
        if self.exited.is_set():
            return False
        if self.child is not None:
            return self.child.poll() is None
        return running_as(self.pid, self.start_time)

    def signal_group(self, sig: signal.Signals) -> None:
        """Signal the process group, only while its leader is still the process we started (a pid
        number alone may by now belong to someone else)."""
        if not self.running():
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    async def watch(self) -> None:
        """Return once the process has exited; sets ``exited`` (and ``code`` for a child)."""
        try:
            fd = os.pidfd_open(self.pid)
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

    async def terminate(self, grace_seconds: float) -> None:
        """SIGTERM the process group, then SIGKILL it once the grace period is over (``exited`` is set
        by the process's watcher, which must be running)."""
        self.signal_group(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.exited.wait(), timeout=max(grace_seconds, 0.1))
            return
        except TimeoutError:
            self.signal_group(signal.SIGKILL)
        try:
            await asyncio.wait_for(self.exited.wait(), timeout=KILL_WAIT_SECONDS)
        except TimeoutError:
            log.error("process.unkillable", pid=self.pid, seconds=KILL_WAIT_SECONDS)
