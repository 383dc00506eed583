"""Connection settings: environment, flags over environment, and a connect failure that names the URL."""

from __future__ import annotations

import argparse
import ssl
from pathlib import Path

import pytest

from engine.store.connection import connect, tls_context
from engine.store.embedded import free_port
from engine.store.settings import DEFAULT_URL, NatsSettings, add_arguments, from_args, from_env
from events.errors import PermanentError, TransientError


def parse(argv: list[str], env: dict[str, str]) -> NatsSettings:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return from_args(parser.parse_args(argv), env)


def test_defaults() -> None:
    settings = from_env({})
    assert settings.servers == [DEFAULT_URL] == ["nats://127.0.0.1:4222"]
    assert settings.user is None and settings.token is None and settings.creds is None


def test_environment() -> None:
    env = {
        "NATS_URL": "nats://a:4222, nats://b:4222",
        "NATS_USER": "u",
        "NATS_PASSWORD": "p",
        "NATS_TOKEN": "t",
        "NATS_CREDS": "/c.creds",
        "NATS_CA": "/ca.pem",
        "NATS_CERT": "/cert.pem",
        "NATS_KEY": "/key.pem",
    }
    s = from_env(env)
    assert s.servers == ["nats://a:4222", "nats://b:4222"]
    assert (s.user, s.password, s.token, s.creds) == ("u", "p", "t", "/c.creds")
    assert (s.tls_ca, s.tls_cert, s.tls_key) == ("/ca.pem", "/cert.pem", "/key.pem")


def test_flags_override_environment() -> None:
    env = {"NATS_URL": "nats://env:4222", "NATS_USER": "env-user", "NATS_TOKEN": "env-token"}
    s = parse(["--nats", "nats://x:1,nats://y:2", "--user", "flag-user", "--tls-ca", "/f.pem"], env)
    assert s.servers == ["nats://x:1", "nats://y:2"]
    assert s.user == "flag-user" and s.token == "env-token" and s.tls_ca == "/f.pem"
    assert parse([], env).servers == ["nats://env:4222"]
    assert parse([], {}).servers == [DEFAULT_URL]
    s = parse(
        ["--password", "pw", "--creds", "c", "--token", "tk", "--tls-cert", "c.pem", "--tls-key", "k.pem"], {}
    )
    assert (s.password, s.creds, s.token, s.tls_cert, s.tls_key) == ("pw", "c", "tk", "c.pem", "k.pem")


def test_passwords_in_urls_are_redacted() -> None:
    s = NatsSettings(servers=["nats://me:secret@host:4222", "nats://plain:4222"])
    assert s.redacted_servers() == ["nats://me:***@host:4222", "nats://plain:4222"]


def test_tls_context() -> None:
    assert tls_context(NatsSettings()) is None
    assert isinstance(tls_context(NatsSettings(servers=["tls://h:4222"])), ssl.SSLContext)
    with pytest.raises(PermanentError, match="TLS"):
        tls_context(NatsSettings(tls_ca="/does/not/exist.pem"))


async def test_connect_failure_names_the_url() -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    settings = NatsSettings(servers=[url], connect_timeout=0.2, connect_deadline=1.0, reconnect_wait=0.1)
    with pytest.raises(TransientError, match=url.replace(".", r"\.")):
        await connect(settings)


async def test_connect_failure_hides_the_password() -> None:
    port = free_port()
    settings = NatsSettings(servers=[f"nats://me:secret@127.0.0.1:{port}"], connect_deadline=0.5)
    with pytest.raises(TransientError) as info:
        await connect(settings)
    # the URL is named, its credentials are not (taken out of the URL, or masked)
    assert "secret" not in str(info.value) and f"127.0.0.1:{port}" in str(info.value)


@pytest.mark.integration
async def test_connect_with_settings(nats_server: object, tmp_path: Path) -> None:
    from engine.store.connection import close

    nc = await connect(from_env({"NATS_URL": nats_server.url}))  # type: ignore[attr-defined]
    try:
        assert nc.is_connected
    finally:
        await close(nc)
