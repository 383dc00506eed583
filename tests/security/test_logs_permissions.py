"""Who may read a pod's log (``dsctl logs``, engine/executor/pod_logs.py) on a server secured as ``dsctl
up`` secures it: the admin and the auditor ask node1's executor and get the pod's lines; the publisher,
the ingest service, the engine and another node's executor are refused by the server, asking as well as
listening to the answers, and another node's executor can neither take node1's requests nor answer them.
A node without an executor is an error at once, not a wait. Under the same roles: a follow as a chain of
short answers loses and repeats no line and ends with the pod; every answer's first part comes at once;
and all of it in operator mode (the executor's permissions a template filled in from its JWT)."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.cli.logs import NoExecutor, logs, read_log
from engine.cli.operations import request_pod_delete
from engine.executor import pod_logs
from engine.executor.pod_logs import LogRequest, decode_part, encode_request
from engine.security.credentials import CredentialStore
from engine.security.jwt import OperatorMode
from engine.security.roles import Identity, Role, permissions
from engine.security.server_config import include_line
from engine.store.embedded import EmbeddedNats
from events.subjects import logs_reply, logs_request
from tests.security.conftest import (
    ADMIN,
    AUDITOR,
    ENGINE,
    FLEET,
    INGEST,
    NODE2,
    PUBLISHER,
    World,
    secure_store,
)

pytestmark = [pytest.mark.integration]


async def test_the_admin_and_the_auditor_read_a_pods_log(world: World) -> None:
    pod = world.pod_on("node1")
    for role in (ADMIN, AUDITOR):
        out = io.StringIO()
        nc = await world.bus.connect(role)
        assert await logs(nc, pod.name, "default", follow=False, tail=-1, out=out) == 0
        said = [line.split(" ", 1)[1] for line in out.getvalue().splitlines()]
        assert said == ["created", "started", "ready"], (role, out.getvalue())
    assert world.bus.violations() == []


@pytest.mark.parametrize("role", [PUBLISHER, INGEST, ENGINE, NODE2], ids=str)
async def test_other_roles_may_not_ask_for_a_log_nor_read_the_answers(world: World, role: Identity) -> None:
    pod = world.pod_on("node1")
    nc = await world.bus.connect(role)
    request = LogRequest(id="", node="node1", namespace="default", name=pod.name, uid=pod.uid)
    lines = []
    with pytest.raises(NoExecutor):  # its request never reached the executor: nobody answers
        async for text in read_log(nc, request, timeout=1.0):
            lines.append(text)
    assert lines == []
    await world.bus.refused(role, logs_request("node1"))
    refused = {(v.kind, v.subject) for v in world.bus.violations() if v.who == role.name}
    # it could not listen to its own answers either, let alone another reader's
    assert any(kind == "Subscription" and s.startswith(logs_reply("node1", "")) for kind, s in refused), (
        refused
    )


async def test_another_nodes_executor_can_neither_take_nor_answer_node1s_requests(world: World) -> None:
    nc = await world.bus.connect(NODE2)
    await nc.subscribe(logs_request("node1"))
    await nc.subscribe(logs_request())
    await nc.publish(
        logs_reply("node1", "someone"), b'{"request": "x", "responder": "forged", "text": "lies"}'
    )
    await nc.flush()
    await world.bus.refused(NODE2, logs_request("node1"))
    await world.bus.refused(NODE2, logs_request())
    await world.bus.refused(NODE2, logs_reply("node1", "someone"))
    # node1's executor still answers the auditor, and only with the pod's own lines
    out = io.StringIO()
    auditor = await world.bus.connect(AUDITOR)
    assert await logs(auditor, world.pod_on("node1").name, "default", follow=False, tail=1, out=out) == 0
    assert out.getvalue().endswith(" ready\n"), out.getvalue()


async def test_a_node_without_an_executor_is_an_error_at_once(world: World) -> None:
    nc = await world.bus.connect(AUDITOR)
    request = LogRequest(id="", node="node2", namespace="default", name="agent-x")
    # the server says nobody listens (a 503 to the reply subject): not the 30 s wait for an answer
    with pytest.raises(
        NoExecutor, match=r"no executor answers for node node2: nobody serves dse\.logs\.node2"
    ):
        async for _ in read_log(nc, request, timeout=30):
            pass


def test_the_table_gives_logs_to_the_executor_of_the_node_the_fleet_the_admin_and_the_auditor() -> None:
    node = permissions(Identity(Role.EXECUTOR, "web-1.rack2"))
    assert "dse.logs.web-1_rack2" in node.subscribe and "dse.logs.web-1_rack2.*" in node.publish
    assert node.responses == 0  # answers go under its node's subject, never to an inbox
    fleet = permissions(FLEET)
    assert "dse.logs.*" in fleet.subscribe and "dse.logs.*.*" in fleet.publish
    auditor = permissions(AUDITOR)
    assert "dse.logs.*" in auditor.publish and "dse.logs.*.*" in auditor.subscribe
    for identity in (PUBLISHER, INGEST, ENGINE):
        perms = permissions(identity)
        assert not [s for s in (*perms.publish, *perms.subscribe) if s.startswith("dse.logs.")], identity


async def test_the_auditor_follows_a_log_across_answers_until_the_pod_is_gone(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A follow is a chain of requests, each served for a window and renewed from its cursor: short
    windows here, so the chain is long, and no line is lost or repeated along it."""
    monkeypatch.setattr(pod_logs, "FOLLOW_WINDOW", 0.2)
    pod = world.pod_on("node1")
    admin = await world.bus.connect(ADMIN)
    asked = await admin.subscribe(logs_request("node1"))
    out = io.StringIO()
    follow = asyncio.ensure_future(
        logs(await world.bus.connect(AUDITOR), pod.name, "default", follow=True, tail=-1, out=out)
    )
    try:
        for _ in range(4):  # the first request and three renewals
            await asked.next_msg(timeout=10)
        assert not follow.done()
        await request_pod_delete(admin, pod)
        assert await asyncio.wait_for(follow, timeout=30) == 0
    finally:
        follow.cancel()
    said = [line.split(" ", 1)[1] for line in out.getvalue().splitlines()]
    assert said == ["created", "started", "ready", "stopping (grace 30s)", "stopped"], out.getvalue()


