"""Leases: exactly one engine reconciles at a time, and one executor serves a node at a time.

A KV bucket with ``history=1`` and a bucket TTL holds one key. ``kv.create`` succeeds only when the key
is absent, so the first engine to create it leads; it renews with ``kv.update(last=revision)`` well
inside the TTL. If the leader dies, the server expires the key after the TTL and a follower's next
``create`` (polled every ``ttl / 8``) succeeds: takeover within TTL + a fraction of a second.

The lease alone is not exclusive (a paused leader may still believe it leads), so writes are fenced
too: the new leader appends ``leader.elected`` on the decision subjects, and every decision is
appended with an expected-last-sequence check on that subject tree, so a deposed leader's next
decision fails with ConflictError. The revision of the lease key is the leader's epoch.

A lease key written over by someone who is not an engine (docs/design.md, "Tamper evidence"): an engine
takes the key only when it is absent, deleted or expired, so a new value at a newer revision while our
last renewal is well inside the TTL was not written by an engine taking over, unless that engine also
appended its leader marker. ``LeaderLease`` asks ``verify_takeover`` (the engine looks for the marker in
its projection); without one the write is a forgery: logged at error level, reported to ``on_forged``,
and the key taken back. A lease without ``verify_takeover`` (the executors') counts any other value as
lost, as before.

``LeaderLease`` takes the key it guards (``engine`` by default), so the same create/renew/tombstone
mechanics serve the executors' per-node leases: ``ExecutorLease`` below, one key per node in the
``dse_node_leases`` bucket. Its renewal policy differs on purpose: an engine that cannot renew steps
down (another engine may lead), but an executor cut off from NATS keeps its pods running and only
pauses fetching commands; it gives up its node only when it finds the key held by someone else.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import nats.errors
import structlog
from nats.js.errors import KeyDeletedError, KeyNotFoundError, KeyWrongLastSequenceError, NoKeysError
from nats.js.kv import KeyValue

from events.errors import ConflictError, TransientError

log = structlog.get_logger("dsctl.lease")

LEASE_KEY = "engine"


#: asked, when the key names ``holder`` at ``revision`` over our live lease: did an engine take it over?
TakeoverCheck = Callable[[str, int], Awaitable[bool]]


@dataclass(frozen=True)
class Lease:
    holder: str
    epoch: int


#: renewals failing for this share of the TTL since the last good one: the key may have expired by now
OVERDUE_SHARE = 0.8


async def renew_every_third(
    ttl: float, renew: Callable[[], Awaitable[None]], overdue: Callable[[TransientError], bool]
) -> None:
    """Call ``renew`` every third of ``ttl`` (each call bounded by a third of it), so two renewals can
    fail before the key expires. Once
    renewals have failed transiently for ``OVERDUE_SHARE`` of the TTL since the last good one, each
    further failure goes to ``overdue``, which says whether to stop (an engine steps down; an executor
    keeps trying). Any other error from ``renew`` ends the loop with that error."""
    loop = asyncio.get_running_loop()
    last_ok = loop.time()
    while True:
        await asyncio.sleep(ttl / 3)
        try:
            # a renewal gets a third of the TTL: one sent to a server cut off from its peers hangs for
            # the whole request timeout (longer than a short TTL), and the holder would go on believing
            # it leads well after the key expired (seen: ~3 s past a 2 s TTL in the partition test)
            async with asyncio.timeout(ttl / 3):
                await renew()
            last_ok = loop.time()
        except (TransientError, TimeoutError) as err:
            failure = err if isinstance(err, TransientError) else TransientError("renewal timed out")
            if loop.time() - last_ok > ttl * OVERDUE_SHARE and overdue(failure):
                return


class LeaderLease:
    def __init__(
        self,
        kv: KeyValue,
        holder: str,
        ttl: float,
        *,
        key: str = LEASE_KEY,
        verify_takeover: TakeoverCheck | None = None,
        on_forged: Callable[[str], None] | None = None,
    ) -> None:
        self._kv = kv
        self.holder = holder
        self.ttl = ttl
        self.key = key
        self._revision: int | None = None
        self.verify_takeover = verify_takeover
        self.on_forged = on_forged
        #: renewals one at a time: two updates against one revision would make the loser think it lost
        self._lock = asyncio.Lock()
        #: when the last write of ours that the server acknowledged was sent (monotonic): the key cannot
        #: expire before this plus the TTL
        self._written_at = 0.0

    @property
    def revision(self) -> int | None:
        """The revision of our last write of the key, while we believe we hold it."""
        return self._revision

    def adopt(self, revision: int) -> None:
        """Take ``revision`` as ours: the key holds our name at it (a renewal whose reply was lost)."""
        self._revision = revision

    async def current(self) -> tuple[str, int] | None:
        """Who holds the key now and at which revision; None when nobody does (absent, deleted or
        expired). Raises TransientError when the bucket cannot be read."""
        try:
            entry = await self._kv.get(self.key)
        except KeyNotFoundError:
            return None
        except (nats.errors.Error, OSError, TimeoutError) as err:
            raise TransientError(f"cannot read lease {self.key}: {err}") from err
        if not entry.value or entry.revision is None:  # a TTL limit marker carries no value
            return None
        return entry.value.decode(errors="replace"), entry.revision

    async def _tombstone(self) -> int | None:
        """The revision of a delete, purge or expiry marker standing where the lease was, if any.

        nats-py's ``create`` recognises delete and purge tombstones but not the server's TTL limit
        marker (``Nats-Marker-Reason: MaxAge``, bucket ``limit_marker_ttl``), which would block a
        takeover until the marker itself expires: a second TTL of downtime.
        """
        try:
            msg = await self._kv._js.get_msg(self._kv._stream, subject=f"{self._kv._pre}{self.key}")
        except Exception:
            return None
        headers = msg.headers or {}
        if headers.get("Nats-Marker-Reason") or headers.get("KV-Operation") in ("DEL", "PURGE"):
            return int(msg.seq) if msg.seq is not None else None
        return None

    async def try_acquire(self) -> Lease | None:
        try:
            try:
                rev = await self._kv.create(self.key, self.holder.encode())
            except KeyWrongLastSequenceError:
                marker = await self._tombstone()
                if marker is None:
                    return None
                updated = await self._kv.update(self.key, self.holder.encode(), last=marker)
                if updated is None:
                    return None
                rev = updated
        except KeyWrongLastSequenceError:
            return None
        except Exception as err:  # connection trouble: not leader, try again later
            log.warning("lease.acquire_failed", error=str(err))
            return None
        self._revision = rev
        self._written_at = asyncio.get_running_loop().time()
        log.info("lease.acquired", key=self.key, holder=self.holder, epoch=rev)
        return Lease(self.holder, rev)

    async def acquire(self) -> Lease:
        """Wait until this process holds the lease."""
        while True:
            lease = await self.try_acquire()
            if lease is not None:
                return lease
            await asyncio.sleep(self.ttl / 8)

    async def renew(self) -> None:
        """Renew, or raise ConflictError when the lease is lost (TransientError: ask again later)."""
        async with self._lock:
            if self._revision is None:
                raise ConflictError("lease not held")
            sent = asyncio.get_running_loop().time()
            try:
                self._revision = await self._kv.update(self.key, self.holder.encode(), last=self._revision)
                self._written_at = sent
                return
            except KeyWrongLastSequenceError as err:
                conflict: Exception = err
            except Exception as err:
                raise TransientError(f"lease renewal failed: {err}") from err
            if await self._reclaim():
                return
            self._revision = None
            raise ConflictError(f"lease lost by {self.holder}") from conflict

    async def _reclaim(self) -> bool:
        """The key moved under a renewal: keep the lease if the move was no engine's (see the module
        docstring). True when this holder holds it again."""
        current = await self.current()
        if current is not None and current[0] == self.holder:
            self.adopt(current[1])  # our own update landed, its reply was lost
            return True
        live = asyncio.get_running_loop().time() - self._written_at < self.ttl * OVERDUE_SHARE
        if self.verify_takeover is None or not live:
            return False  # the key may have expired: whoever holds it may rightly do so
        if current is not None and await self.verify_takeover(*current):
            return False  # an engine took over (its marker is in the log)
        written = f"{current[0]!r} at revision {current[1]}" if current is not None else "deleted"
        log.error(
            "lease.forged",
            key=self.key,
            holder=self.holder,
            written=written,
            why="the key was written over a live lease, and no leader marker of its writer followed",
        )
        if self.on_forged is not None:
            self.on_forged(written)
        last = current[1] if current is not None else await self._tombstone()
        sent = asyncio.get_running_loop().time()
        try:
            if last is None:
                rev = await self._kv.create(self.key, self.holder.encode())
            else:
                rev = await self._kv.update(self.key, self.holder.encode(), last=last)
        except Exception as err:  # someone wrote again meanwhile (an engine, maybe): not ours
            log.warning("lease.reclaim_failed", key=self.key, error=str(err))
            return False
        self._revision = rev
        self._written_at = sent
        log.warning("lease.reclaimed", key=self.key, holder=self.holder, revision=rev)
        return True

    async def hold(self) -> None:
        """Renew until the lease is lost; returns (never raises) when it is.

        A renewal that fails for a transient reason is retried while the TTL has not run out since
        the last good renewal; after that another engine may lead, so this one stops.
        """
        try:
            await renew_every_third(self.ttl, self.renew, self._expired)
        except ConflictError:
            log.warning("lease.lost", holder=self.holder)

    def _expired(self, err: TransientError) -> bool:
        log.warning("lease.expired", holder=self.holder, error=str(err))
        self._revision = None
        return True

    async def release(self) -> None:
        """Give the lease up at a clean shutdown, so a follower need not wait for the TTL."""
        if self._revision is None:
            return
        with contextlib.suppress(KeyNotFoundError, KeyWrongLastSequenceError, Exception):
            await self._kv.delete(self.key, last=self._revision)
        self._revision = None


# --- executors -----------------------------------------------------------------------------------------

NODE_LEASE_BUCKET = "dse_node_leases"
#: the key a fleet executor (``node=None``) holds; a node name (DNS-1123) never starts with ``_``
FLEET_KEY = "_fleet"


class LeaseHeld(ConflictError):
    """Another executor serves the node (raised when ``--lease-wait`` runs out)."""


class LeaseLost(ConflictError):
    """Another executor took the node while this one held it: this one must stop serving it."""


class ExecutorLease:
    """One executor per node: a key per node in ``dse_node_leases`` (a fleet holds ``_fleet``).

    Two executors consuming one node's durable split its commands between them: a delete lands on the
    one that did not start the process and the node runs two copies. The lease makes the second wait
    (for a crashed predecessor's key to expire: the bucket TTL) or fail with an error naming the holder.

    ``held`` is set while the lease is confirmed; the command source fetches only while it is set. It
    is cleared when renewals have failed for most of a TTL (the key may have expired and been taken),
    and set again by the next renewal that succeeds or the re-acquisition of an expired key. Finding the
    key held by someone else raises ``LeaseLost``. Renewals and confirmations are serialised, because
    two concurrent updates against one revision would make the loser think the lease was lost.
    """

    def __init__(self, kv: KeyValue, key: str, holder: str, ttl: float) -> None:
        self._lease = LeaderLease(kv, holder, ttl, key=key)
        self._kv = kv
        self.key = key
        self.holder = holder
        self.ttl = ttl
        self.held = asyncio.Event()
        self._lock = asyncio.Lock()

    def _busy(self, holder: str) -> str:
        what = "the simulated fleet" if self.key == FLEET_KEY else f"node {self.key}"
        return f"{what} is already served by executor {holder} (lease {NODE_LEASE_BUCKET}/{self.key})"

    async def acquire(self, wait: float) -> None:
        """Take the lease, waiting up to ``wait`` seconds; raises LeaseHeld naming the holder."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(wait, 0.0)
        announced = False
        while True:
            if await self._lease.try_acquire() is not None:
                self.held.set()
                return
            try:
                current = await self._lease.current()
            except TransientError:
                current = None
            holder = current[0] if current is not None else "(unknown: the lease could not be read)"
            left = deadline - loop.time()
            if left <= 0:
                raise LeaseHeld(f"{self._busy(holder)}; stop it first, or wait longer with --lease-wait")
            if not announced:
                log.warning("lease.waiting", key=self.key, holder=holder, seconds=round(left, 1))
                announced = True
            await asyncio.sleep(min(self.ttl / 8, left))

    async def confirm(self) -> None:
        """Renew now; re-take an expired key; raise LeaseLost if another executor holds it.

        Raises TransientError when NATS cannot be asked (the caller retries later).
        """
        async with self._lock:
            try:
                await self._lease.renew()
                self.held.set()
                return
            except ConflictError:
                pass  # our revision is stale: find out why before deciding
            current = await self._lease.current()
            if current is not None and current[0] == self.holder:
                self._lease.adopt(current[1])  # our own update landed but its reply was lost
                self.held.set()
                return
            if current is None:
                if await self._lease.try_acquire() is not None:
                    log.warning("lease.reacquired", key=self.key, holder=self.holder)
                    self.held.set()
                    return
                current = await self._lease.current()
                if current is None:
                    raise TransientError(f"lease {self.key} could not be re-acquired yet")
            self.held.clear()
            raise LeaseLost(f"lost the lease: {self._busy(current[0])}")

    async def keep(self) -> None:
        """Renew every third of the TTL until cancelled; raises LeaseLost if another holder shows up."""
        await renew_every_third(self.ttl, self.confirm, self._unconfirmed)

    def _unconfirmed(self, err: TransientError) -> bool:
        # the key may have expired and been taken: stop fetching commands, but keep trying (see above)
        if self.held.is_set():
            log.warning("lease.unconfirmed", key=self.key, error=str(err))
            self.held.clear()
        return False

    async def is_held(self, key: str) -> bool:
        """Whether ``key`` (another node, or the fleet's) is held now. A direct read of one key: nats-py's
        ``keys()`` makes a consumer each time, and 10,000 executors starting each left one behind."""
        try:
            entry = await self._kv.get(key)
        except (KeyNotFoundError, KeyDeletedError):
            return False
        return bool(entry.value)

    async def keys(self) -> list[str]:
        """Every key held in the bucket now (a fleet leaves those nodes to their own executors).

        Shielded: nats-py's ``keys()`` watches the bucket, and cancelled half-way (the fleet polls
        every second, so its stop often lands there) it never stops its watcher, whose heartbeat
        task then outlives the executor."""
        return await asyncio.shield(self._keys())

    async def _keys(self) -> list[str]:
        try:
            return list(await self._kv.keys())
        except NoKeysError:
            return []

    async def release(self) -> None:
        """Give the node up at a clean stop, so a successor starts at once rather than after the TTL."""
        self.held.clear()
        async with self._lock:
            await self._lease.release()
