"""Upcasters: turn an older payload shape of an event into the current one, before typed decoding.

Register one function per (tag, from_version); each returns the payload at from_version + 1. Decoding
runs the chain up to the event's current ``VERSION``. Payloads are plain JSON mappings here, so an
upcaster never depends on the class it feeds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from events.errors import MalformedEvent

Payload = dict[str, Any]
Upcaster = Callable[[Payload], Payload]

_UPCASTERS: dict[tuple[str, int], Upcaster] = {}


def register(tag: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
    def decorate(fn: Upcaster) -> Upcaster:
        key = (tag, from_version)
        if key in _UPCASTERS:
            raise ValueError(f"an upcaster for {tag} v{from_version} is already registered")
        _UPCASTERS[key] = fn
        return fn

    return decorate


def upcast(tag: str, version: int, target: int, payload: Payload) -> Payload:
    while version < target:
        step = _UPCASTERS.get((tag, version))
        if step is None:
            raise MalformedEvent(f"no upcaster from schema version {version} of {tag!r}", "$.schema_version")
        payload = step(payload)
        version += 1
    return payload


@register("node.condition_changed", 1)
def _condition_flat_to_nested(payload: Payload) -> Payload:
    """v1 carried the condition's fields flat beside the node name (the simplest shape for a shell
    script to publish); v2 nests them under ``condition`` like a Kubernetes NodeCondition."""
    out = {"name": payload.get("name")}
    if "command_id" in payload:
        out["command_id"] = payload["command_id"]
    out["condition"] = {
        k: payload[k] for k in ("type", "status", "reason", "message", "lastTransitionTime") if k in payload
    }
    return out
