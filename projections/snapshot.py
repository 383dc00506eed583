"""Snapshots of the read model: msgpack of ``ClusterState``, which records the sequence it covers.

A snapshot is only an optimisation: loading one and folding the tail after ``state.seq`` must give
exactly the state a full replay gives (tested as a law). A format tag leads the bytes so a snapshot
written by an older model is recognised and discarded (rebuild from the log) instead of misread.
"""

from __future__ import annotations

import msgspec

from events.errors import MalformedEvent
from projections.model import ClusterState
from projections.sharing import share_pod

#: bump when ClusterState changes shape incompatibly; older snapshots are then ignored
FORMAT = b"dsctl-snap-v3\n"  # v2: the orphan index; v3: the decision tree's authority, last_id

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(ClusterState)


def dump(state: ClusterState) -> bytes:
    return FORMAT + _encoder.encode(state)


def load(data: bytes) -> ClusterState:
    """Decode a snapshot; raises MalformedEvent for a foreign or outdated format."""
    if not data.startswith(FORMAT):
        raise MalformedEvent("snapshot has an unknown format tag", "$")
    try:
        state = _decoder.decode(memoryview(data)[len(FORMAT) :])
    except msgspec.DecodeError as err:
        raise MalformedEvent(f"snapshot does not decode: {err}", "$") from err
    for pod in state.pods.values():
        share_pod(pod)  # as the fold holds them (projections.sharing)
    return state
