"""Read-ahead for a large catch-up: the ordered read runs in a child process, the fold in this one.

A replay costs ~17 µs of CPU per event in one thread, about half of it receiving (nats-py's parser, the
ordered consumer's loop, the ack subject) and half decoding and folding (docs/benchmarks.md). With two
cores the receiving half can run beside the fold: the child (``python -m engine.store.read_ahead``)
connects with the same ``NatsSettings``, runs the same ordered read (``ordered.py``) and writes compact
frames to a pipe; this process parses them (a struct per event) and decodes and folds exactly what the
in-process read would have given it (same sequence, stream time, subject and bytes).

The child is told where to connect through its environment (``DSCTL_READ_AHEAD_SETTINGS``, JSON), never
its command line (``ps`` shows that to every local user). Its stdout is the frame pipe (anything the
child prints goes to its stderr, which is ours); it dies with its parent (``PR_SET_PDEATHSIG``) and the
parent kills it when the read ends early. The parent never trusts a short read: the stream ends with a
"done" frame naming the last sequence, or an error frame; without either (the child crashed, was
killed, could not connect) the caller is told (``ReadAheadFailed``) and goes on in-process from the
last event folded. An integrity failure the child met (the stream deleted or replaced under the read)
is raised here as the same ``LogIntegrityError``.

Frame stream: batches ``<u32 length><payload>``; a payload is frames ``<u64 seq><u64 time ns><u32
subject length><u32 data length><subject><data>``. Length 0 ends the read (followed by ``<u64 last
sequence read>``); length ``0xFFFFFFFF`` carries an error (``<u32 length><JSON>``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import queue
import signal
import struct
import sys
import threading
from asyncio.subprocess import Process
from collections.abc import AsyncGenerator

import msgspec
import structlog
from nats.aio.client import Client

from engine.runtime.parent_death import die_with_parent
from engine.store.port import LogIntegrityError
from engine.store.settings import NatsSettings
from events.errors import DsctlError, NotFound

log = structlog.get_logger("dsctl.read_ahead")

ENV_SETTINGS = "DSCTL_READ_AHEAD_SETTINGS"
#: fewer events than this behind are read in-process: a child's start (~0.3 s of imports) costs more
MIN_EVENTS = 50_000
#: events the caller folds in-process while the child starts (~0.2 s of imports and connecting)
HEAD_EVENTS = 15_000
#: bytes gathered before the child writes a batch (large writes keep the pipe's cost per event small)
BATCH_BYTES = 1 << 20
#: the pipe's buffer asked for (Linux's default ceiling for an unprivileged process)
PIPE_BYTES = 1 << 20
#: batches the child holds while the pipe is full (its memory bound, about this many MiB)
QUEUED_BATCHES = 32
#: what the parent's pipe reader may buffer before it stops reading
READ_LIMIT = 32 << 20
_F_SETPIPE_SZ = 1031
_EOF = -1
_HDR_LINE = len(b"NATS/1.0")
_SPACE = ord(" ")

_FRAME = struct.Struct("<QQII")
_LEN = struct.Struct("<I")
_SEQ = struct.Struct("<Q")
_ERROR = 0xFFFFFFFF

#: (sequence, subject, stream time in ns, payload)
Frame = tuple[int, str, int, bytes]


class ReadAheadFailed(DsctlError):
    """The child ended without finishing the range (crash, kill, connection refused): read in-process."""


class _Failure(msgspec.Struct, frozen=True):
    kind: str
    message: str
    reason: str = ""


class ReadAhead:
    """How a child reads (``settings``: the engine's own connection's); ``min_events`` is the catch-up
    size from which a child is worth its start."""

    def __init__(
        self,
        settings: NatsSettings,
        *,
        min_events: int = MIN_EVENTS,
        head_events: int = HEAD_EVENTS,
        heartbeat: float = 2.0,
        stall_timeout: float = 30.0,
        api_timeout: float = 5.0,
    ) -> None:
        self.settings = settings
        self.min_events = min_events
        self.head_events = head_events
        self.heartbeat = heartbeat
        self.stall_timeout = stall_timeout
        self.api_timeout = api_timeout
        #: the process id of the newest child (for logs and tests)
        self.pid: int | None = None

    def worth_it(self, start: int, end: int) -> bool:
        return end - start + 1 >= self.min_events

    async def spawn(self, stream: str, start: int, end: int, *, expect_created: str | None = None) -> Process:
        """Start a child reading ``start..end`` of ``stream`` (it reads ahead as soon as it is up, while
        the caller does something else); ``batches`` takes what it read, ``stop`` ends it."""
        env = dict(os.environ)
        env[ENV_SETTINGS] = msgspec.json.encode(self.settings).decode()
        argv = [
            "-m",
            "engine.store.read_ahead",
            stream,
            str(start),
            str(end),
            repr(self.heartbeat),
            repr(self.stall_timeout),
            repr(self.api_timeout),
            expect_created or "",
        ]
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                env=env,
                limit=READ_LIMIT,
            )
        except OSError as err:
            raise ReadAheadFailed(f"read-ahead of {stream}: cannot start the reader: {err}") from err
        self.pid = proc.pid
        return proc

    async def batches(
        self,
        stream: str,
        start: int,
        end: int,
        *,
        expect_created: str | None = None,
        proc: Process | None = None,
    ) -> AsyncGenerator[list[Frame], None]:
        """The range ``start..end`` of ``stream`` in batches of frames, in sequence order, from ``proc``
        (spawned for that range) or a child started now. Raises ``ReadAheadFailed`` when the child stops
        short, ``LogIntegrityError`` when it found the stream gone or replaced."""
        if proc is None:
            proc = await self.spawn(stream, start, end, expect_created=expect_created)
        assert proc.stdout is not None
        reader = proc.stdout
        finished = False
        try:
            while True:
                try:
                    (size,) = _LEN.unpack(await reader.readexactly(4))
                    if size == 0:
                        (last,) = _SEQ.unpack(await reader.readexactly(_SEQ.size))
                        finished = True
                        log.debug("read_ahead.done", stream=stream, last_seq=last)
                        return
                    if size == _ERROR:
                        (length,) = _LEN.unpack(await reader.readexactly(4))
                        failure = msgspec.json.decode(await reader.readexactly(length), type=_Failure)
                        finished = True
                        if failure.kind == "integrity":
                            raise LogIntegrityError(failure.message, failure.reason or "read_ahead")
                        raise ReadAheadFailed(f"read-ahead of {stream}: {failure.message}")
                    payload = await reader.readexactly(size)
                except asyncio.IncompleteReadError as err:
                    code = await proc.wait()
                    raise ReadAheadFailed(
                        f"read-ahead of {stream}: the reader ended without finishing (exit code {code})"
                    ) from err
                yield _parse(payload)
                # the fold of that batch held the event loop: let the pipe transport read what came
                await asyncio.sleep(0)
        finally:
            await self.stop(proc, kill=not finished)

    @staticmethod
    async def stop(proc: Process, *, kill: bool = True) -> None:
        """Kill the child (unless it is finishing on its own) and reap it."""
        if proc.returncode is None:
            if kill:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(10):
                    await proc.wait()


def _parse(payload: bytes) -> list[Frame]:
    frames: list[Frame] = []
    add = frames.append
    unpack = _FRAME.unpack_from
    head = _FRAME.size
    offset, size = 0, len(payload)
    while offset < size:
        seq, time_ns, subject_len, data_len = unpack(payload, offset)
        offset += head
        subject = payload[offset : offset + subject_len].decode()
        offset += subject_len
        add((seq, subject, time_ns, payload[offset : offset + data_len]))
        offset += data_len
    return frames


# --- the child ---------------------------------------------------------------------------------------


def _status_headers_only(nc: Client) -> None:
    """Parse headers of status messages only (heartbeats, flow control: the ordered read needs those).

    The events' own headers (``Nats-Msg-Id``) are not used by the fold, and nats-py's header parser was
    a fifth of this child's CPU (docs/benchmarks.md). Only this child's connection is changed; a status
    line follows ``NATS/1.0`` after a space, a plain header block after CRLF."""
    parse = nc._process_headers

    async def status_only(headers: bytes | None) -> dict[str, str] | None:
        if headers and len(headers) > _HDR_LINE and headers[_HDR_LINE] == _SPACE:
            return await parse(headers)
        return None

    nc._process_headers = status_only  # type: ignore[method-assign]


class _Writer:
    """Writes the batches to the pipe from a thread: while the parent folds, the pipe is full, and a
    write in the event loop would stop the read (and with it the overlap this module is for)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=QUEUED_BATCHES)
        self.broken = False
        self._thread = threading.Thread(target=self._run, name="read-ahead-writer", daemon=True)
        self._thread.start()

    def put(self, data: bytes) -> None:
        if self.broken:
            raise BrokenPipeError("the parent stopped reading")
        self._queue.put(data)  # blocks only with QUEUED_BATCHES waiting: a memory bound

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            if self.broken:
                continue  # drain, so a blocked put returns and sees it
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(self._fd, view) :]
            except OSError:
                self.broken = True


