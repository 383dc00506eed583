"""``dsctl logs POD``: a pod's log, asked of the executor serving its node over NATS request/reply.

Being built (issue 14); until then the command says so instead of pretending.
"""

from __future__ import annotations

from typing import Any, TextIO

from events.errors import InvalidInput


async def logs(nc: Any, pod: str, namespace: str, *, follow: bool, tail: int, out: TextIO) -> int:
    raise InvalidInput("dsctl logs is not available yet", "logs")
