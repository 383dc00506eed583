"""Object uids as the Kubernetes API server shows them: RFC 9562 UUIDs, ``8-4-4-4-12`` (docs/output.md).

A DaemonSet's uid is a random UUID minted by ``apply``. A pod's is derived from its decision (the same
inputs give the same uid, so a recomputed decision matches the recorded one): a SHA-256 name-based
UUID, version 8 (RFC 9562's custom version). Pods recorded before uids were
minted this way carry 32 hex digits, and anything another service reported may carry any string:
``api_uid`` shows each as a UUID, always the same one for the same stored uid, so an owner reference
still matches its owner's ``metadata.uid``. A node has no stored uid: ``node_uid`` derives one from its
name and creation time (stable while the node exists, new when it is registered again).
"""

from __future__ import annotations

import hashlib
import re

from events.ids import stable_id

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_HEX32 = re.compile(r"^[0-9a-fA-F]{32}$")


def _v8(hex32: str) -> str:
    """32 hex digits as a version 8, variant 10 UUID (digits 13 and 17 carry the version and variant)."""
    h = hex32.lower()
    variant = "89ab"[int(h[16], 16) & 3]
    return f"{h[:8]}-{h[8:12]}-8{h[13:16]}-{variant}{h[17:20]}-{h[20:32]}"


def stable_uuid(*parts: str | int) -> str:
    """A deterministic UUID from the parts: ``api_uid`` of ``stable_id`` of the same parts."""
    return _v8(stable_id(*parts))


def api_uid(stored: str) -> str:
    """The UUID shown for a stored uid: a UUID as it is (lower-case), 32 hex digits as the UUID
    ``stable_uuid`` would have minted from the same digits, anything else hashed to one."""
    if _UUID.match(stored):
        return stored.lower()
    if _HEX32.match(stored):
        return _v8(stored)
    return _v8(hashlib.sha256(stored.encode()).hexdigest()[:32])


def node_uid(name: str, created_at: float) -> str:
    return stable_uuid("node", name, repr(created_at))
