"""A real 3-node nats-server cluster per test, a connection to all of it, and the streams at R3.

Always our own cluster, whatever ``NATS_URL`` says: these tests SIGKILL servers, which nobody may do to
an external one. Starting three servers and electing a meta leader takes about half a second, so each
test gets a fresh cluster (stream names are fixed by the log contract; sharing would mean wiping).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.store.embedded_cluster import EmbeddedCluster

#: the leader-lease TTL the R3 streams are prepared with; the same as tests.e2e.harness.Cluster's default,
#: so a Cluster started on them re-applies the definitions without drift
LEASE_TTL = 2.0
REPLICAS = 3


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[EmbeddedCluster]:
    cluster = EmbeddedCluster(3, base_dir=tmp_path / "cluster", ready_timeout=30, stop_timeout=5)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
async def cluster_nc(nats_cluster: EmbeddedCluster) -> AsyncIterator[Any]:
    """Connected to all three URLs, reconnecting fast: a killed server's clients move to another."""
    from engine.store.connection import close, connect
    from engine.store.settings import NatsSettings

    client = await connect(
        NatsSettings(
            servers=nats_cluster.urls,
            name="dsctl-cluster-tests",
            connect_timeout=1.0,
            reconnect_wait=0.1,
            connect_deadline=10,
        )
    )
    try:
        yield client
    finally:
        await close(client)


@pytest.fixture
async def r3_streams(nats_cluster: EmbeddedCluster, cluster_nc: Any) -> AsyncIterator[Any]:
    """Every stream and bucket created with 3 replicas, and each with a leader whose peers are current
    (a stream answers its first request only once its own Raft group has elected). Yields the
    definitions that were applied (read from the server: a definition file added while the test
    starts is not half-counted)."""
    from engine.reconciler.engine import prepare
    from engine.store.jetstream_api import api_request
    from engine.store.streams import load_definitions

    await prepare(cluster_nc, lease_ttl=LEASE_TTL, replicas=REPLICAS)
    names = set((await api_request(cluster_nc, "STREAM.NAMES", {}))["streams"] or ())
    await asyncio.gather(
        *(nats_cluster.wait_for_stream_leader(n, timeout=20, all_current=True, nc=cluster_nc) for n in names)
    )
    yield [d for d in load_definitions() if d.name in names]
