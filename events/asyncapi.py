"""The AsyncAPI 3.0 document ``dsctl schema -o asyncapi`` prints: every subject of the contract.

One channel per event tag (``dse.node.{node}.registered``...), the decision and leader subjects, the
command subjects, the rejected stream, and the two ingest request/reply endpoints. Addresses come from
``events.subjects`` and shapes from the Structs themselves (``events.schema``, ``events.ingest_wire``),
so the document cannot drift from the code that publishes and reads: a new event type appears here the
day it is added.

Schemas are hoisted into ``components.schemas`` with their ``$ref``\\s rewritten, because a
``#/$defs/...`` reference inside an embedded schema would resolve against the root of the AsyncAPI
document; and msgspec's OpenAPI-3.1-style ``discriminator`` object becomes the property name alone,
because an AsyncAPI Schema Object's ``discriminator`` is a string (the object form made
@asyncapi/parser refuse the whole document). The ingest endpoints carry the same ingest-line and
batch schemas ``dsctl schema -o json`` prints, so a sender can validate a request against either.
The document is checked against the AsyncAPI specification's own JSON Schema, and by
@asyncapi/parser where node is installed (``tests/contract/test_asyncapi_valid.py``).
"""

from __future__ import annotations

from typing import Any

from events import schema, subjects
from events.ingest_wire import (
    DEFAULT_SOURCE,
    ENGINE_ONLY,
    EXECUTOR_ONLY,
    MAX_BATCH,
    REASON_CODES,
    SERVICE_NAME,
    BatchReply,
    ErrorReply,
    IngestReply,
    Rejection,
)
from events.subjects import (
    COMMANDS_STREAM,
    EVENTS_STREAM,
    INGEST_BATCH_SUBJECT,
    INGEST_EVENT_SUBJECT,
    REJECTED_STREAM,
)
from events.types import BY_TAG

#: the placeholders in each kind's subjects, in token order (see ``events.subjects``)
_PARAMETERS: dict[str, tuple[str, ...]] = {
    "node": ("node",),
    "daemonset": ("namespace", "name"),
    "pod": ("node", "namespace", "pod"),
    "decision": ("namespace", "name"),
    "leader": (),
}
_PARAMETER_TEXT = {
    "node": "node name (DNS-1123 subdomain) with every '.' written '_'",
    "namespace": "namespace (DNS-1123 label)",
    "name": "DaemonSet name with every '.' written '_'",
    "pod": "pod name with every '.' written '_'",
    "reason": "reason code: " + ", ".join(REASON_CODES),
}


class _Components:
    """Collects schemas under ``components.schemas``; refuses two different schemas with one name."""

    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {}

    def add(self, name: str, doc: dict[str, Any]) -> dict[str, str]:
        """Hoist ``doc``'s ``$defs`` and store its root under ``name``; returns a reference to it."""
        doc = dict(doc)
        for def_name, definition in doc.pop("$defs", {}).items():
            self._put(def_name, _rewrite(definition))
        root = _rewrite(doc)
        ref = root.pop("$ref", None)
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            # a root that only points at one of its defs: annotations (x-schema-version) go onto the def
            target = self.schemas[ref.rsplit("/", 1)[1]]
            target.update({k: v for k, v in root.items() if k != "title"})
            return {"$ref": ref}
        if ref is not None:
            root["$ref"] = ref
        self._put(name, root)
        return _ref(name)

    def _put(self, name: str, value: Any) -> None:
        if name in self.schemas and self.schemas[name] != value:
            raise ValueError(f"two different schemas are both named {name!r}")
        self.schemas[name] = value


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _rewrite(node: Any) -> Any:
    """Point every local reference (``$ref``, discriminator ``mapping``) at ``components.schemas``."""
    if isinstance(node, dict):
        return {
            k: v["propertyName"] if k == "discriminator" and isinstance(v, dict) else _rewrite(v)
            for k, v in node.items()
            if k != "$schema"
        }
    if isinstance(node, list | tuple):
        return [_rewrite(v) for v in node]
    if isinstance(node, str) and node.startswith("#/$defs/"):
        return "#/components/schemas/" + node[len("#/$defs/") :]
    return node


def _msg_key(tag: str) -> str:
    return tag.replace(".", "_")


