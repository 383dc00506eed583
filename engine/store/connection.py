"""Open a NATS connection from ``NatsSettings``.

Two different policies on purpose: the *first* connect is bounded (``connect_deadline``), so a wrong URL
fails fast with a message naming it; once connected, the client reconnects forever, because a controller
must outlive a server restart (its ordered consumers resubscribe on their own, see ``ordered.py``).
nats-py with ``max_reconnect_attempts=-1`` would otherwise retry the first connect forever too.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl

import nats
import structlog
from nats.aio.client import Client

from engine.store.settings import NatsSettings
from events.errors import PermanentError, TransientError

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


async def connect(settings: NatsSettings) -> Client:
    """Connect, or raise ``TransientError`` naming the URL(s) and the last failure."""
    urls = ", ".join(settings.redacted_servers())
    nc = Client()
    last_error: list[BaseException] = []

    async def on_error(err: Exception) -> None:
        # called for every failed attempt and for async errors later; keep the last for the message
        last_error[:] = [err]
        log.warning("nats.error", servers=urls, error=f"{type(err).__name__}: {err}")

    async def on_disconnected() -> None:
        log.info("nats.disconnected", servers=urls)

    async def on_reconnected() -> None:
        log.info("nats.reconnected", server=str(nc.connected_url.netloc if nc.connected_url else ""))

    tls = tls_context(settings)
    connect_call = nc.connect(
        servers=settings.servers,
        name=settings.name,
        connect_timeout=settings.connect_timeout,  # type: ignore[arg-type]  # nats-py annotates int, takes float
        reconnect_time_wait=settings.reconnect_wait,  # type: ignore[arg-type]
        max_reconnect_attempts=settings.max_reconnect_attempts,
        allow_reconnect=True,
        error_cb=on_error,
        disconnected_cb=on_disconnected,
        reconnected_cb=on_reconnected,
        tls=tls,
        user=settings.user or None,
        password=(settings.password or "") if settings.user else None,
        token=settings.token or None,
        user_credentials=settings.creds or None,
    )
    try:
        async with asyncio.timeout(settings.connect_deadline):
            await connect_call
    except (TimeoutError, OSError, nats.errors.Error) as err:
        with contextlib.suppress(Exception):
            await nc.close()
        cause = last_error[0] if last_error else err
        raise TransientError(
            f"cannot connect to NATS at {urls} within {settings.connect_deadline:g}s: "
            f"{type(cause).__name__}: {cause}"
        ) from err
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
