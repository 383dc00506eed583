"""Deterministic ids: the same inputs always give the same id, so a retried or replayed decision
produces the same command ids and the server's ``Nats-Msg-Id`` dedupe drops the copy."""

from __future__ import annotations

import hashlib

_POD_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def stable_id(*parts: str | int) -> str:
    """A 32-hex-digit id from the parts (sha256, truncated)."""
    h = hashlib.sha256("\x1f".join(str(p) for p in parts).encode())
    return h.hexdigest()[:32]


def pod_suffix(*parts: str | int) -> str:
    """Five characters from the Kubernetes-safe alphabet, as in generated pod names (``myweb-ds-64l84``)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return "".join(_POD_ALPHABET[b % len(_POD_ALPHABET)] for b in digest[:5])
