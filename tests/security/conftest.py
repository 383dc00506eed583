"""A server secured as ``dsctl up`` secures it (one nkey user per role, ``engine/security``), and a small
world on it: an engine leading, an executor serving ``node1`` and one DaemonSet's pod running there,
each process connected with its own role's credentials.

What a role was refused is read from the server's own log ("Publish Violation", "Subscription
Violation", naming the user's public key and the subject), so a test can tell a refusal by the bus from
any other failure, and can show that a role doing its job was refused nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
from nats.aio.client import Client

from engine.cli.apply import Applier
from engine.executor.drivers.sim import SimDriver
from engine.executor.run import run_executor
from engine.reconciler.engine import Engine
from engine.security.credentials import CredentialStore, with_credentials
from engine.security.roles import Identity, Role
from engine.security.server_config import include_line, write_authorization
from engine.store.connection import close, connect
from engine.store.embedded import EmbeddedNats
from engine.store.jetstream_store import JetStreamEventStore
from engine.store.settings import NatsSettings
from engine.store.setup import ensure

ADMIN = Identity(Role.ADMIN)
ENGINE = Identity(Role.ENGINE)
FLEET = Identity(Role.FLEET)
INGEST = Identity(Role.INGEST)
PUBLISHER = Identity(Role.PUBLISHER)
AUDITOR = Identity(Role.AUDITOR)
NODE1 = Identity(Role.EXECUTOR, "node1")
NODE2 = Identity(Role.EXECUTOR, "node2")
#: every identity of the secured server, in the tests' order
EVERYONE = (ADMIN, ENGINE, FLEET, INGEST, PUBLISHER, AUDITOR, NODE1, NODE2)
NOT_ADMIN = tuple(i for i in EVERYONE if i is not ADMIN)

# config-file users log as "$G/nkey:U...", operator-mode ones as "<account>/DSCTL/jwt:U..."
_VIOLATION = re.compile(r'(?:nkey|jwt):(U[A-Z0-9]+)".*?(Publish|Subscription) Violation.*?Subject "([^"]+)"')

AGENT = """
apiVersion: v1
kind: Node
metadata:
  name: node1
---
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
spec:
  selector:
    matchLabels: {app: agent}
  template:
    metadata:
      labels: {app: agent}
    spec:
      containers:
      - name: agent
        image: agent:1
"""


@dataclass(frozen=True)
class Violation:
    who: str
    kind: str
    subject: str


class Bus:
    """The secured server, its credentials, connections as any identity, and what it refused."""

    def __init__(self, server: EmbeddedNats, creds: CredentialStore) -> None:
        self.server = server
        self.creds = creds
        self._open: list[Client] = []

    @property
    def url(self) -> str:
        return self.server.url

    def settings(self, identity: Identity | None, **changes: Any) -> NatsSettings:
        base = NatsSettings(
            servers=[self.url], name=f"test-{identity or 'anonymous'}", reconnect_wait=0.1, connect_deadline=5
        )
        base = msgspec.structs.replace(base, **changes)
        return base if identity is None else with_credentials(base, [identity], self.creds)

    async def connect(self, identity: Identity | None) -> Client:
        nc = await connect(self.settings(identity))
        self._open.append(nc)
        return nc

    async def close(self) -> None:
        for nc in reversed(self._open):
            with contextlib.suppress(Exception):
                await close(nc)
        self._open.clear()

    def violations(self) -> list[Violation]:
        try:
            text = self.server.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return []
        owners = {self.creds.public_key(i): i.name for i in self.creds.identities()}
        return [Violation(owners.get(m[1], m[1]), m[2], m[3]) for m in _VIOLATION.finditer(text)]

    async def refused(self, who: Identity, subject: str, timeout: float = 3.0) -> Violation:
        """Wait for the server to log that it refused ``who`` on ``subject``."""
        deadline = time.monotonic() + timeout
        while True:
            for v in self.violations():
                if v.who == who.name and v.subject == subject:
                    return v
            if time.monotonic() > deadline:
                raise AssertionError(f"the server did not refuse {who} on {subject}: {self.violations()}")
            await asyncio.sleep(0.05)


def secure_store(base: Path, *extra: Identity) -> CredentialStore:
    creds = CredentialStore(base / "credentials")
    creds.init()
    for identity in extra:
        creds.ensure(identity)
    write_authorization(creds)
    return creds


@pytest.fixture
def creds(tmp_path: Path) -> CredentialStore:
    return secure_store(tmp_path, NODE1, NODE2)


@pytest.fixture
def secure_server(tmp_path: Path, creds: CredentialStore) -> Iterator[EmbeddedNats]:
    store = tmp_path / "nats"
    server = EmbeddedNats(store_dir=store, config=include_line(creds.auth_conf, store) + "\n")
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
async def bus(secure_server: EmbeddedNats, creds: CredentialStore) -> AsyncIterator[Bus]:
    b = Bus(secure_server, creds)
    try:
        yield b
    finally:
        await b.close()


@dataclass
class World:
    bus: Bus
    engine: Engine
    admin: JetStreamEventStore
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    @property
    def state(self) -> Any:
        assert self.engine.projector is not None
        return self.engine.projector.state

    def pod_on(self, node: str) -> Any:
        pods = [p for p in self.state.pods.values() if p.node == node and p.deletion_timestamp is None]
        return pods[0] if len(pods) == 1 else None

    async def until(self, what: str, check: Any, timeout: float = 15.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            got = check()
            if got:
                return got
            for task in self.tasks:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    raise AssertionError(f"{task.get_name()} failed") from task.exception()
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await asyncio.sleep(0.05)


@pytest.fixture
async def world(bus: Bus) -> AsyncIterator[World]:
    """The engine leads (engine role), node1's executor serves it (its own role), the admin applied
    node1 and a DaemonSet, and its pod runs on node1 (Ready)."""
    engine_nc = await bus.connect(ENGINE)
    await ensure(engine_nc, lease_ttl=2)
    engine = Engine(engine_nc, identity="engine-under-test", lease_ttl=2)
    await engine.start()
    executor_nc = await bus.connect(NODE1)
    admin_nc = await bus.connect(ADMIN)
    admin = JetStreamEventStore(admin_nc)
    w = World(bus=bus, engine=engine, admin=admin)
    w.tasks.append(asyncio.ensure_future(engine.run()))
    ready = asyncio.Event()
    w.tasks.append(
        asyncio.ensure_future(
            run_executor(executor_nc, SimDriver(ready_after=0.05), node="node1", ready=ready, lease_wait=0)
        )
    )
    try:
        await w.until("the engine to lead", engine.leading.is_set)
        await w.until("node1's executor", ready.is_set)
        await Applier(admin, source="security-tests").apply(AGENT)
        await w.until("the agent pod to be ready on node1", lambda: (p := w.pod_on("node1")) and p.ready)
        yield w
    finally:
        for task in w.tasks:
            task.cancel()
        for task in w.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await admin.close()
        await engine.store.close()
