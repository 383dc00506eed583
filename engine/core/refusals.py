"""How the ingest door words a refusal: every way an input can be wrong (a decode error, a broken rule,
a list of bad batch items) mapped onto one shape, the ``ErrorDetail`` list and reason code of
``events.ingest_wire``, and the ``DSE_REJECTED`` record that keeps the refused input.

Why one shape: a caller in another language reads ``field`` and ``reason_code`` whatever went wrong, and
an operator reading ``DSE_REJECTED`` sees the same words the caller saw. Why bounded: a reason may quote
the input (an unknown field's name), and the reply and the record must stay far below the server's max
payload whatever arrived.
"""

from __future__ import annotations

import base64
import codecs
from collections.abc import Sequence
from datetime import datetime
from typing import Final

import msgspec

from engine.core.validation import ManifestInvalid
from events.codec import named_field
from events.errors import InvalidInput, MalformedEvent
from events.ingest_wire import INVALID, MALFORMED, TOO_LARGE, ErrorDetail, Rejection

#: at most this many problems are listed in one reply or record
MAX_LISTED_ERRORS: Final = 50
#: a refused input is kept up to this size (the record must fit the server's max payload, 1 MiB default)
MAX_KEPT_INPUT: Final = 256 * 1024


class Refused(InvalidInput):
    """An input the service will never accept. ``reason_code`` names the ``dse.rejected.<code>`` subject;
    ``errors`` lists every problem found (a batch can have many)."""

    def __init__(
        self,
        reason_code: str,
        message: str,
        field: str,
        errors: Sequence[ErrorDetail] = (),
        *,
        limit: str = "",
    ) -> None:
        super().__init__(message, field)
        if field and field in message:  # already says where: do not repeat it
            self.args = (message,)
        self.reason_code = reason_code
        self.errors = list(errors) or [ErrorDetail(field=field, reason=message, limit=limit)]
        #: the limit exceeded ("max_depth 64"), for a ``too_large`` refusal: the first one listed
        self.limit = limit or next((e.limit for e in self.errors if e.limit), "")


def over_limit(name: str, value: int, message: str, field: str = "$") -> Refused:
    """A refusal for exceeding a limit, naming it the same way everywhere: ``<name> <value>``."""
    limit = f"{name} {value}"
    return Refused(TOO_LARGE, f"{message} ({limit})", field, limit=limit)


def refusal(err: InvalidInput, *, index: int | None = None, line: int | None = None) -> Refused:
    """Name the problem (and where in a batch it was) in the one shape the service replies with."""
    if isinstance(err, Refused) and index is None:
        return err
    code = err.reason_code if isinstance(err, Refused) else _code_of(err)
    field = err.field or "$"
    if isinstance(err, ManifestInvalid):
        details = [ErrorDetail(field=e.path or "$", reason=e.message) for e in err.errors]
    elif isinstance(err, Refused):
        details = err.errors
    else:
        details = [ErrorDetail(field=field, reason=err.reason)]
    if index is not None:
        details = [
            ErrorDetail(
                field=f"$[{index}]{d.field[1:]}", reason=d.reason, index=index, line=line, limit=d.limit
            )
            for d in details
        ]
        field = f"$[{index}]{field[1:]}"
    message = "; ".join(f"{d.field}: {d.reason}" for d in details[:5])
    if len(details) > 5:
        message += f"; and {len(details) - 5} more"
    return Refused(code, message, field, details)


def clipped(refused: Refused) -> Refused:
    """The same refusal with bounded texts and at most ``MAX_LISTED_ERRORS`` problems."""
    details = [
        ErrorDetail(
            field=_clip(d.field, 500), reason=_clip(d.reason), index=d.index, line=d.line, limit=d.limit
        )
        for d in refused.errors[:MAX_LISTED_ERRORS]
    ]
    return Refused(
        refused.reason_code, _clip(refused.reason), _clip(refused.field, 500), details, limit=refused.limit
    )


def rejection_record(
    endpoint: str,
    data: bytes,
    refused: Refused,
    *,
    received_at: datetime,
    max_bytes: int | None = None,
) -> Rejection:
    """What ``DSE_REJECTED`` keeps of a refused request: the reason, and the input (its first
    ``MAX_KEPT_INPUT`` bytes) as text, or as base64 when it is not UTF-8, so it can be replayed exactly.

    With ``max_bytes`` the encoded record is kept under it (the server's max_payload): the input is
    cut shorter until it fits, because JSON escaping can make text up to six times its size (a control
    character is written ``\u0001``), and a record that cannot be stored would lose the refusal."""
    keep = MAX_KEPT_INPUT
    while True:
        record = _record(endpoint, data, refused, received_at, keep)
        if max_bytes is None or keep == 0 or len(msgspec.json.encode(record)) <= max_bytes:
            return record
        keep //= 2


def _record(endpoint: str, data: bytes, refused: Refused, received_at: datetime, keep: int) -> Rejection:
    kept = data[:keep]
    try:
        # a cut through a character leaves its first bytes out rather than making the text base64
        text = codecs.getincrementaldecoder("utf-8")().decode(kept, final=len(data) <= keep)
        encoding = "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(kept).decode("ascii"), "base64"
    return Rejection(
        reason=refused.reason,
        field=refused.field,
        reason_code=refused.reason_code,
        endpoint=endpoint,
        received_at=received_at,
        input=text,
        input_encoding=encoding,
        input_truncated=len(data) > keep,
        errors=refused.errors[:MAX_LISTED_ERRORS],
        limit=refused.limit,
    )


def split_msgspec(err: Exception, root: str = "$") -> tuple[str, str]:
    """msgspec says "reason - at `$.x`"; a refusal wants (reason, path) with the path always set, and
    an unknown or missing field named by its own path (``$.colour``, not ``$``). ``root`` is where the
    decoded bytes sit in the request (``$.data`` for a payload)."""
    text = str(err)
    reason, sep, rest = text.partition(" - at `")
    path = root + rest.rstrip("`")[1:] if sep else root
    return (reason if sep else text), named_field(reason if sep else text, path)


def _clip(text: str, limit: int = 2000) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _code_of(err: InvalidInput) -> str:
    if isinstance(err, MalformedEvent):
        return MALFORMED
    return INVALID