def event_address(tag: str) -> tuple[str, tuple[str, ...]]:
    """The AsyncAPI address of a tag's subjects (``dse.pod.{node}.{namespace}.{pod}.created``) and its
    parameters, from the subject filter ``events.subjects`` builds for that tag."""
    kind = tag.split(".", 1)[0]
    params = _PARAMETERS[kind]
    tokens = subjects.type_filter(tag).split(".")
    wildcards = [i for i, t in enumerate(tokens) if t == "*"]
    if len(wildcards) != len(params):
        raise ValueError(f"subject filter for {tag!r} has {len(wildcards)} wildcards, expected {len(params)}")
    for i, name in zip(wildcards, params, strict=True):
        tokens[i] = "{" + name + "}"
    return ".".join(tokens), params


def _parameters(names: tuple[str, ...]) -> dict[str, Any]:
    return {n: {"description": _PARAMETER_TEXT[n]} for n in names}


_MSG_ID_HEADERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "Nats-Msg-Id": {
            "type": "string",
            "description": "the envelope id: the stream drops a second message with the same id "
            "inside its duplicate window",
        }
    },
}


def asyncapi_document(version: str) -> dict[str, Any]:
    """AsyncAPI 3.0.0, from dsctl's side: it *receives* facts and ingest requests, and *sends*
    decisions, commands and rejected-input records. ``version`` is the package's (the caller reads it:
    this layer does no I/O)."""
    components = _Components()
    envelope = schema.envelope_schema()["$defs"]["Envelope"]
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}

    for tag, event_doc in schema.event_schemas().items():
        data_ref = components.add(BY_TAG[tag].__name__, event_doc)
        payload = {
            **_rewrite(envelope),
            "title": f"{tag} envelope",
            "properties": {
                **_rewrite(envelope["properties"]),
                "type": {"type": "string", "const": tag},
                "schema_version": {"type": "integer", "const": BY_TAG[tag].VERSION},
                "occurred_at": {"type": "string", "format": "date-time"},
                "data": data_ref,
            },
        }
        key = _msg_key(tag)
        messages[key] = {
            "name": tag,
            "title": tag,
            "summary": (BY_TAG[tag].__doc__ or tag).strip().splitlines()[0],
            "contentType": "application/json",
            "headers": _MSG_ID_HEADERS,
            "payload": components.add(BY_TAG[tag].__name__ + "Envelope", payload),
            "correlationId": {"location": "$message.payload#/correlation_id"},
        }
        address, params = event_address(tag)
        channels[key] = {
            "address": address,
            "title": f"{tag} events",
            "description": f"stored in the {EVENTS_STREAM} stream",
            "parameters": _parameters(params),
            "messages": {key: {"$ref": f"#/components/messages/{key}"}},
        }
        engine_writes = tag in ENGINE_ONLY
        if engine_writes:
            summary = f"the engine records {tag} (written by the engine only; refused by ingest)"
        elif tag in EXECUTOR_ONLY:
            summary = (
                f"the pod's node executor reports {tag}, appending it to the stream itself (written by "
                "executors only; refused by ingest)"
            )
        else:
            summary = f"a {tag} fact enters the log (through ingest, or published directly)"
        operations[("send_" if engine_writes else "receive_") + key] = {
            "action": "send" if engine_writes else "receive",
            "channel": {"$ref": f"#/channels/{key}"},
            "summary": summary,
            "messages": [{"$ref": f"#/channels/{key}/messages/{key}"}],
        }

    messages["command"] = {
        "name": "command",
        "title": "executor command",
        "contentType": "application/json",
        "headers": _MSG_ID_HEADERS,
        "payload": components.add("Command", schema.command_schema()),
    }
    command_address = subjects.command_subject("{node}")
    channels["commands"] = {
        "address": command_address,
        "title": "commands for one node's executor",
        "description": f"stored in the {COMMANDS_STREAM} stream; the pod events are the acknowledgement",
        "parameters": _parameters(("node",)),
        "messages": {"command": {"$ref": "#/components/messages/command"}},
    }
    operations["send_command"] = {
        "action": "send",
        "channel": {"$ref": "#/channels/commands"},
        "messages": [{"$ref": "#/channels/commands/messages/command"}],
    }

    messages["rejected"] = {
        "name": "rejected",
        "title": "rejected input",
        "contentType": "application/json",
        "payload": components.add("Rejection", schema.titled(Rejection, "Rejection")),
    }
    channels["rejected"] = {
        "address": subjects.rejected_subject("{reason}"),
        "title": "input the ingest service refused",
        "description": f"stored in the {REJECTED_STREAM} stream",
        "parameters": _parameters(("reason",)),
        "messages": {"rejected": {"$ref": "#/components/messages/rejected"}},
    }
    operations["send_rejected"] = {
        "action": "send",
        "channel": {"$ref": "#/channels/rejected"},
        "messages": [{"$ref": "#/channels/rejected/messages/rejected"}],
    }

    request_ref = components.add("IngestLine", schema.ingest_line_schema())
    messages["ingest_request"] = {
        "name": "ingest_request",
        "title": "one event (or envelope) to validate and append",
        "contentType": "application/json",
        "payload": request_ref,
    }
    messages["ingest_batch_request"] = {
        "name": "ingest_batch_request",
        "title": "JSON lines, or a JSON array of ingest requests (at most 1000)",
        "contentType": "application/json",
        "payload": {"type": "array", "items": request_ref, "minItems": 1, "maxItems": MAX_BATCH},
    }
    messages["ingest_reply"] = {
        "name": "ingest_reply",
        "contentType": "application/json",
        "payload": components.add("IngestReply", schema.titled(IngestReply, "IngestReply")),
    }
    messages["ingest_batch_reply"] = {
        "name": "ingest_batch_reply",
        "contentType": "application/json",
        "payload": components.add("BatchReply", schema.titled(BatchReply, "BatchReply")),
    }
    messages["ingest_error"] = {
        "name": "ingest_error",
        "title": "a micro service error: 400 refused (recorded in DSE_REJECTED under its reason code; "
        "`limit` names a limit exceeded), 503 retry, 500 bug",
        "contentType": "application/json",
        "headers": {
            "type": "object",
            "properties": {
                "Nats-Service-Error-Code": {"type": "string"},
                "Nats-Service-Error": {"type": "string"},
            },
        },
        "payload": components.add("ErrorReply", schema.titled(ErrorReply, "ErrorReply")),
    }
    for name, address, request, reply in (
        ("ingest_event", INGEST_EVENT_SUBJECT, "ingest_request", "ingest_reply"),
        ("ingest_batch", INGEST_BATCH_SUBJECT, "ingest_batch_request", "ingest_batch_reply"),
    ):
        channels[name] = {
            "address": address,
            "title": f"{SERVICE_NAME} request endpoint",
            "messages": {request: {"$ref": f"#/components/messages/{request}"}},
        }
        channels[name + "_reply"] = {
            "address": None,
            "title": "the requester's inbox",
            "messages": {
                reply: {"$ref": f"#/components/messages/{reply}"},
                "ingest_error": {"$ref": "#/components/messages/ingest_error"},
            },
        }
        operations[name] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{name}"},
            "summary": f"validate and append; the reply carries the stream sequence (source defaults "
            f"to {DEFAULT_SOURCE!r})",
            "messages": [{"$ref": f"#/channels/{name}/messages/{request}"}],
            "reply": {
                "address": {"location": "$message.header#/reply_to", "description": "the NATS reply inbox"},
                "channel": {"$ref": f"#/channels/{name}_reply"},
                "messages": [
                    {"$ref": f"#/channels/{name}_reply/messages/{reply}"},
                    {"$ref": f"#/channels/{name}_reply/messages/ingest_error"},
                ],
            },
        }

    return schema.plain(
        {
            "asyncapi": "3.0.0",
            "info": {
                "title": "dsctl event log and ingest",
                "version": version,
                "description": (
                    "Subjects of the dsctl event-sourced DaemonSet controller. Other services add facts "
                    f"through the {SERVICE_NAME} micro service "
                    f"({INGEST_EVENT_SUBJECT}, {INGEST_BATCH_SUBJECT}), which validates them, or publish to "
                    "the event subjects directly with a Nats-Msg-Id header (stored unvalidated)."
                ),
            },
            "defaultContentType": "application/json",
            "servers": {
                "local": {"host": "127.0.0.1:4222", "protocol": "nats", "description": "dsctl up"},
            },
            "channels": channels,
            "operations": operations,
            "components": {"schemas": components.schemas, "messages": messages},
        }
    )
