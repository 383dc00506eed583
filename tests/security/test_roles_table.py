"""The permission table, the credentials on disk and how a process finds them, and the masking of
secrets: without a server (the servers' side is in the other modules here)."""

from __future__ import annotations

import argparse
import stat
from pathlib import Path

import pytest

from engine.cli.main import build_parser, identities_for
from engine.security.credentials import CredentialStore, directory, wanted, with_credentials
from engine.security.roles import (
    QUERY_SERVICE,
    QUERY_TREE,
    STANDARD_INBOX,
    Identity,
    Role,
    inbox_prefix,
    permissions,
)
from engine.security.server_config import render_authorization, render_routes
from engine.store.connection import split_auth
from engine.store.settings import NatsSettings, redact, register_secret, secret_flags
from events.errors import InvalidInput
from tests.security.conftest import ADMIN, AUDITOR, ENGINE, EVERYONE, FLEET, INGEST, NODE1, PUBLISHER

# --- the table ---------------------------------------------------------------------------------------

WRITES_TO_STREAMS = ("dse.node.", "dse.ds.", "dse.pod.", "dse.decision.", "dse.cmd.", "dse.rejected.")
ADMINISTRATION = (".STREAM.CREATE.", ".STREAM.UPDATE.", ".STREAM.DELETE.", ".STREAM.PURGE.")


def test_only_the_admin_may_do_anything() -> None:
    for identity in EVERYONE:
        perms = permissions(identity)
        wide = ">" in perms.publish or ">" in perms.subscribe
        assert wide == (identity is ADMIN), identity
        if identity is not ADMIN:
            assert not [s for s in perms.publish if ".STREAM.DELETE." in s], identity


def test_a_publisher_may_only_send_to_the_ingest_service() -> None:
    perms = permissions(PUBLISHER)
    assert {s for s in perms.publish if not s.startswith("$SRV.")} == {"dse.ingest.event", "dse.ingest.batch"}
    assert perms.subscribe == ("_INBOX.>",) and inbox_prefix(PUBLISHER) == STANDARD_INBOX
    assert perms.responses == 0


def test_the_auditor_reads_and_writes_nothing() -> None:
    perms = permissions(AUDITOR)
    for subject in perms.publish:
        assert not subject.startswith(("$KV.", "$O.", *WRITES_TO_STREAMS)), subject
        assert not any(verb in subject for verb in ADMINISTRATION), subject
    assert "$JS.API.CONSUMER.CREATE.*" in perms.publish  # the one-token form: ephemeral consumers only
    assert QUERY_TREE in perms.publish  # it asks a running engine first


def test_the_engine_appends_decisions_sends_commands_and_owns_the_lease_only() -> None:
    perms = permissions(ENGINE)
    writes = [s for s in perms.publish if s.startswith(("dse.", "$KV.", "$O."))]
    assert sorted(writes) == ["$KV.dse_leader.engine", "$O.dse_snapshots.>", "dse.cmd.>", "dse.decision.>"]
    purges = [s for s in perms.publish if ".STREAM.PURGE." in s]
    assert purges == ["$JS.API.STREAM.PURGE.OBJ_dse_snapshots"]  # old snapshot chunks, nothing else
    assert "$JS.API.STREAM.CREATE.DSE_EVENTS" in perms.publish
    assert "$JS.API.STREAM.UPDATE.DSE_EVENTS" in perms.publish
    assert QUERY_TREE in perms.subscribe and perms.responses > 1


def test_an_executor_writes_its_own_node_only() -> None:
    perms = permissions(Identity(Role.EXECUTOR, "web-1.rack2"))
    writes = sorted(s for s in perms.publish if s.startswith(("dse.", "$KV.", "$O.")))
    assert writes == [
        "$KV.dse_executor_checkpoints.web-1.rack2",
        "$KV.dse_node_leases.web-1.rack2",
        "dse.logs.web-1_rack2.*",
        "dse.pod.web-1_rack2.>",
    ]
    assert perms.subscribe == ("dse.cmd.web-1_rack2", "_INBOX_executor.web-1_rack2.>", "dse.logs.web-1_rack2")
    fleet = permissions(FLEET)
    assert "dse.pod.>" in fleet.publish and "dse.cmd.>" in fleet.subscribe


