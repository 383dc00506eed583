"""``run_ingest`` as ``dsctl ingest run`` will run it: a separate process that finds the streams it
writes to (an engine created them; ingest only checks), answers discovery, and exits 0 on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from typing import Any

import pytest

from engine.ingest.client import IngestClient
from events.ingest_wire import SERVICE_NAME
from events.types import NodeRegistered
from tests.conftest import TestServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

SCRIPT = """
import asyncio, sys
from engine.ingest.service import run_ingest
from engine.store.settings import NatsSettings
sys.exit(asyncio.run(run_ingest(NatsSettings(servers=[sys.argv[1]], name="dsctl-ingest-test"))))
"""


async def test_run_ingest_serves_until_sigterm(nats_server: TestServer, nc: Any, streams: Any) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SCRIPT, nats_server.url, stdout=asyncio.subprocess.DEVNULL
    )
    try:
        async with asyncio.timeout(15):
            while True:
                try:
                    msg = await nc.request(f"$SRV.PING.{SERVICE_NAME}", b"", timeout=0.5)
                    break
                except Exception:
                    assert proc.returncode is None, "run_ingest exited early"
                    await asyncio.sleep(0.1)
        assert json.loads(msg.data)["name"] == SERVICE_NAME
        reply = await IngestClient(nc).publish(NodeRegistered(name="from-another-process"))
        assert reply.seq >= 1
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
