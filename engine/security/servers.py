"""Which running servers include a credentials directory's ``auth.conf``, so adding an identity can reload
them (``dsctl admin credentials executor --node N`` while ``dsctl up`` or ``ops/cluster`` runs).

A server started by dsctl records itself in ``<credentials>/servers/<name>.json`` (its pid and process
start time); a reload sends SIGHUP to each recorded server that is still the process we started (a
recycled pid has another start time and is never signalled) and drops the stale records. nats-server
re-reads its configuration, includes and all, on SIGHUP: the new user can connect at once, and the
connected ones keep their connections.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import msgspec

from engine.security.credentials import CredentialStore, private_dir, write_private


class ServerRecord(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    pid: int
    #: /proc/<pid>/stat field 22: tells our server from a pid the kernel gave to someone else
    start: int


def _start_time(pid: int) -> int | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    if fields[0] == "Z":  # a zombie is gone
        return None
    return int(fields[19])


def _dir(store: CredentialStore) -> Path:
    return store.dir / "servers"


def register(store: CredentialStore, name: str, pid: int) -> None:
    start = _start_time(pid)
    if start is None:
        return
    private_dir(_dir(store))
    record = ServerRecord(name=name, pid=pid, start=start)
    write_private(_dir(store) / f"{name}.json", msgspec.json.encode(record))


def unregister(store: CredentialStore, name: str) -> None:
    with contextlib.suppress(OSError):
        (_dir(store) / f"{name}.json").unlink()


def running(store: CredentialStore) -> list[ServerRecord]:
    """The recorded servers still running as the process recorded; stale records are removed."""
    out = []
    folder = _dir(store)
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            rec = msgspec.json.decode(path.read_bytes(), type=ServerRecord)
        except (OSError, msgspec.DecodeError):
            path.unlink(missing_ok=True)
            continue
        if _start_time(rec.pid) == rec.start:
            out.append(rec)
        else:
            path.unlink(missing_ok=True)
    return out


def reload(store: CredentialStore) -> list[str]:
    """SIGHUP every running server recorded for ``store``; returns their names."""
    done = []
    for rec in running(store):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(rec.pid, signal.SIGHUP)
            done.append(rec.name)
    return done