def test_ingest_appends_facts_of_other_services_only() -> None:
    perms = permissions(INGEST)
    writes = sorted(s for s in perms.publish if s.startswith("dse."))
    assert writes == ["dse.ds.>", "dse.node.>", "dse.rejected.>"]  # no pod facts, no decisions
    assert perms.responses == 1


@pytest.mark.parametrize("node", ["*", ">", "a b", "node.*", "", "Node1", "-x", "x" * 254])
def test_a_node_name_cannot_smuggle_a_wildcard_into_a_permission(node: str) -> None:
    with pytest.raises(ValueError):
        Identity(Role.EXECUTOR, node)


def test_identity_names_round_trip() -> None:
    for identity in EVERYONE:
        assert Identity.parse(identity.name) == identity
    with pytest.raises(ValueError, match="not a role"):
        Identity.parse("root")


def test_the_query_service_names_match_the_service() -> None:
    protocol = pytest.importorskip("engine.query.protocol")
    assert protocol.SERVICE_NAME == QUERY_SERVICE
    assert QUERY_TREE == protocol.SUBJECT_PREFIX + ">"


# --- credentials on disk ------------------------------------------------------------------------------


def test_credentials_are_private_and_a_key_once_made_is_kept(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path / "a" / "credentials")
    made = store.init()
    assert [i.role for i in made] == [
        Role.ADMIN,
        Role.ENGINE,
        Role.FLEET,
        Role.INGEST,
        Role.PUBLISHER,
        Role.AUDITOR,
    ]
    assert stat.S_IMODE(store.dir.stat().st_mode) == 0o700
    for identity in made:
        path = store.seed_path(identity)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.read_text().startswith("SU")
        assert store.public_key(identity).startswith("U")
    key = store.public_key(ENGINE)
    store.init()
    store.ensure(NODE1)
    assert store.public_key(ENGINE) == key
    assert store.identities()[-1] == NODE1


def test_the_servers_files_hold_no_seed(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path)
    store.init()
    text = render_authorization([(i, store.public_key(i)) for i in store.identities()])
    for identity in store.identities():
        assert store.public_key(identity) in text
        assert store.seed(identity).decode() not in text
    assert '"$JS.API.STREAM.INFO.DSE_EVENTS"' in text  # quoted: "$..." is not a variable
    routes = render_routes(["127.0.0.1:6231", "127.0.0.1:6232"], "pw-xyz")
    assert routes.count("nats-route://route:pw-xyz@127.0.0.1:") == 2


def test_a_process_finds_its_roles_file_and_explicit_credentials_win(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path)
    store.init()
    base = NatsSettings()
    got = with_credentials(base, [ADMIN, AUDITOR], store)
    assert got.nkey == str(store.seed_path(ADMIN)) and got.inbox_prefix == "_INBOX_admin"
    store.seed_path(ADMIN).unlink()
    got = with_credentials(base, [ADMIN, AUDITOR], store)
    assert got.nkey == str(store.seed_path(AUDITOR)) and got.inbox_prefix == "_INBOX_auditor"
    (tmp_path / "auditor.creds").write_text("jwt and seed")
    assert with_credentials(base, [AUDITOR], store).creds == str(tmp_path / "auditor.creds")
    for explicit in (
        NatsSettings(creds="/x.creds"),
        NatsSettings(user="u", password="p"),
        NatsSettings(servers=["nats://tok@h:1"]),
    ):
        assert with_credentials(explicit, [ENGINE], store) == explicit
    none = with_credentials(base, [NODE1], store)
    assert none.nkey is None and "no credentials for executor-node1" in none.auth_hint
    assert "dsctl admin credentials" in none.auth_hint


def test_where_credentials_are_looked_for() -> None:
    assert directory("/x", {"DSCTL_CREDENTIALS": "/y"}) == Path("/x")
    assert directory(None, {"DSCTL_CREDENTIALS": "/y"}) == Path("/y")
    assert directory(None, {}) == Path(".dsctl/credentials")
    assert wanted([ADMIN, AUDITOR], "auditor") == [AUDITOR]
    with pytest.raises(InvalidInput):
        wanted([ADMIN], "superuser")


