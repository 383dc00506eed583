"""Reading a pod's log file as ``dsctl logs`` wants it: the last N lines, then on from a byte offset.

The process driver appends each pod's output to one file; a reader's cursor is a byte offset into it,
so a follow that resumes (each of its requests is a new one, engine/executor/pod_logs.py) neither
repeats nor skips a byte. Reads end on a line boundary unless a single line outgrows the read (then it
is cut on a UTF-8 character boundary) or the caller wants an unfinished last line too (the pod ended,
or the read is not a follow): a follow otherwise waits for the end of a line being written.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

from engine.executor.drivers.base import LogRead

#: how much of the file a tail reads at a time, from the end backwards
TAIL_BLOCK = 64 * 1024


def tail_offset(f: BinaryIO, size: int, lines: int) -> int:
    """Where the last ``lines`` lines of the file start (a final newline ends the last line, it does not
    start an empty one)."""
    if lines == 0 or size == 0:
        return size
    f.seek(size - 1)
    end = size - 1 if f.read(1) == b"\n" else size
    found = 0
    while end > 0:
        start = max(0, end - TAIL_BLOCK)
        f.seek(start)
        data = f.read(end - start)
        i = len(data)
        while (i := data.rfind(b"\n", 0, i)) >= 0:
            found += 1
            if found == lines:
                return start + i + 1
        end = start
    return 0


def _char_boundary(data: bytes) -> int:
    """The longest prefix of ``data`` that does not end inside a UTF-8 character."""
    end = len(data)
    back = 0
    while back < 3 and end - back > 0 and data[end - back - 1] & 0xC0 == 0x80:
        back += 1
    if end - back > 0 and data[end - back - 1] >= 0xC0:
        lead = data[end - back - 1]
        need = 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
        if back + 1 < need:
            return end - back - 1
    return end


def read_from(path: Path, *, cursor: int | None, tail: int, limit: int, partial: bool) -> LogRead | None:
    """Blocking (run it in a thread). None when the file does not exist."""
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return None
    with f:
        size = os.fstat(f.fileno()).st_size
        if cursor is None:
            cursor = 0 if tail < 0 else tail_offset(f, size, tail)
        elif cursor > size:
            cursor = 0  # the file was truncated or made anew: read it from its start
        f.seek(cursor)
        data = f.read(min(limit, size - cursor))
        more = cursor + len(data) < size
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n")
            if cut >= 0 and (more or not partial):
                data = data[: cut + 1]
            elif cut < 0 and len(data) < limit and not partial:
                data = b""  # an unfinished line: wait for its end
            elif cut < 0:
                data = data[: _char_boundary(data)] or data
        text = data.decode("utf-8", errors="replace")
        next_cursor = cursor + len(data)
        return LogRead(text=text, cursor=next_cursor, more=next_cursor < size and len(data) > 0)
