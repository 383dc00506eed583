"""How to reach NATS: one Struct, filled from the environment and then from command-line flags.

Flags win over the environment, the environment wins over the default (``nats://127.0.0.1:4222``), so
``NATS_URL=... dsctl ...`` works in containers while a flag still overrides it for one run. The
environment variable names are the ones the ``nats`` CLI and other clients already use.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

import msgspec

DEFAULT_URL = "nats://127.0.0.1:4222"

# env var -> field; NATS_URL is handled on its own (comma-separated list)
_ENV_FIELDS: dict[str, str] = {
    "NATS_USER": "user",
    "NATS_PASSWORD": "password",
    "NATS_TOKEN": "token",
    "NATS_CREDS": "creds",
    "NATS_CA": "tls_ca",
    "NATS_CERT": "tls_cert",
    "NATS_KEY": "tls_key",
}

# flag dest -> field
_FLAG_FIELDS: dict[str, str] = {
    "nats_user": "user",
    "nats_password": "password",
    "nats_token": "token",
    "nats_creds": "creds",
    "nats_tls_ca": "tls_ca",
    "nats_tls_cert": "tls_cert",
    "nats_tls_key": "tls_key",
}


class NatsSettings(msgspec.Struct, frozen=True, kw_only=True):
    servers: list[str] = msgspec.field(default_factory=lambda: [DEFAULT_URL])
    user: str | None = None
    password: str | None = None
    token: str | None = None
    #: a NATS credentials file (JWT + nkey seed)
    creds: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    name: str = "dsctl"
    #: per-attempt TCP/TLS connect timeout and the overall bound on the first connect
    connect_timeout: float = 2.0
    connect_deadline: float = 10.0
    #: after the first connect: keep reconnecting forever (a controller outlives server restarts)
    reconnect_wait: float = 0.5
    max_reconnect_attempts: int = -1

    def redacted_servers(self) -> list[str]:
        """Server URLs with any password in them masked, for logs and error messages."""
        return [_redact(url) for url in self.servers]


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def split_urls(value: str) -> list[str]:
    return [u.strip() for u in value.split(",") if u.strip()]


def from_env(env: Mapping[str, str] | None = None, *, base: NatsSettings | None = None) -> NatsSettings:
    """Settings from ``NATS_URL`` (comma-separated allowed), ``NATS_USER``, ``NATS_PASSWORD``,
    ``NATS_TOKEN``, ``NATS_CREDS``, ``NATS_CA``, ``NATS_CERT``, ``NATS_KEY``; empty values are unset."""
    env = os.environ if env is None else env
    settings = base or NatsSettings()
    changes: dict[str, object] = {}
    urls = split_urls(env.get("NATS_URL", ""))
    if urls:
        changes["servers"] = urls
    for var, field in _ENV_FIELDS.items():
        if env.get(var):
            changes[field] = env[var]
    return msgspec.structs.replace(settings, **changes)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the connection flags. Defaults are None so that an absent flag leaves the env value alone."""
    group = parser.add_argument_group("NATS connection (flags override NATS_* environment variables)")
    group.add_argument(
        "--nats", dest="nats_url", metavar="URL[,URL...]", help=f"server URL(s) [{DEFAULT_URL}]"
    )
    group.add_argument("--user", dest="nats_user", help="user name [NATS_USER]")
    group.add_argument("--password", dest="nats_password", help="password [NATS_PASSWORD]")
    group.add_argument("--token", dest="nats_token", help="auth token [NATS_TOKEN]")
    group.add_argument("--creds", dest="nats_creds", metavar="FILE", help="credentials file [NATS_CREDS]")
    group.add_argument("--tls-ca", dest="nats_tls_ca", metavar="FILE", help="CA certificate [NATS_CA]")
    group.add_argument(
        "--tls-cert", dest="nats_tls_cert", metavar="FILE", help="client certificate [NATS_CERT]"
    )
    group.add_argument("--tls-key", dest="nats_tls_key", metavar="FILE", help="client key [NATS_KEY]")


def from_args(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> NatsSettings:
    """Environment first, then every flag that was given on top."""
    settings = from_env(env)
    changes: dict[str, object] = {}
    url = getattr(args, "nats_url", None)
    if url:
        changes["servers"] = split_urls(url)
    for dest, field in _FLAG_FIELDS.items():
        value = getattr(args, dest, None)
        if value:
            changes[field] = value
    return msgspec.structs.replace(settings, **changes)
