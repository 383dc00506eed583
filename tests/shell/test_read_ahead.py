"""The read-ahead child (engine/store/read_ahead.py) on a server secured as ``dsctl up`` secures it: the
projection it loads is the in-process read's, bad records included; a child that dies or cannot connect
leaves no partial state (the load goes on in-process); a stream replaced under it is refused."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Iterator
from typing import Any

import msgspec
import pytest

from engine.bench.workload import History, batched
from engine.security.credentials import CredentialStore, with_credentials
from engine.security.roles import Identity, Role
from engine.security.server_config import include_line, write_authorization
from engine.store.connection import close, connect
from engine.store.embedded import EmbeddedNats
from engine.store.jetstream_store import JetStreamEventStore
from engine.store.port import LogIntegrityError, StoredEvent
from engine.store.projector import Projector
from engine.store.read_ahead import ReadAhead
from engine.store.settings import NatsSettings
from engine.store.setup import ensure
from projections import snapshot
from projections.model import ClusterState

ADMIN = Identity(Role.ADMIN)
ENGINE = Identity(Role.ENGINE)
EVENTS = 12_000


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmbeddedNats, CredentialStore]]:
    base = tmp_path_factory.mktemp("read_ahead")
    creds = CredentialStore(base / "credentials")
    creds.init()
    write_authorization(creds)
    server = EmbeddedNats(store_dir=base / "nats", config=include_line(creds.auth_conf, base / "nats") + "\n")
    server.start()
    try:
        yield server, creds
    finally:
        server.close()


def _settings(server: EmbeddedNats, creds: CredentialStore, who: Identity) -> NatsSettings:
    base = NatsSettings(servers=[server.url], name=f"test-{who}", reconnect_wait=0.1, connect_deadline=5)
    return with_credentials(base, [who], creds)


@pytest.fixture
async def log_of_fleet(secured: tuple[EmbeddedNats, CredentialStore]) -> AsyncIterator[Any]:
    """A fresh event log of a fleet converging (one record that does not decode in the middle), read
    through the engine's credentials; yields (engine settings, engine store, admin connection)."""
    server, creds = secured
    admin = await connect(_settings(server, creds, ADMIN))
    engine_settings = _settings(server, creds, ENGINE)
    engine_nc = await connect(engine_settings)
    try:
        js = admin.jetstream()
        if "DSE_EVENTS" in [s.config.name for s in await js.streams_info()]:
            await js.delete_stream("DSE_EVENTS")
        await ensure(admin)
        writer = JetStreamEventStore(admin)
        events = list(History(max(50, EVENTS // 40), 10).events(total=EVENTS))[:EVENTS]
        for i, chunk in enumerate(batched(iter(events), 2_000)):
            await writer.append_many(chunk)
            if i == 2:
                await js.publish("dse.pod.node-x.default.pod-x.status", b"{not an event")
        await writer.close()
        store = JetStreamEventStore(engine_nc, heartbeat=0.5, stall_timeout=10)
        yield engine_settings, store, admin
        await store.close()
    finally:
        await close(engine_nc)
        await close(admin)


async def _in_process(store: JetStreamEventStore) -> Projector:
    projector = Projector(store)
    await projector.load(use_snapshot=False)
    return projector


def _same(a: ClusterState, b: ClusterState) -> None:
    assert a.seq == b.seq
    assert a == b
    assert snapshot.load(snapshot.dump(a)) == snapshot.load(snapshot.dump(b))


async def test_the_child_loads_what_the_in_process_read_loads(log_of_fleet: Any) -> None:
    settings, store, _ = log_of_fleet
    expected = await _in_process(store)
    ahead = ReadAhead(settings, min_events=1, head_events=2_000)
    projector = Projector(store, read_ahead=ahead)
    await projector.load(use_snapshot=False)
    assert ahead.pid is not None  # the child did the reading
    _same(projector.state, expected.state)
    assert projector.replayed == expected.replayed > EVENTS // 2
    assert projector.skipped == expected.skipped and len(projector.skipped) == 1
    assert len(projector.state.pods) == len(expected.state.pods) > 0


async def test_a_child_killed_mid_read_leaves_no_partial_state(log_of_fleet: Any) -> None:
    settings, store, _ = log_of_fleet
    expected = await _in_process(store)
    ahead = ReadAhead(settings, min_events=1, head_events=2_000)
    projector = Projector(store, read_ahead=ahead)
    killed: list[int] = []

    def kill_the_reader(state: ClusterState, stored: StoredEvent) -> None:
        if not killed and ahead.pid is not None:
            os.kill(ahead.pid, signal.SIGKILL)
            killed.append(stored.seq)

    projector.listen(kill_the_reader, lambda state, stored, ctx: None)
    await projector.load(use_snapshot=False)
    assert killed
    _same(projector.state, expected.state)
    assert projector.skipped == expected.skipped


async def test_a_child_that_cannot_connect_falls_back_in_process(log_of_fleet: Any) -> None:
    settings, store, _ = log_of_fleet
    expected = await _in_process(store)
    # the secure default refuses a connection without credentials: the child fails, the load does not
    anonymous = msgspec.structs.replace(settings, nkey=None, creds=None, connect_deadline=2.0)
    projector = Projector(store, read_ahead=ReadAhead(anonymous, min_events=1, head_events=2_000))
    await projector.load(use_snapshot=False)
    _same(projector.state, expected.state)


async def test_the_child_refuses_another_stream_under_the_same_name(log_of_fleet: Any) -> None:
    settings, store, admin = log_of_fleet
    await store.pin()
    pinned_created = (await store.identity()).created
    # the stream made anew under the same name between the identity check and the child's read
    js = admin.jetstream()
    await js.delete_stream("DSE_EVENTS")
    await ensure(admin)
    await JetStreamEventStore(admin).append_many(list(History(60, 10).events(total=200)))
    ahead = ReadAhead(settings, min_events=1, head_events=2_000)
    batches = ahead.batches("DSE_EVENTS", 1, 100, expect_created=pinned_created)
    with pytest.raises(LogIntegrityError, match="replaced"):
        async for _ in batches:
            pass


async def test_an_engine_given_a_read_ahead_starts_through_it(log_of_fleet: Any) -> None:
    """What ``dsctl engine run`` does (engine/cli/up.py): the engine's projector reads through the child."""
    from engine.reconciler.engine import Engine

    settings, store, _ = log_of_fleet
    expected = await _in_process(store)
    ahead = ReadAhead(settings, min_events=1, head_events=2_000)
    engine_nc = await connect(settings)
    try:
        engine = Engine(engine_nc, identity="read-ahead-test", store=store, read_ahead=ahead)
        projector = await engine.start(use_snapshot=False)
        assert ahead.pid is not None
        _same(projector.state, expected.state)
    finally:
        await close(engine_nc)
