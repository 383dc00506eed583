"""The fleet executor as its own process for the ``convergence`` scenario, as a deployment runs it:
the product's ``dsctl executor run --fleet --driver sim --ready-after 0`` against the bench's
(insecure) server, so the engine's event loop does the engine's work only (docs/benchmarks.md).

Its start-up (interpreter, imports, lease, rebuild) is kept out of the timed window: ``start`` returns
once the child has logged ``executor.started``. ``stop`` always ends it, SIGKILL when SIGTERM is not
enough, so a failed or timed-out run leaves no process behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import tempfile
from collections import deque
from pathlib import Path
from types import TracebackType

STARTED_EVENT = "executor.started"
STOP_GRACE_SECONDS = 5.0


class FleetProcess:
    """``async with FleetProcess(url) as fleet:`` a fleet executor process serving that server."""

    def __init__(self, url: str, *, start_timeout: float = 120.0) -> None:
        self.url = url
        self.start_timeout = start_timeout
        self.proc: asyncio.subprocess.Process | None = None
        self._tail: deque[str] = deque(maxlen=20)
        self._started = asyncio.Event()
        self._drain: asyncio.Task[None] | None = None
        self._empty_credentials = tempfile.TemporaryDirectory(prefix="dsctl-bench-creds-")

    async def __aenter__(self) -> FleetProcess:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        # no NATS_* from the caller's environment and an empty credentials directory: the bench's
        # server takes any client, and a developer's own .dsctl/credentials must not be picked up
        env = {k: v for k, v in os.environ.items() if not k.startswith("NATS_")}
        env["DSCTL_LOG_FORMAT"] = "json"
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "engine.cli",
            "executor",
            "run",
            "--fleet",
            "--driver",
            "sim",
            "--ready-after",
            "0",
            "--nats",
            self.url,
            "--credentials",
            self._empty_credentials.name,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        self._drain = asyncio.ensure_future(self._read_log())
        started = asyncio.ensure_future(self._started.wait())
        done, _ = await asyncio.wait(
            {started, self._drain}, timeout=self.start_timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if started not in done:
            started.cancel()
            last = " | ".join(self._tail) or "(no output)"
            if self.proc.returncode is not None or self._drain.done():
                raise RuntimeError(f"the fleet executor process exited before it started: {last}")
            raise TimeoutError(f"the fleet executor process did not start within {self.start_timeout:g} s")

    async def _read_log(self) -> None:
        """Keep its stderr drained (a full pipe would stall it) and notice its start."""
        assert self.proc is not None and self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            text = line.decode(errors="replace").rstrip()
            self._tail.append(text)
            if not self._started.is_set() and STARTED_EVENT in text:
                with contextlib.suppress(ValueError):
                    if json.loads(text).get("event") == STARTED_EVENT:
                        self._started.set()

    def cpu_seconds(self) -> float | None:
        """User + system CPU seconds it has used so far (Linux ``/proc``; None elsewhere or once gone)."""
        if self.proc is None:
            return None
        try:
            stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        except OSError:
            return None
        fields = stat.rsplit(")", 1)[1].split()
        # after the command name: state is field 3, utime and stime are fields 14 and 15
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    async def stop(self) -> None:
        proc = self.proc
        try:
            if proc is not None and proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), STOP_GRACE_SECONDS)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    await proc.wait()
            if self._drain is not None:
                self._drain.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._drain
        finally:
            if proc is not None and proc.returncode is None:  # cancelled while waiting: no survivor
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            self._empty_credentials.cleanup()
