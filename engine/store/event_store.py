"""The event store under one import: the port (``port.py``), its JetStream implementation
(``jetstream_store.py``) and the retry-within-a-deadline helpers (``appending.py``).

Why a module of names only: the store was one file until it was split by concern, and the CLI, the
ingest service, the reconciler, the benchmarks and many tests import these names from here. Code inside
``engine/store`` and ``engine/executor`` imports from the modules that define them. (``Deadline``, from
``engine.runtime.retry``, is here because some tests took it from this module when it was imported here.)
"""

from __future__ import annotations

from engine.runtime.retry import Deadline
from engine.store.appending import (
    DEFAULT_DEADLINE,
    append_within,
    find_appended,
    retry_transient,
    unavailable_message,
)
from engine.store.jetstream_store import JetStreamEventStore
from engine.store.port import (
    AppendResult,
    EventStore,
    MalformedStoredEvent,
    SettlingStore,
    StoredEvent,
    decode_stored,
)

__all__ = [
    "DEFAULT_DEADLINE",
    "AppendResult",
    "Deadline",
    "EventStore",
    "JetStreamEventStore",
    "MalformedStoredEvent",
    "SettlingStore",
    "StoredEvent",
    "append_within",
    "decode_stored",
    "find_appended",
    "retry_transient",
    "unavailable_message",
]