async def test_every_answer_says_at_once_that_it_is_heard(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A follow's renewal with nothing new to say gets its first part at once, not at the end of its
    window: otherwise a reader could not tell a quiet pod from a dead executor."""
    monkeypatch.setattr(pod_logs, "FOLLOW_WINDOW", 600.0)
    pod = world.pod_on("node1")
    nc = await world.bus.connect(AUDITOR)
    reply = logs_reply("node1", "quiet")
    answers = await nc.subscribe(reply)
    ask = LogRequest(
        id="r1",
        node="node1",
        namespace="default",
        name=pod.name,
        uid=pod.uid,
        follow=True,
        cursor=3,
        window=600,
    )
    await nc.publish(logs_request("node1"), encode_request(ask), reply=reply)
    first = decode_part((await answers.next_msg(timeout=10)).data)
    assert (first.request, first.text, first.cursor, first.last) == ("r1", "", 3, False)


class TestOperatorMode:
    """The same world on a server in operator mode (engine/security/jwt.py): node1's executor connects
    with credentials minted from the executor's template key, its log subjects filled in from its JWT."""

    @pytest.fixture
    def creds(self, tmp_path: Path) -> CredentialStore:
        store = secure_store(tmp_path)
        mode = OperatorMode(store)
        mode.init()
        for node in ("node1", "node2"):
            store.ensure(Identity(Role.EXECUTOR, node))
            mode.mint(Identity(Role.EXECUTOR, node))
        return store

    @pytest.fixture
    def secure_server(self, tmp_path: Path, creds: CredentialStore) -> Iterator[EmbeddedNats]:
        store = tmp_path / "nats"
        config = include_line(OperatorMode(creds).server_conf, store) + "\n"
        server = EmbeddedNats(store_dir=store, config=config)
        server.start()
        try:
            yield server
        finally:
            server.close()

    async def test_the_auditor_reads_a_pods_log_and_node2_is_refused(self, world: World) -> None:
        out = io.StringIO()
        auditor = await world.bus.connect(AUDITOR)
        assert await logs(auditor, world.pod_on("node1").name, "default", follow=False, tail=-1, out=out) == 0
        assert [line.split(" ", 1)[1] for line in out.getvalue().splitlines()] == [
            "created",
            "started",
            "ready",
        ]
        assert world.bus.violations() == []
        node2 = await world.bus.connect(NODE2)
        await node2.subscribe(logs_request("node1"))
        await node2.flush()
        await world.bus.refused(NODE2, logs_request("node1"))


async def test_a_reader_that_goes_away_costs_the_executor_one_window(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A follow whose reader is gone (Ctrl-C) is not renewed: its answer ends at its window, and no
    further request comes, so nothing is left streaming."""
    monkeypatch.setattr(pod_logs, "FOLLOW_WINDOW", 0.5)
    pod = world.pod_on("node1")
    admin = await world.bus.connect(ADMIN)
    answers = await admin.subscribe(logs_reply("node1"))
    reader = read_log(
        await world.bus.connect(AUDITOR),
        LogRequest(id="", node="node1", namespace="default", name=pod.name, uid=pod.uid, follow=True),
    )
    assert "ready" in await reader.__anext__()
    await reader.aclose()  # the reader goes away mid-answer
    while not (part := decode_part((await answers.next_msg(timeout=10)).data)).last:
        pass
    assert not part.ended and part.text == ""  # its window ran out: the pod still runs
