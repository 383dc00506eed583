"""``ingest-service``: requests per second the ingest service accepts, and refuses (docs/ingest.md).

The service is the real one, ``dsctl ingest run`` as its own process, on the scenario's nats-server.
This process sends requests to ``dse.ingest.event`` with ``concurrency`` requests in flight (one task
each, ``nc.request`` one after another), and checks every reply:

- accepted: ``node.registered`` of a new node each (validated, appended to ``DSE_EVENTS``, answered
  with its sequence);
- refused: a mix of what the service must turn away with a 400 naming the problem, each kept in
  ``DSE_REJECTED`` with its reason: not JSON, an unknown type, a bad node name, a pod fact (only
  executors write those), a field the contract does not have.

Baseline: raw core NATS request/reply at the same concurrency, same bodies, to a responder in its own
process (nats-py, answering a fixed 40-byte reply), so both sides cross the same process boundary.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable

from nats.aio.client import Client
from nats.aio.msg import Msg

from engine.bench.common import Row, Target, nats_server
from engine.store.jetstream_api import api_request
from events.subjects import INGEST_EVENT_SUBJECT, REJECTED_STREAM

BASELINE_SUBJECT = "_bench.echo"

#: the baseline's responder: core NATS only, no validation, no JetStream
_ECHO = """
import asyncio, sys
import nats

async def main():
    nc = await nats.connect(sys.argv[1])
    async def respond(msg):
        await msg.respond(b'{"seq": 1, "duplicate": false, "id": "x"}')
    await nc.subscribe(sys.argv[2], cb=respond)
    await nc.flush()
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def good_bodies(count: int) -> list[bytes]:
    return [
        json.dumps(
            {
                "type": "node.registered",
                "data": {
                    "name": f"ingest-{i:06d}",
                    "labels": {"kubernetes.io/os": "linux", "topology.kubernetes.io/zone": f"zone-{i % 3}"},
                    "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110"},
                },
            }
        ).encode()
        for i in range(count)
    ]


def bad_bodies(count: int) -> list[bytes]:
    kinds: list[Callable[[int], bytes]] = [
        lambda i: b'{"type": "node.registered", "data": {"name": ',  # not JSON
        lambda i: json.dumps({"type": "node.exploded", "data": {"name": f"n-{i}"}}).encode(),
        lambda i: json.dumps({"type": "node.registered", "data": {"name": f"Bad_Name_{i}"}}).encode(),
        lambda i: json.dumps(
            {
                "type": "pod.ready",
                "data": {"namespace": "default", "name": f"p-{i}", "node": "n-1", "command_id": "c"},
            }
        ).encode(),
        lambda i: json.dumps({"type": "node.cordoned", "data": {"name": f"n-{i}", "colour": "red"}}).encode(),
    ]
    return [kinds[i % len(kinds)](i) for i in range(count)]


async def _drive(nc: Client, subject: str, bodies: list[bytes], concurrency: int) -> tuple[float, list[Msg]]:
    """Send every body with ``concurrency`` requests in flight; (seconds, replies in body order)."""
    replies: list[Msg | None] = [None] * len(bodies)
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < len(bodies):
            i = next_index
            next_index += 1
            replies[i] = await nc.request(subject, bodies[i], timeout=30)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    return elapsed, [r for r in replies if r is not None]


def _refused(msg: Msg) -> bool:
    return (msg.headers or {}).get("Nats-Service-Error-Code") == "400"


async def _child(*args: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env=env,
    )


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def _until(check: Callable[[], Awaitable[bool]], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if await check():
                return True
        except Exception:
            pass
        await asyncio.sleep(0.2)
    return False


async def ingest_service(quick: bool) -> list[Row]:
    count, concurrency = (400, 16) if quick else (10_000, 32)
    good, bad = good_bodies(count), bad_bodies(count)
    async with nats_server() as (server, nc):
        env = {**os.environ, "NATS_URL": server.url}
        service = await _child("-m", "engine.cli", "ingest", "run", env=env)
        try:

            async def answers() -> bool:
                probe = json.dumps({"type": "node.registered", "data": {"name": "probe"}}).encode()
                msg = await nc.request(INGEST_EVENT_SUBJECT, probe, timeout=2)
                return not _refused(msg)

            if not await _until(answers, 60):
                raise RuntimeError("the ingest service (dsctl ingest run) did not answer within 60 s")
            t_good, good_replies = await _drive(nc, INGEST_EVENT_SUBJECT, good, concurrency)
            t_bad, bad_replies = await _drive(nc, INGEST_EVENT_SUBJECT, bad, concurrency)
        finally:
            await _stop(service)
        accepted = sum(1 for m in good_replies if not _refused(m) and b'"seq"' in m.data)
        refused = sum(1 for m in bad_replies if _refused(m))
        info = await api_request(nc, f"STREAM.INFO.{REJECTED_STREAM}")
        kept = int(info.get("state", {}).get("messages", 0))
        echo = await _child("-c", _ECHO, server.url, BASELINE_SUBJECT)
        try:
            assert echo.stdout is not None
            line = await asyncio.wait_for(echo.stdout.readline(), 60)
            if line.strip() != b"ready":
                raise RuntimeError("the baseline responder did not start")
            t_raw_good, _ = await _drive(nc, BASELINE_SUBJECT, good, concurrency)
            t_raw_bad, _ = await _drive(nc, BASELINE_SUBJECT, bad, concurrency)
        finally:
            await _stop(echo)
    what = f"{count:,} requests, {concurrency} in flight, `dsctl ingest run` in its own process"
    baseline_label = f"core NATS request/reply to a bare responder process, {concurrency} in flight"
    return [
        Row(
            "ingest-service",
            f"accepted: node.registered validated + appended, {what}",
            count / t_good if accepted == count else None,
            "req/s",
            baseline=count / t_raw_good,
            baseline_label=baseline_label,
            target=Target(">=", 1_000.0),
            verdict=None if accepted == count else False,
            note=f"{accepted:,}/{count:,} answered with a sequence",
        ),
        Row(
            "ingest-service",
            f"refused: malformed, unknown type, bad name, pod fact, unknown field; {what}",
            count / t_bad if refused == count else None,
            "req/s",
            baseline=count / t_raw_bad,
            baseline_label=baseline_label,
            target=Target(">=", 1_000.0),
            verdict=None if refused == count and kept >= count else False,
            note=f"{refused:,}/{count:,} answered 400; {kept:,} kept in {REJECTED_STREAM}",
        ),
    ]
