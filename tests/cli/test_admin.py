"""Who sets the store up, as processes on a real nats-server: only ``dsctl engine run`` (and ``dsctl
admin streams``) write stream definitions; an executor or ingest started first says what is missing; a
TTL an engine set and a limit an operator raised survive the next start-up; ``--replicas`` more than the
server has is refused before anything is created."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.cli.main import replicas_from
from engine.ingest.service import run_ingest
from engine.store.jetstream_api import api_request
from engine.store.settings import NatsSettings
from engine.store.setup import MissingStreams, ensure
from engine.store.streams import COMMANDS_STREAM, EVENTS_STREAM, REJECTED_STREAM
from events.errors import InvalidInput
from tests.conftest import TestServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]
ROOT = Path(__file__).resolve().parents[2]
_NS = 1_000_000_000


def dsctl(url: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args, "--nats", url],
        cwd=ROOT, capture_output=True, text=True, timeout=45, env={**os.environ, **(env or {})},
    )  # fmt: skip


class Background:
    """A long-running ``dsctl`` process whose output goes to a file, stopped at the end."""

    def __init__(self, url: str, out: Path, *args: str) -> None:
        self.out = out
        self._file = out.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", *args, "--nats", url],
            cwd=ROOT, stdout=self._file, stderr=subprocess.STDOUT,
        )  # fmt: skip

    @property
    def text(self) -> str:
        return self.out.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.text:
            assert self.proc.poll() is None, f"exited {self.proc.returncode} before {text!r}:\n{self.text}"
            assert time.monotonic() < deadline, f"no {text!r} within {timeout}s:\n{self.text}"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._file.close()


@pytest.fixture
def background(nats_server: TestServer, tmp_path: Path) -> Iterator[Any]:
    started: list[Background] = []

    def start(name: str, *args: str) -> Background:
        proc = Background(nats_server.url, tmp_path / f"{name}.out", *args)
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in reversed(started):
            proc.stop()


async def _config(nc: Any, stream: str) -> dict[str, Any]:
    config: dict[str, Any] = (await api_request(nc, f"STREAM.INFO.{stream}"))["config"]
    return config


async def _stream_names(nc: Any) -> list[str]:
    return sorted((await api_request(nc, "STREAM.NAMES", {}))["streams"] or [])


async def test_an_executor_start_keeps_the_lease_ttl_the_engine_set(nc: Any, background: Any) -> None:
    """The reported bug: ``engine run --lease-ttl 2`` then ``executor run --fleet`` put KV_dse_leader's
    max_age back to the file's 5 s. Now the executor only checks, and a restarted engine without the
    flag keeps the TTL too."""
    engine = background("engine", "engine", "run", "--lease-ttl", "2")
    engine.wait_for("lease.acquired")
    assert (await _config(nc, "KV_dse_leader"))["max_age"] == 2 * _NS
    background("executor", "executor", "run", "--fleet").wait_for("executor.started")
    assert (await _config(nc, "KV_dse_leader"))["max_age"] == 2 * _NS
    engine.stop()
    again = background("engine-2", "engine", "run")
    again.wait_for("lease.acquired")
    assert '"lease_ttl": 2.0' in again.text
    assert (await _config(nc, "KV_dse_leader"))["max_age"] == 2 * _NS


async def test_an_executor_on_a_fresh_server_names_what_is_missing(nats_server: TestServer, nc: Any) -> None:
    r = dsctl(nats_server.url, "executor", "run", "--fleet")
    assert r.returncode == 1, r.stderr
    assert (
        "error: missing in NATS: stream DSE_COMMANDS, stream DSE_EVENTS, "
        "bucket dse_executor_checkpoints (stream KV_dse_executor_checkpoints), "
        "bucket dse_node_leases (stream KV_dse_node_leases)"
    ) in r.stderr
    assert "dsctl engine run" in r.stderr and "dsctl admin streams" in r.stderr
    assert "Traceback" not in r.stderr
    assert await _stream_names(nc) == []


async def test_ingest_on_a_fresh_server_names_what_is_missing(nats_server: TestServer, nc: Any) -> None:
    with pytest.raises(MissingStreams, match="stream DSE_EVENTS, stream DSE_REJECTED"):
        await run_ingest(NatsSettings(servers=[nats_server.url], name="dsctl-ingest-test"))
    assert await _stream_names(nc) == []


@pytest.mark.parametrize(
    ("args", "env"),
    [
        pytest.param(["--replicas", "3"], {}, id="flag"),
        pytest.param([], {"DSCTL_REPLICAS": "3"}, id="environment"),
    ],
)
async def test_more_replicas_than_servers_is_refused_before_anything_is_created(
    nats_server: TestServer, nc: Any, args: list[str], env: dict[str, str]
) -> None:
    r = dsctl(nats_server.url, "admin", "streams", *args, env=env)
    assert r.returncode == 1
    assert "error: --replicas 3 needs a JetStream cluster of at least 3 servers; this one has 1" in r.stderr
    assert await _stream_names(nc) == []


def test_a_bad_replica_count_is_a_clear_error(nats_server: TestServer) -> None:
    r = dsctl(nats_server.url, "admin", "streams", "--replicas", "7")
    assert r.returncode == 2 and "--replicas '7' is not a replica count (1 to 5" in r.stderr
    with pytest.raises(InvalidInput, match="DSCTL_REPLICAS 'three' is not a replica count"):
        replicas_from(argparse.Namespace(), {"DSCTL_REPLICAS": "three"})
    assert replicas_from(argparse.Namespace(replicas=2), {"DSCTL_REPLICAS": "3"}) == 2
    assert replicas_from(argparse.Namespace(), {}) is None


async def test_an_operator_raised_limit_is_kept_across_an_engine_restart(nc: Any) -> None:
    """Limits are the operator's (``engine/store/streams.py``); the event log's are ours."""
    await ensure(nc)
    commands = await _config(nc, COMMANDS_STREAM)
    await api_request(nc, f"STREAM.UPDATE.{COMMANDS_STREAM}", {**commands, "max_age": 172800 * _NS})
    events = await _config(nc, EVENTS_STREAM)
    await api_request(nc, f"STREAM.UPDATE.{EVENTS_STREAM}", {**events, "max_age": 3600 * _NS})
    leases = await _config(nc, "KV_dse_node_leases")
    await api_request(
        nc, "STREAM.UPDATE.KV_dse_node_leases", {**leases, "max_age": 9 * _NS, "duplicate_window": 9 * _NS}
    )

    setup = await ensure(nc)  # the engine's next start-up

    assert (await _config(nc, COMMANDS_STREAM))["max_age"] == 172800 * _NS
    assert (await _config(nc, "KV_dse_node_leases"))["max_age"] == 9 * _NS
    kept = {(d.resource, d.field, d.have) for d in setup.streams.kept}
    assert (COMMANDS_STREAM, "max_age", 172800 * _NS) in kept
    assert ("KV_dse_node_leases", "max_age", 9 * _NS) in kept
    # the event log must never age out: its limit is put back
    assert (await _config(nc, EVENTS_STREAM))["max_age"] == 0
    assert [(d.field, d.fixed) for d in setup.streams.drift] == [("max_age", True)]
    assert setup.streams.updated == [EVENTS_STREAM]


async def test_dry_run_lists_the_differences_and_changes_nothing(nats_server: TestServer, nc: Any) -> None:
    await ensure(nc)
    events = await _config(nc, EVENTS_STREAM)
    await api_request(nc, f"STREAM.UPDATE.{EVENTS_STREAM}", {**events, "duplicate_window": 10 * _NS})
    commands = await _config(nc, COMMANDS_STREAM)
    await api_request(nc, f"STREAM.UPDATE.{COMMANDS_STREAM}", {**commands, "max_bytes": 2 * 1024**3})
    await api_request(nc, f"STREAM.DELETE.{REJECTED_STREAM}")
    before = {name: await _config(nc, name) for name in await _stream_names(nc)}

    r = dsctl(nats_server.url, "admin", "streams", "--dry-run", "--lease-ttl", "3")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "would update stream DSE_EVENTS: duplicate_window 10s → 120s" in lines
    assert "would create stream DSE_REJECTED" in lines
    assert "would update bucket dse_leader (stream KV_dse_leader): max_age 5s → 3s" in lines
    assert (
        "kept stream DSE_COMMANDS: max_bytes 2147483648 (definition 1073741824): a limit is the operator's"
        in lines
    )
    assert "unchanged bucket dse_node_leases (stream KV_dse_node_leases)" in lines
    assert {name: await _config(nc, name) for name in await _stream_names(nc)} == before

    r = dsctl(nats_server.url, "admin", "streams", "--lease-ttl", "3")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "updated stream DSE_EVENTS: duplicate_window 10s → 120s" in lines
    assert "created stream DSE_REJECTED" in lines, r.stdout
    assert lines[-1] == "replicas 1 (at least), leader lease TTL 3s"
    assert (await _config(nc, EVENTS_STREAM))["duplicate_window"] == 120 * _NS
    assert (await _config(nc, "KV_dse_leader"))["max_age"] == 3 * _NS
    assert (await _config(nc, COMMANDS_STREAM))["max_bytes"] == 2 * 1024**3


async def test_the_node_lease_ttl_is_set_by_admin_and_kept_by_later_starts(
    nats_server: TestServer, nc: Any
) -> None:
    await ensure(nc)
    r = dsctl(nats_server.url, "admin", "streams", "--node-lease-ttl", "30")
    assert r.returncode == 0, r.stderr
    assert "updated bucket dse_node_leases (stream KV_dse_node_leases): max_age 5s → 30s" in r.stdout
    await ensure(nc)  # an engine start without the flag keeps what the operator set
    assert (await _config(nc, "KV_dse_node_leases"))["max_age"] == 30 * _NS
    r = dsctl(nats_server.url, "admin", "streams", "--node-lease-ttl", "0")
    assert r.returncode != 0 and "--node-lease-ttl" in r.stderr


async def test_drift_the_server_cannot_fix_is_printed_and_fails(nats_server: TestServer, nc: Any) -> None:
    await ensure(nc)
    rejected = await _config(nc, REJECTED_STREAM)
    await api_request(nc, f"STREAM.DELETE.{REJECTED_STREAM}")
    await api_request(nc, f"STREAM.CREATE.{REJECTED_STREAM}", {**rejected, "storage": "memory"})
    r = dsctl(nats_server.url, "admin", "streams")
    assert r.returncode == 1
    assert (
        "cannot fix stream DSE_REJECTED: storage 'memory' → 'file' refused: the server cannot change "
        "this on an existing stream"
    ) in r.stdout.splitlines()
    assert "error: drift the server cannot fix in place" in r.stderr
