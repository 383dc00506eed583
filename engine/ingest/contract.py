"""The public contract, printed for people and tools in other languages: ``dsctl schema -o json`` (JSON
Schema for every event, the envelope, the command, the ingest request/replies, the rejected-input
record, and ``ingest_line``/``ingest_batch``: what another service sends, as strict as the service, so
it can validate before sending; docs/ingest.md, "The contract") and ``dsctl schema -o asyncapi``
(AsyncAPI 3.0.0, every subject, valid for @asyncapi/parser).

The documents themselves are pure and live with the vocabulary (``events.schema``, ``events.asyncapi``);
this is the shell's part: the package version they are stamped with (read from the installed
metadata), the choice of format, and the text printed.
"""

from __future__ import annotations

import json
from typing import Literal

from engine.ingest.service import service_version
from events.asyncapi import asyncapi_document
from events.errors import InvalidInput
from events.schema import json_schema_document

SchemaFormat = Literal["json", "asyncapi"]


def schema_text(fmt: SchemaFormat = "json") -> str:
    """``dsctl schema -o json|asyncapi``: the document as indented JSON (AsyncAPI tools read JSON too)."""
    if fmt == "json":
        doc = json_schema_document(service_version())
    elif fmt == "asyncapi":
        doc = asyncapi_document(service_version())
    else:
        raise InvalidInput(f'unknown schema format "{fmt}" (choose json or asyncapi)', "-o")
    return json.dumps(doc, indent=2) + "\n"