async def _child(out: int, argv: list[str]) -> int:
    from engine.store.connection import close, connect
    from engine.store.jetstream_api import api_request
    from engine.store.ordered import ordered_messages

    stream, start, end = argv[0], int(argv[1]), int(argv[2])
    heartbeat, stall_timeout, api_timeout = float(argv[3]), float(argv[4]), float(argv[5])
    expect_created = argv[6] if len(argv) > 6 else ""
    raw = os.environ.pop(ENV_SETTINGS, "")
    settings = msgspec.json.decode(raw, type=NatsSettings) if raw else NatsSettings()
    buffer = bytearray()
    pack = _FRAME.pack

    def frame(seq: int, subject: str, time_ns: int, data: bytes) -> int:
        name = subject.encode()
        buffer.extend(pack(seq, time_ns, len(name), len(data)))
        buffer.extend(name)
        buffer.extend(data)
        return seq

    writer = _Writer(out)
    write = writer.put

    def flush() -> None:
        if buffer:
            write(_LEN.pack(len(buffer)) + buffer)
            buffer.clear()

    def fail(kind: str, message: str, reason: str = "") -> None:
        flush()
        body = msgspec.json.encode(_Failure(kind, message, reason))
        write(_LEN.pack(_ERROR) + _LEN.pack(len(body)) + body)

    async def check() -> None:
        if not expect_created:
            return
        try:
            info = await api_request(nc, f"STREAM.INFO.{stream}", timeout=api_timeout)
        except NotFound as err:
            raise LogIntegrityError(f"the stream {stream} is gone: {err}", "stream_deleted") from err
        created = str(info.get("created", ""))
        if created != expect_created:
            raise LogIntegrityError(
                f"the stream {stream} was replaced: it was created {expect_created}, the one there now "
                f"{created}",
                "stream_replaced",
            )

    try:
        nc = await connect(settings)
    except DsctlError as err:
        fail("transient", str(err))
        writer.close()
        return 2
    _status_headers_only(nc)
    last = start - 1
    try:
        await check()
        messages = ordered_messages(
            nc,
            stream,
            start_seq=start,
            stop_at=end,
            heartbeat=heartbeat,
            stall_timeout=stall_timeout,
            api_timeout=api_timeout,
            convert=frame,
            check_on_reset=check,
        )
        async with contextlib.aclosing(messages):
            async for seq in messages:
                last = seq
                if len(buffer) >= BATCH_BYTES:
                    flush()
        flush()
        write(_LEN.pack(0) + _SEQ.pack(last))
        return 0
    except LogIntegrityError as err:
        fail("integrity", str(err), err.kind)
        return 3
    except DsctlError as err:
        fail("transient", str(err))
        return 2
    finally:
        with contextlib.suppress(Exception):
            await close(nc)
        writer.close()  # everything queued is written before the child exits


def main() -> int:
    die_with_parent(signal.SIGKILL)
    # the frames go to the original stdout; anything else printed goes to stderr (the parent's log)
    out = os.dup(1)
    os.dup2(2, 1)
    from engine.runtime.logs import configure

    configure()  # the parent's DSCTL_LOG_LEVEL and DSCTL_LOG_FORMAT, on stderr
    with contextlib.suppress(OSError):  # a larger pipe lets the child run further ahead
        fcntl.fcntl(out, _F_SETPIPE_SZ, PIPE_BYTES)
    # the writer thread waits for the interpreter lock at most this long after a write (default 5 ms)
    sys.setswitchinterval(0.0005)
    try:
        return asyncio.run(_child(out, sys.argv[1:]))
    except BrokenPipeError:
        return 1  # the parent went away or stopped reading
    finally:
        with contextlib.suppress(OSError):
            os.close(out)


if __name__ == "__main__":
    sys.exit(main())
