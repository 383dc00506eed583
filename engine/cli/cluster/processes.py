"""What ``up`` started, found again from another shell: pid records with start times, usage, stopping."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import msgspec

from engine.cli.cluster.layout import (
    ROOT,
    STOP_TIMEOUT,
    Layout,
)
from engine.executor.drivers.proc import proc_stat, running_as

# --- processes ------------------------------------------------------------------------------------


class PidRecord(msgspec.Struct, frozen=True, kw_only=True):
    pid: int
    #: /proc/<pid>/stat field 22 (clock ticks after boot): tells our process from a recycled pid
    start: int
    argv: list[str]


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after its closing one
    return raw[raw.rindex(")") + 2 :].split()


def start_time(pid: int) -> int | None:
    stat = proc_stat(pid)
    return None if stat is None else stat[1]


def alive(rec: PidRecord) -> bool:
    """The process is running, and it is the one we started (same start time); a zombie is not."""
    return running_as(rec.pid, rec.start)


def usage(pid: int) -> tuple[int, float] | None:
    """(RSS in KiB, CPU seconds used so far) of a live process."""
    fields = _stat(pid)
    if fields is None:
        return None
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    rss = 0
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return rss, cpu


class Workspace:
    """The cluster directory: layout, configs, pid files, logs, stores."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.state = base / "cluster.json"
        self.run = base / "run"
        self.logs = base / "logs"

    def load(self) -> Layout | None:
        try:
            return msgspec.json.decode(self.state.read_bytes(), type=Layout)
        except FileNotFoundError:
            return None

    def save(self, layout: Layout) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        self.state.write_bytes(msgspec.json.format(msgspec.json.encode(layout)))

    def pid_file(self, name: str) -> Path:
        return self.run / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def record(self, name: str) -> PidRecord | None:
        """The live process recorded for ``name``; a stale file (gone, or a recycled pid) is removed."""
        path = self.pid_file(name)
        try:
            rec = msgspec.json.decode(path.read_bytes(), type=PidRecord)
        except FileNotFoundError:
            return None
        except msgspec.DecodeError:
            path.unlink(missing_ok=True)
            return None
        if alive(rec):
            return rec
        path.unlink(missing_ok=True)
        return None

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> PidRecord:
        """Start ``argv`` in its own session (Ctrl-C in this terminal does not reach it), output to its
        log, and record it. It is re-parented when this command exits; ``down`` stops it."""
        self.run.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.log_file(name), "ab") as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env=env,
                start_new_session=True,
            )
        started = start_time(proc.pid)
        rec = PidRecord(pid=proc.pid, start=started if started is not None else -1, argv=argv)
        tmp = self.pid_file(name).with_suffix(".tmp")
        tmp.write_bytes(msgspec.json.encode(rec))
        tmp.replace(self.pid_file(name))
        return rec

    def log_tail(self, name: str, lines: int = 10) -> str:
        try:
            return "\n".join(self.log_file(name).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def stop_all(ws: Workspace, names: Sequence[str], timeout: float = STOP_TIMEOUT) -> list[str]:
    """SIGTERM every recorded live process of ``names`` at once, SIGKILL what is left after ``timeout``;
    returns the names that had to be killed. Only pids whose start time matches are signalled."""
    recs = {n: r for n in names if (r := ws.record(n)) is not None}
    for rec in recs.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(rec.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(r) for r in recs.values()):
        time.sleep(0.1)
    killed = []
    for name, rec in recs.items():
        if alive(rec):
            killed.append(name)
            with contextlib.suppress(ProcessLookupError):
                os.kill(rec.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and any(alive(r) for r in recs.values()):
        time.sleep(0.05)
    for name, rec in recs.items():
        if not alive(rec):
            ws.pid_file(name).unlink(missing_ok=True)
    return killed
