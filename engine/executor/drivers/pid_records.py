"""Pid records: how the process driver finds its pods' processes again after an executor restart.

Each pod's process is recorded in ``<state_dir>/<node>/pods/<namespace>_<pod>.json`` (``PidRecord``):
the pid and the process start time with the boot id (what names a process, see ``proc.py``), the pod
uid, the create command id, argv, log path and start wall time. A record is written atomically (temp
file, fsync, rename) before the pod is reported running, so no executor stop, however abrupt, leaves a
process reported running that no record names; it is removed once the process is gone.

A recorded process counts as ours (``PidRecords.ours``) only if ``/proc`` shows a live process with the
recorded start time on the same boot: a recycled pid is never mistaken for the pod, nor signalled. Where
``/proc`` is missing (not Linux) no boot id is known and no record is ever ours.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import msgspec
import structlog

from engine.executor.drivers.proc import current_boot_id, running_as

log = structlog.get_logger("dsctl.process")


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


def _dir_name(name: str) -> str:
    """A node or pod name as one path component (DNS names already are; be safe with anything else)."""
    safe = name.replace("/", "_").replace("\0", "_")
    return f"_{safe}" if safe in ("", ".", "..") else safe


class PidRecords:
    """The records under one state directory, one sub-directory per node."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        #: this boot's id, read once: records from another boot are never ours
        self.boot_id = current_boot_id()

    def path(self, node: str, namespace: str, name: str) -> Path:
        return self.state_dir / _dir_name(node) / "pods" / f"{_dir_name(namespace)}_{_dir_name(name)}.json"

    def write(self, record: PidRecord) -> None:
        """Atomically: a reader (the next executor) sees the old record, the new one, or none."""
        path = self.path(record.node, record.namespace, record.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        with tmp.open("wb") as out:
            out.write(msgspec.json.encode(record))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)

    def remove(self, node: str, namespace: str, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(node, namespace, name).unlink()

    def read(self, nodes: frozenset[str] | None) -> list[PidRecord]:
        """Every readable record of ``nodes`` (None: every node), in path order; an unreadable one is
        logged and skipped (it names no process we could prove ours anyway)."""
        dirs = (
            sorted(self.state_dir.glob("*/pods"))
            if nodes is None
            else [self.state_dir / _dir_name(n) / "pods" for n in sorted(nodes)]
        )
        out: list[PidRecord] = []
        for directory in dirs:
            for path in sorted(directory.glob("*.json")):
                try:
                    out.append(_record_decoder.decode(path.read_bytes()))
                except (OSError, msgspec.DecodeError) as err:
                    log.warning("process.bad_record", path=str(path), error=str(err))
        return out

    def ours(self, record: PidRecord) -> bool:
        """Whether the recorded process is still the one we started (same boot, same start time)."""
        return (
            bool(self.boot_id)
            and record.boot_id == self.boot_id
            and running_as(record.pid, record.start_time)
        )