@pytest.mark.parametrize(
    ("argv", "want"),
    [
        (["get", "ds", "-A"], ["admin", "auditor"]),
        (["replay", "verify"], ["admin", "auditor"]),
        (["rollout", "history", "ds/x"], ["admin", "auditor"]),
        (["version"], ["admin", "auditor"]),
        (["rollout", "restart", "ds/x"], ["admin"]),
        (["apply", "-f", "x.yaml"], ["admin"]),
        (["events", "publish", "-f", "x"], ["publisher", "admin"]),
        (["engine", "run"], ["engine"]),
        (["executor", "run", "--node", "node7"], ["executor-node7"]),
        (["executor", "run", "--fleet"], ["fleet"]),
        (["ingest", "run"], ["ingest"]),
        (["admin", "streams"], ["admin", "engine"]),
    ],
)
def test_each_command_asks_for_the_roles_that_can_do_it(argv: list[str], want: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert [i.name for i in identities_for(args)] == want


def test_metrics_bind_loopback_unless_told() -> None:
    parser = build_parser()
    assert parser.parse_args(["engine", "run", "--metrics-port", "9102"]).metrics_address == "127.0.0.1"
    assert parser.parse_args(["up", "--metrics-port", "9102"]).metrics_address == "127.0.0.1"
    assert parser.parse_args(["engine", "run", "--metrics-address", "0.0.0.0"]).metrics_address == "0.0.0.0"


# --- secrets masked ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("nats://dsctl:s3cr3t@h:4222", "nats://dsctl:***@h:4222"),
        ("nats://t0k3n@h:4222", "nats://***@h:4222"),
        ("tls://u:p4ss@h", "tls://u:***@h"),
        ("nats://a:pw1@h1:1,nats://a:pw1@h2:2", "nats://a:***@h1:1,nats://a:***@h2:2"),
        (
            "error: cannot reach nats://tk@x:1, nats://u:v@y:2 (timeout)",
            "error: cannot reach nats://***@x:1, nats://u:***@y:2 (timeout)",
        ),
        ("nats://h:4222 and http://h:8222/varz", "nats://h:4222 and http://h:8222/varz"),
    ],
)
def test_credentials_in_urls_are_masked_in_any_text(text: str, masked: str) -> None:
    assert redact(text) == masked


def test_a_registered_secret_is_masked_wherever_it_appears() -> None:
    register_secret("correct-horse-battery")
    register_secret("ab")  # too short to be told from ordinary text: never masked
    assert redact("password correct-horse-battery was refused") == "password *** was refused"
    assert "ab" in redact("ab")


def test_the_connection_takes_credentials_out_of_the_urls() -> None:
    auth = split_auth(NatsSettings(servers=["nats://u:pw-1234@h1:1", "nats://u:pw-1234@h2:2"]))
    assert auth.servers == ["nats://h1:1", "nats://h2:2"]
    assert (auth.user, auth.password, auth.token) == ("u", "pw-1234", None)
    token = split_auth(NatsSettings(servers=["tok-5678@h1:1"]))
    assert token.servers == ["nats://h1:1"] and token.token == "tok-5678"
    explicit = split_auth(NatsSettings(servers=["nats://u:pw@h"], user="v", password="flag-pw"))
    assert (explicit.user, explicit.password) == ("v", "flag-pw")
    assert redact("flag-pw and pw-1234 and tok-5678") == "*** and *** and ***"
    with pytest.raises(InvalidInput):
        split_auth(NatsSettings(servers=["nats://a:b@h1", "nats://c:d@h2"]))


def test_a_secret_given_as_a_flag_is_named_for_a_warning() -> None:
    args = argparse.Namespace(nats_password="x", nats_token=None, nats_url="nats://u:p@h,nats://h2")
    assert secret_flags(args) == ["--password", "--nats (credentials in the URL)"]
    assert secret_flags(argparse.Namespace(nats_url="nats://h")) == []
