"""``dsctl events publish -f FILE``: a JSON-lines file sent through the ingest service, line by line.

Why through the service and not straight to the stream: each line is validated exactly as any other
service's input is, a refused line is recorded in ``DSE_REJECTED``, and the report names the field; a
file is a batch of facts from outside like any other.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from nats.aio.client import Client

from engine.ingest.client import IngestClient
from events.errors import InvalidInput, NotFound, TransientError


def _lines(path: str | Path) -> Iterator[tuple[int, bytes]]:
    if str(path) == "-":
        data = sys.stdin.buffer.read()
    else:
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError as err:
            raise NotFound(f'the file "{path}" does not exist') from err
        except OSError as err:
            raise InvalidInput(f'cannot read "{path}": {err.strerror or err}') from err
    for number, line in enumerate(data.split(b"\n"), start=1):
        if line.strip():
            yield number, line.rstrip(b"\r")


async def publish_file(
    nc: Client, path: str | Path, *, out: TextIO, client: IngestClient | None = None
) -> int:
    """Publish each line of a JSON-lines file (``-`` is stdin) through the ingest service, one at a time
    so the log keeps the file's order, reporting each line as it is answered:

        line 1: accepted seq=41 id=...
        line 2: duplicate seq=41 id=...
        line 3: rejected: $.data.labels: Expected `object`, got `str`

    A refused line does not stop the rest (the service recorded it); a transient failure does, since the
    following lines would fail the same way. Returns 0 when every line was accepted, 1 otherwise.
    """
    client = client or IngestClient(nc, attempts=1)
    failed = 0
    lines = list(_lines(path))
    for position, (number, line) in enumerate(lines):
        try:
            reply = await client.publish_raw(line)
        except InvalidInput as err:
            failed += 1
            print(f"line {number}: rejected: {err}", file=out)
            continue
        except TransientError as err:
            failed += len(lines) - position
            print(f"line {number}: error: {err}", file=out)
            rest = len(lines) - position - 1
            if rest:
                print(f"stopped: {rest} more line(s) not sent", file=out)
            break
        word = "duplicate" if reply.duplicate else "accepted"
        print(f"line {number}: {word} seq={reply.seq} id={reply.id}", file=out)
    out.flush()
    return 0 if failed == 0 else 1
