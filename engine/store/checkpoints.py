"""Executor checkpoints in a KV bucket: per node, the ``DSE_COMMANDS`` sequence below which every command
has been carried out (``ops/streams/kv_executor_checkpoints.json``).

A checkpoint only saves reading: an executor without one (a new node, a lost key) reads the commands
``DSE_COMMANDS`` still keeps for its node, and commands are idempotent by id. So a write that fails is
logged and tried again with the next one, never waited for.
"""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
from nats.js.errors import BucketNotFoundError, KeyDeletedError, KeyNotFoundError
from nats.js.kv import KeyValue

from engine.store.definitions import CHECKPOINT_BUCKET
from engine.store.jetstream_api import translate_errors
from events.errors import NotFound, PermanentError


class Checkpoint(msgspec.Struct, frozen=True, kw_only=True):
    commands_seq: int
    holder: str = ""
    at: str = ""


_decoder = msgspec.json.Decoder(Checkpoint)


class KvCheckpoints:
    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    @classmethod
    async def open(cls, js: object) -> KvCheckpoints:
        with translate_errors(f"bucket {CHECKPOINT_BUCKET}"):
            try:
                kv = await js.key_value(CHECKPOINT_BUCKET)  # type: ignore[attr-defined]
            except BucketNotFoundError:
                raise NotFound(f"bucket {CHECKPOINT_BUCKET} is missing") from None
        return cls(kv)

    async def load(self, key: str) -> int:
        """The checkpoint's sequence, 0 when there is none (read from the start)."""
        with translate_errors(f"checkpoint {CHECKPOINT_BUCKET}/{key}"):
            try:
                entry = await self._kv.get(key)
            except (KeyNotFoundError, KeyDeletedError):
                return 0
        if not entry.value:
            return 0
        try:
            return _decoder.decode(entry.value).commands_seq
        except msgspec.DecodeError as err:
            raise PermanentError(f"checkpoint {CHECKPOINT_BUCKET}/{key} is unreadable: {err}") from err

    async def save(self, key: str, seq: int, holder: str) -> None:
        value = Checkpoint(commands_seq=seq, holder=holder, at=datetime.now(UTC).isoformat())
        with translate_errors(f"checkpoint {CHECKPOINT_BUCKET}/{key}"):
            await self._kv.put(key, msgspec.json.encode(value))
