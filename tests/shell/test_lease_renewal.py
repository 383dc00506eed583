"""The renewal loop both leases share: a renewal that hangs (a server cut off from its peers answers
nothing for its whole request timeout) must not let the holder believe in a lease past its TTL."""

from __future__ import annotations

import asyncio
import contextlib
import time

from engine.store.lease import renew_every_third
from events.errors import TransientError


async def test_a_hanging_renewal_makes_the_holder_give_up_within_the_ttl() -> None:
    given_up: list[TransientError] = []

    async def hangs() -> None:
        await asyncio.sleep(60)

    def overdue(err: TransientError) -> bool:
        given_up.append(err)
        return True

    started = time.monotonic()
    await asyncio.wait_for(renew_every_third(0.6, hangs, overdue), timeout=5)
    assert given_up and "timed out" in str(given_up[0])
    assert time.monotonic() - started < 0.6 * 2  # gone well before a second TTL has passed


async def test_renewals_that_succeed_keep_the_lease() -> None:
    calls = 0

    async def renews() -> None:
        nonlocal calls
        calls += 1

    loop = asyncio.ensure_future(renew_every_third(0.3, renews, lambda err: True))
    await asyncio.sleep(0.75)
    assert not loop.done() and calls >= 2
    loop.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await loop
