"""What travels between the CLI and the query service: one request, a reply cut into parts.

Kept apart from the service so the CLI can speak it without importing the service. The reply carries
the command's own output (``out``/``err``/``code``) rather than objects: the engine runs the very code a
log-rebuild would, on its live state, so the two paths print the same bytes by construction
(docs/console.md, "The query service").

A reply can be larger than the server's max_payload (``get pods -A -o json`` at 50,000 pods is tens of
MB), so it is sent as several messages to the requester's inbox, each carrying ``Dsctl-Part`` = ``i/n``.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

SERVICE_NAME: Final = "dsctl-query"
#: one subject per verb; ``dse.query.>`` is what an auditor's permissions must allow
SUBJECT_PREFIX: Final = "dse.query."
VERBS: Final = ("get", "describe", "explain", "rollout")
#: answered by the service itself, from its decision index (``engine.query.index``)
AUDIT: Final = "audit"
#: the queue group every engine's query service joins: any one of them answers
QUEUE_GROUP: Final = "dsctl-query"
PART_HEADER: Final = "Dsctl-Part"


def subject(verb: str) -> str:
    return SUBJECT_PREFIX + verb


class QueryRequest(msgspec.Struct, kw_only=True):
    verb: str
    #: the verb's arguments, as the CLI parsed them (names as the verb functions take them)
    args: dict[str, Any] = {}
    #: the log's last sequence as the client saw it: the answer must cover it (read your writes)
    min_seq: int = 0


class QueryReply(msgspec.Struct, kw_only=True):
    out: str = ""
    err: str = ""
    code: int = 0
    #: the projection's sequence the answer was computed at
    seq: int = 0
    #: a DsctlError raised by the verb: its class name and message, raised again by the client
    error_kind: str = ""
    error: str = ""
    #: the service could not answer (projection behind, unknown verb): the client reads the log itself
    unavailable: str = ""
    #: audit: the sequences of the decisions naming the node, and the last sequence the index has read
    seqs: list[int] = []
    covered: int = 0


encode = msgspec.json.Encoder().encode
decode_request = msgspec.json.Decoder(QueryRequest).decode
decode_reply = msgspec.json.Decoder(QueryReply).decode
