"""How to reach NATS: one Struct, filled from the environment and then from command-line flags.

Flags win over the environment, the environment wins over the default (``nats://127.0.0.1:4222``), so
``NATS_URL=... dsctl ...`` works in containers while a flag still overrides it for one run. The
environment variable names are the ones the ``nats`` CLI and other clients already use.

Secrets never leave this process in a readable form: ``redact`` masks the user information of any URL
in a text (``nats://user:pass@host`` keeps the user, ``nats://token@host`` masks the token, several
URLs in one string each) and every secret value registered with ``register_secret`` (the connection
registers the passwords and tokens it is given). Logs, error messages and ``redacted_servers`` go
through it. A secret given as a command-line flag is visible to every local user (``ps``,
``/proc/<pid>/cmdline``): ``secret_flags`` names them so the CLI can warn.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping

import msgspec

DEFAULT_URL = "nats://127.0.0.1:4222"

# env var -> field; NATS_URL is handled on its own (comma-separated list)
_ENV_FIELDS: dict[str, str] = {
    "NATS_USER": "user",
    "NATS_PASSWORD": "password",
    "NATS_TOKEN": "token",
    "NATS_CREDS": "creds",
    "NATS_NKEY": "nkey",
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
    "nats_nkey": "nkey",
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
    #: a file holding an nkey seed (config-file users authenticated by nkey)
    nkey: str | None = None
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
    #: the prefix of this connection's reply subjects (a role's own under dsctl's permissions)
    inbox_prefix: str = "_INBOX"
    #: which credentials were chosen and where, said when the server refuses them (or their absence)
    auth_hint: str = ""

    def redacted_servers(self) -> list[str]:
        """Server URLs with any password or token in them masked, for logs and error messages."""
        return [redact(url) for url in self.servers]


MASK = "***"
# scheme://userinfo@ anywhere in a text; userinfo stops at the first '@', '/', space or ','
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^@/\s,]+)@")
_secrets: set[str] = set()
#: shorter values would mask ordinary words: a password that short is no secret anyway
MIN_SECRET = 4


def register_secret(value: str | None) -> None:
    """Mask ``value`` wherever ``redact`` meets it from now on (in this process)."""
    if value and len(value) >= MIN_SECRET:
        _secrets.add(value)


def _mask_userinfo(match: re.Match[str]) -> str:
    user, sep, _ = match["userinfo"].partition(":")
    # "user:password@" keeps the user; a lone "token@" is all secret (NATS reads it as a token)
    return f"{match['scheme']}{user}:{MASK}@" if sep else f"{match['scheme']}{MASK}@"


def redact(text: str) -> str:
    """``text`` with URL user information and every registered secret masked (module docstring)."""
    out = _USERINFO.sub(_mask_userinfo, text)
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in out:
            out = out.replace(secret, MASK)
    return out


def split_userinfo(url: str) -> tuple[str, str | None, str | None]:
    """``(url without user information, user or token, password)``."""
    match = _USERINFO.match(url.strip())
    if match is None:
        return url.strip(), None, None
    user, sep, password = match["userinfo"].partition(":")
    return match["scheme"] + url.strip()[match.end() :], user, password if sep else None


def secret_flags(args: argparse.Namespace) -> list[str]:
    """The command-line flags that carry a secret (each visible in ``ps`` to every local user)."""
    found = [
        flag
        for flag, dest in (("--password", "nats_password"), ("--token", "nats_token"))
        if getattr(args, dest, None)
    ]
    url = getattr(args, "nats_url", None) or ""
    if any(split_userinfo(u)[1] for u in split_urls(url)):
        found.append("--nats (credentials in the URL)")
    return found


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
    group.add_argument(
        "--password",
        dest="nats_password",
        help="password (visible in ps: prefer NATS_PASSWORD) [NATS_PASSWORD]",
    )
    group.add_argument(
        "--token", dest="nats_token", help="auth token (visible in ps: prefer NATS_TOKEN) [NATS_TOKEN]"
    )
    group.add_argument("--creds", dest="nats_creds", metavar="FILE", help="credentials file [NATS_CREDS]")
    group.add_argument("--nkey", dest="nats_nkey", metavar="FILE", help="nkey seed file [NATS_NKEY]")
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
