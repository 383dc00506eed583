"""Open a NATS connection from ``NatsSettings``.

Two different policies on purpose: the *first* connect is bounded (``connect_deadline``), so a wrong URL
fails fast with a message naming it; once connected, the client reconnects forever, because a controller
must outlive a server restart (its ordered consumers resubscribe on their own, see ``ordered.py``).
nats-py with ``max_reconnect_attempts=-1`` would otherwise retry the first connect forever too.

No secret reaches nats-py's own state: user information in a URL is taken out of it and passed as the
user, password or token options (nats-py keeps the URLs it was given and hands them out, e.g. as
``connected_url`` on a reconnect, which a log line once printed with the password in it), and every
password and token is registered with ``settings.register_secret`` so that any text we log or raise is
masked (``settings.redact``). A permissions violation the server reports is logged as such, naming the
subject: under dsctl's roles it means a process tried something its role may not do.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl

import msgspec
import nats
import structlog
from nats.aio.client import Client

from engine.store.settings import NatsSettings, redact, register_secret, split_userinfo
from events.errors import InvalidInput, PermanentError, TransientError

log = structlog.get_logger()


def tls_context(settings: NatsSettings) -> ssl.SSLContext | None:
    """A TLS context when any TLS file is given or a URL says ``tls://``; None for plain connections."""
    wants_tls = any(url.startswith("tls://") for url in settings.servers)
    if not (settings.tls_ca or settings.tls_cert or wants_tls):
        return None
    try:
        ctx = ssl.create_default_context(cafile=settings.tls_ca)
        if settings.tls_cert:
            ctx.load_cert_chain(settings.tls_cert, settings.tls_key)
    except (OSError, ssl.SSLError) as err:
        raise PermanentError(
            f"cannot load TLS files (ca={settings.tls_ca}, cert={settings.tls_cert}): {err}"
        ) from err
    return ctx


class Auth(msgspec.Struct, frozen=True):
    """The servers without user information, and the credentials taken out of their URLs."""

    servers: list[str]
    user: str | None = None
    password: str | None = None
    token: str | None = None


def split_auth(settings: NatsSettings) -> Auth:
    """URLs stripped of credentials, the options winning over what the URLs said (module docstring)."""
    servers: list[str] = []
    found: set[tuple[str | None, str | None]] = set()
    for url in settings.servers:
        full = url if "://" in url else f"nats://{url}"
        clean, user, password = split_userinfo(full)
        servers.append(clean)
        if user is not None:
            found.add((user, password))
    if len(found) > 1:
        raise InvalidInput(
            "the server URLs carry different credentials; give them once (NATS_USER and NATS_PASSWORD, "
            "NATS_TOKEN, or a credentials file)",
            "--nats",
        )
    url_user, url_password = next(iter(found)) if found else (None, None)
    user, password, token = settings.user, settings.password, settings.token
    if not (user or token) and url_user is not None:
        if url_password is None:
            token = url_user  # nats://TOKEN@host
        else:
            user, password = url_user, url_password
    for secret in (password, token):
        register_secret(secret)
    return Auth(servers=servers, user=user or None, password=password, token=token or None)


def _describe(err: BaseException) -> str:
    return redact(f"{type(err).__name__}: {err}")


def _refused(urls: str, errors: list[BaseException], settings: NatsSettings) -> str:
    cause = _describe(errors[0]) if errors else "Authorization Violation"
    hint = f" ({settings.auth_hint})" if settings.auth_hint else ""
    return f"NATS at {urls} refused the connection: {cause}{hint}"


async def connect(settings: NatsSettings) -> Client:
    """Connect, or raise ``TransientError`` naming the URL(s) and the last failure."""
    auth = split_auth(settings)
    urls = ", ".join(auth.servers)
    nc = Client()
    last_error: list[BaseException] = []
    denial: list[BaseException] = []
    refused = asyncio.Event()

    async def on_error(err: Exception) -> None:
        # called for every failed attempt and for async errors later; keep the last for the message
        last_error[:] = [err]
        text = str(err).lower()
        if "permissions violation" in text:
            log.error(
                "nats.permission_denied", servers=urls, error=_describe(err), credentials=settings.auth_hint
            )
            return
        if "authorization violation" in text and not nc.is_connected:
            # the server refused our credentials (or their absence): retrying will not change that
            denial[:] = [err]
            refused.set()
        log.warning("nats.error", servers=urls, error=_describe(err))

    async def on_disconnected() -> None:
        log.info("nats.disconnected", servers=urls)

    async def on_reconnected() -> None:
        where = nc.connected_url
        # host and port only: never the URL's user information
        log.info("nats.reconnected", server=f"{where.hostname}:{where.port}" if where else "")

    tls = tls_context(settings)
    connect_call = nc.connect(
        servers=auth.servers,
        name=settings.name,
        connect_timeout=settings.connect_timeout,  # type: ignore[arg-type]  # nats-py annotates int, takes float
        reconnect_time_wait=settings.reconnect_wait,  # type: ignore[arg-type]
        max_reconnect_attempts=settings.max_reconnect_attempts,
        allow_reconnect=True,
        error_cb=on_error,
        disconnected_cb=on_disconnected,
        reconnected_cb=on_reconnected,
        tls=tls,
        user=auth.user,
        password=(auth.password or "") if auth.user else None,
        token=auth.token,
        user_credentials=settings.creds or None,
        nkeys_seed=settings.nkey or None,
        inbox_prefix=settings.inbox_prefix,
    )
    attempt = asyncio.ensure_future(connect_call)
    refusal = asyncio.ensure_future(refused.wait())
    try:
        async with asyncio.timeout(settings.connect_deadline):
            await asyncio.wait({attempt, refusal}, return_when=asyncio.FIRST_COMPLETED)
        if not attempt.done():
            attempt.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await attempt
            raise PermanentError(_refused(urls, denial, settings))
        attempt.result()
    except (TimeoutError, OSError, nats.errors.Error) as err:
        if not attempt.done():
            attempt.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await attempt
        with contextlib.suppress(Exception):
            await nc.close()
        cause = last_error[0] if last_error else err
        message = (
            f"cannot connect to NATS at {urls} within {settings.connect_deadline:g}s: {_describe(cause)}"
        )
        if "authorization" in str(cause).lower() and settings.auth_hint:
            message += f" ({settings.auth_hint})"
        raise TransientError(message) from err
    except PermanentError:
        with contextlib.suppress(Exception):
            await nc.close()
        raise
    finally:
        refusal.cancel()
    log.debug("nats.connected", servers=urls)
    return nc


async def close(nc: Client) -> None:
    """``nc.close()``, made total. nats-py 2.16 gives up half-way through ``close`` when the socket dies
    during its final flush (e.g. while reconnecting to a restarted server), leaving its subscription
    tasks running; finish that job here so nothing outlives the connection."""
    try:
        await nc.close()
    except Exception as err:
        log.debug("nats.close_incomplete", error=f"{type(err).__name__}: {err}")
        for sub in list(nc._subs.values()):
            task = sub._wait_for_msgs_task
            if task is not None and not task.done():
                task.cancel()
        nc._subs.clear()
        for task in (nc._reading_task, nc._ping_interval_task, nc._flusher_task, nc._reconnection_task):
            if task is not None and not task.done():
                task.cancel()
        if nc._transport is not None:
            nc._transport.close()  # type: ignore[no-untyped-call]
