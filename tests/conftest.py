"""Shared test harness: a real nats-server per test, and a guard against leaked asyncio tasks.

Server choice, in order:
- ``NATS_URL`` set: use that server (it must be disposable: tests delete and recreate the ``DSE_*``
  streams). Tests that need to restart the server are skipped.
- ``DSCTL_TEST_DOCKER=1`` and a reachable Docker engine: testcontainers' NATS container (imported
  lazily; CI machines have no Docker engine, so this path is only guarded). Restarts are skipped.
- otherwise the pinned ``nats-server`` binary from the venv: 127.0.0.1, a free port, a store under
  ``tmp_path``; restartable on the same port and store, and killable (crash tests).

One server per test costs ~50 ms and makes every test independent (stream names are fixed by the log
contract, so tests could not share a server without wiping it anyway).
"""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.store.embedded import EmbeddedNats

LEAK_GRACE_SECONDS = 1.0


class TestServer:
    """What a test may do with its server. ``restart``/``kill``/``start`` skip when not ours."""

    __test__ = False  # not a test class

    def __init__(self, url: str, embedded: EmbeddedNats | None = None, why_fixed: str = "") -> None:
        self.url = url
        self.embedded = embedded
        self._why_fixed = why_fixed

    @property
    def can_restart(self) -> bool:
        return self.embedded is not None

    def _own(self) -> EmbeddedNats:
        if self.embedded is None:
            pytest.skip(f"needs a server the tests can restart ({self._why_fixed})")
        return self.embedded

    async def restart(self, *, crash: bool = False) -> None:
        """Stop (SIGTERM, or SIGKILL with crash) and start on the same port and store."""
        server = self._own()
        await asyncio.to_thread(server.restart, crash=crash)

    async def kill(self) -> None:
        await asyncio.to_thread(self._own().kill)

    async def start(self) -> None:
        await asyncio.to_thread(self._own().start)


def _docker_reachable() -> bool:
    try:
        import docker  # only when asked for

        docker.from_env().ping()
        return True
    except Exception:
        return False


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[TestServer]:
    url = os.environ.get("NATS_URL")
    if url:
        yield TestServer(url.split(",")[0], why_fixed="NATS_URL points at an external server")
        return
    if os.environ.get("DSCTL_TEST_DOCKER") == "1" and _docker_reachable():
        from testcontainers.nats import NatsContainer  # lazy: the import needs docker

        with NatsContainer(jetstream=True) as container:
            yield TestServer(container.nats_uri(), why_fixed="a Docker container")
        return
    server = EmbeddedNats(store_dir=tmp_path / "nats", ready_timeout=10, stop_timeout=5)
    server.start()
    try:
        yield TestServer(server.url, server)
    finally:
        server.close()


@pytest.fixture
async def nc(nats_server: TestServer) -> AsyncIterator[Any]:
    """A connection that reconnects quickly (restart tests) and is closed after the test."""
    from engine.store.connection import close, connect
    from engine.store.settings import NatsSettings

    client = await connect(
        NatsSettings(servers=[nats_server.url], name="dsctl-tests", reconnect_wait=0.1, connect_deadline=5)
    )
    try:
        yield client
    finally:
        await close(client)


@pytest.fixture
async def streams(nc: Any) -> AsyncIterator[Any]:
    """The stream definitions, applied fresh (existing ``DSE_*`` streams are deleted first)."""
    from engine.store.streams import apply_definitions, delete_streams, load_definitions

    defs = load_definitions()
    await delete_streams(nc, defs)
    await apply_definitions(nc, defs)
    yield defs


@pytest.fixture
async def jetstream_store(nc: Any, streams: Any) -> AsyncIterator[Any]:
    """The JetStream event store on fresh streams, with short heartbeats so resets happen fast."""
    from engine.store.event_store import JetStreamEventStore

    store = JetStreamEventStore(nc, heartbeat=0.5, stall_timeout=10)
    yield store
    await store.close()


# --- leaked task guard ----------------------------------------------------------------------------


@pytest.fixture
async def _task_guard() -> AsyncIterator[None]:
    before = asyncio.all_tasks()
    yield
    current = asyncio.current_task()
    leaked = {t for t in asyncio.all_tasks() if t not in before and t is not current and not t.done()}
    if leaked:
        # cancelled-but-not-yet-finished tasks (closed subscriptions, connections) get a moment
        await asyncio.wait(leaked, timeout=LEAK_GRACE_SECONDS)
        leaked = {t for t in leaked if not t.done()}
    if leaked:
        names = sorted(f"{t.get_name()} {t.get_coro()!r}" for t in leaked)
        for task in leaked:
            task.cancel()
        await asyncio.wait(leaked, timeout=LEAK_GRACE_SECONDS)
        pytest.fail("test leaked asyncio tasks still pending at teardown:\n  " + "\n  ".join(names))


@pytest.fixture(autouse=True)
def _no_leaked_tasks(request: pytest.FixtureRequest) -> None:
    """Applies the guard to coroutine tests only; requesting it first makes it tear down last, after
    the connection and store fixtures have closed what they opened."""
    if inspect.iscoroutinefunction(request.function):
        request.getfixturevalue("_task_guard")
