"""The leader lease: exactly one engine reconciles at a time.

A KV bucket with ``history=1`` and a bucket TTL holds one key. ``kv.create`` succeeds only when the key
is absent, so the first engine to create it leads; it renews with ``kv.update(last=revision)`` well
inside the TTL. If the leader dies, the server expires the key after the TTL and a follower's next
``create`` (polled every ``ttl / 8``) succeeds: takeover within TTL + a fraction of a second.

The lease alone is not exclusive (a paused leader may still believe it leads), so writes are fenced
too: the new leader appends ``leader.elected`` on the decision subjects, and every decision is
appended with an expected-last-sequence check on that subject tree, so a deposed leader's next
decision fails with ConflictError. The revision of the lease key is the leader's epoch.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import structlog
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from events.errors import ConflictError, TransientError

log = structlog.get_logger("dsctl.lease")

LEASE_KEY = "engine"


@dataclass(frozen=True)
class Lease:
    holder: str
    epoch: int


class LeaderLease:
    def __init__(self, kv: KeyValue, holder: str, ttl: float) -> None:
        self._kv = kv
        self.holder = holder
        self.ttl = ttl
        self._revision: int | None = None

    async def _tombstone(self) -> int | None:
        """The revision of a delete, purge or expiry marker standing where the lease was, if any.

        nats-py's ``create`` recognises delete and purge tombstones but not the server's TTL limit
        marker (``Nats-Marker-Reason: MaxAge``, bucket ``limit_marker_ttl``), which would block a
        takeover until the marker itself expires: a second TTL of downtime.
        """
        try:
            msg = await self._kv._js.get_msg(self._kv._stream, subject=f"{self._kv._pre}{LEASE_KEY}")
        except Exception:
            return None
        headers = msg.headers or {}
        if headers.get("Nats-Marker-Reason") or headers.get("KV-Operation") in ("DEL", "PURGE"):
            return int(msg.seq) if msg.seq is not None else None
        return None

    async def try_acquire(self) -> Lease | None:
        try:
            try:
                rev = await self._kv.create(LEASE_KEY, self.holder.encode())
            except KeyWrongLastSequenceError:
                marker = await self._tombstone()
                if marker is None:
                    return None
                updated = await self._kv.update(LEASE_KEY, self.holder.encode(), last=marker)
                if updated is None:
                    return None
                rev = updated
        except KeyWrongLastSequenceError:
            return None
        except Exception as err:  # connection trouble: not leader, try again later
            log.warning("lease.acquire_failed", error=str(err))
            return None
        self._revision = rev
        log.info("lease.acquired", holder=self.holder, epoch=rev)
        return Lease(self.holder, rev)

    async def acquire(self) -> Lease:
        """Wait until this process holds the lease."""
        while True:
            lease = await self.try_acquire()
            if lease is not None:
                return lease
            await asyncio.sleep(self.ttl / 8)

    async def renew(self) -> None:
        if self._revision is None:
            raise ConflictError("lease not held")
        try:
            self._revision = await self._kv.update(LEASE_KEY, self.holder.encode(), last=self._revision)
        except KeyWrongLastSequenceError as err:
            self._revision = None
            raise ConflictError(f"lease lost by {self.holder}") from err
        except Exception as err:
            raise TransientError(f"lease renewal failed: {err}") from err

    async def hold(self) -> None:
        """Renew until the lease is lost; returns (never raises) when it is.

        A renewal that fails for a transient reason is retried while the TTL has not run out since
        the last good renewal; after that another engine may lead, so this one stops.
        """
        loop = asyncio.get_running_loop()
        last_ok = loop.time()
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                await self.renew()
                last_ok = loop.time()
            except ConflictError:
                log.warning("lease.lost", holder=self.holder)
                return
            except TransientError as err:
                if loop.time() - last_ok > self.ttl * 0.8:
                    log.warning("lease.expired", holder=self.holder, error=str(err))
                    self._revision = None
                    return

    async def release(self) -> None:
        """Give the lease up at a clean shutdown, so a follower need not wait for the TTL."""
        if self._revision is None:
            return
        with contextlib.suppress(KeyNotFoundError, KeyWrongLastSequenceError, Exception):
            await self._kv.delete(LEASE_KEY, last=self._revision)
        self._revision = None
