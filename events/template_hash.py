"""The ``controller-revision-hash`` of a pod template (docs/upstream-semantics.md A.10).

Upstream hashes a Go deep-print of the template with FNV-32a and encodes the decimal digits of the sum
with a safe alphabet. We hash canonical JSON (sorted keys, no spaces) instead of Go's printer, so our
hashes are stable across Python versions but do not equal the ones a real cluster would compute: a
deliberate departure, since nothing outside this engine compares them.
"""

from __future__ import annotations

import struct

import msgspec

from events.k8s import PodTemplate

_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_FNV_OFFSET = 0x811C9DC5
_FNV_PRIME = 0x01000193
_canonical = msgspec.json.Encoder(order="sorted")


def fnv32a(data: bytes) -> int:
    h = _FNV_OFFSET
    for b in data:
        h ^= b
        h = (h * _FNV_PRIME) & 0xFFFFFFFF
    return h


def template_hash(template: PodTemplate, collision_count: int = 0) -> str:
    data = _canonical.encode(template)
    if collision_count:
        data += struct.pack("<I", collision_count & 0xFFFFFFFF)
    return "".join(_ALPHABET[ord(c) % len(_ALPHABET)] for c in str(fnv32a(data)))
