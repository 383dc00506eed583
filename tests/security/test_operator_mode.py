"""Operator mode (decentralised JWT, ``engine/security/jwt.py``): a server trusting the operator, an
account with one scoped signing key per role, every process connecting with a ``.creds`` minted from
its role's key. The executor's key is a template (``dse.cmd.{{name()}}``, ``$KV.dse_node_leases.
{{tag(node)}}``...), so one key serves every node, and ``dsctl admin credentials executor --node N``
mints a node's credentials offline: the server is neither told nor reloaded.

The same world as under config-file users (``conftest.py``) runs here on the operator-mode server
(this module's ``secure_server``): the engine leads, node1's executor (minted) runs its pod, no
violation; then the minted executor is refused every other node's subjects, as every role is refused
every other role's.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.security.credentials import CredentialStore
from engine.security.jwt import OperatorMode, decode
from engine.security.roles import Identity, Role
from engine.security.server_config import include_line
from engine.store.embedded import EmbeddedNats
from tests.security.conftest import ADMIN, EVERYONE, NODE1, NODE2, Bus, World, secure_store
from tests.security.test_roles_at_work import _others

pytestmark = [pytest.mark.integration]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def creds(tmp_path: Path) -> CredentialStore:
    store = secure_store(tmp_path)
    OperatorMode(store).init()
    # the executors are minted afterwards, as an operator adds nodes: by the CLI, offline
    for node in ("node1", "node2"):
        r = subprocess.run(
            [sys.executable, "-m", "engine.cli", "admin", "credentials", "executor", "--node", node,
             "--credentials", str(store.dir)],
            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert "a new .creds needs no reload" in r.stdout
    return store


@pytest.fixture
def secure_server(tmp_path: Path, creds: CredentialStore) -> Iterator[EmbeddedNats]:
    store = tmp_path / "nats"
    server = EmbeddedNats(store_dir=store, config=include_line(OperatorMode(creds).server_conf, store) + "\n")
    server.start()
    try:
        yield server
    finally:
        server.close()


def test_every_identity_has_a_user_jwt_from_its_roles_scoped_key(creds: CredentialStore) -> None:
    mode = OperatorMode(creds)
    account = decode((mode.root / "account.jwt").read_text().strip())
    scoped = {k["role"]: k for k in account["nats"]["signing_keys"]}
    assert set(scoped) == {r.value for r in Role}
    executor = scoped["executor"]["template"]
    assert "dse.cmd.{{name()}}" in executor["sub"]["allow"]
    assert "$KV.dse_node_leases.{{tag(node)}}" in executor["pub"]["allow"]
    for identity in EVERYONE:
        text = creds.creds_path(identity).read_text()
        user = decode(text.split("-----BEGIN NATS USER JWT-----\n")[1].split("\n")[0])
        assert user["iss"] == scoped[identity.role.value]["key"]
        assert user["sub"] == creds.public_key(identity)
        assert "pub" not in user["nats"]  # the template decides, the user JWT cannot widen it
    assert decode(creds.creds_path(NODE1).read_text().split("\n")[1])["nats"]["tags"] == ["node:node1"]
    seeds = [p.read_text().strip() for p in [*creds.dir.glob("*.nk"), *mode.root.glob("*.nk")]]
    assert len(seeds) == 8 + 3 + len(Role)
    assert not [seed for seed in seeds if seed in mode.server_conf.read_text()]


async def test_a_minted_executor_serves_its_node_and_nothing_else(world: World) -> None:
    # the world ran: the engine leads, node1's executor (minted offline) ran its pod, nothing refused
    assert world.pod_on("node1").ready
    assert world.bus.violations() == []
    nc = await world.bus.connect(NODE1)
    publish, subscribe = _others(NODE1, "publish"), _others(NODE1, "subscribe")
    for subject in publish:
        await nc.publish(subject, b"{}")
    for subject in subscribe:
        await nc.subscribe(subject)
    await nc.flush()
    want = {("Publish", s) for s in publish} | {("Subscription", s) for s in subscribe}
    await world.until(
        "every refusal", lambda: want <= {(v.kind, v.subject) for v in world.bus.violations()}, timeout=5
    )
    node2 = {v.subject for v in world.bus.violations()} & {
        "dse.cmd.node2",
        "$KV.dse_node_leases.node2",
        "$KV.dse_executor_checkpoints.node2",
    }
    assert len(node2) == 3


async def test_a_node_added_later_connects_at_once_with_its_name_in_every_subject(bus: Bus) -> None:
    node = Identity(Role.EXECUTOR, "web-7.rack2")
    env = {**os.environ}
    r = subprocess.run(
        [sys.executable, "-m", "engine.cli", "admin", "credentials", "executor", "--node", node.node or "",
         "--credentials", str(bus.creds.dir)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    nc = await bus.connect(node)
    await nc.subscribe("dse.cmd.web-7_rack2")
    await nc.publish("$KV.dse_node_leases.web-7.rack2", b"x")
    await nc.publish("dse.pod.web-7_rack2.default.p.created", b"{}")
    await nc.publish("dse.pod.node1.default.p.created", b"{}")
    await nc.flush()
    await bus.refused(node, "dse.pod.node1.default.p.created")
    assert [v.subject for v in bus.violations()] == ["dse.pod.node1.default.p.created"]


async def test_without_a_jwt_nothing_connects(bus: Bus) -> None:
    from events.errors import PermanentError

    with pytest.raises(PermanentError, match="Authorization Violation"):
        await bus.connect(None)
    # a config-mode seed alone is not enough in operator mode
    bus.creds.creds_path(ADMIN).unlink()
    with pytest.raises(PermanentError, match="Authorization Violation"):
        await bus.connect(ADMIN)
    assert NODE2 in bus.creds.identities()


def test_dsctl_up_and_ops_cluster_serve_a_directory_in_operator_mode_with_its_operator(
    creds: CredentialStore, tmp_path: Path
) -> None:
    from engine.cli.cluster.layout import default_layout, server_config
    from engine.cli.up import secure_server_config

    store = tmp_path / "nats"
    assert secure_server_config(creds, store) == 'include "../credentials/operator/server.conf"\n'
    conf = server_config(
        default_layout(), 0, str(tmp_path / "cluster"), credentials=str(creds.dir),
        authorization="operator/server.conf",
    )  # fmt: skip
    assert 'include "../credentials/operator/server.conf"' in conf
