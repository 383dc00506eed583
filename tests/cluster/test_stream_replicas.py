"""Start-up never scales a clustered store down: replicas in a definition are a floor (streams.py), on
a real 3-node cluster, where a stream can have more copies than its definition asks for."""

from __future__ import annotations

from typing import Any

import pytest

from engine.reconciler.engine import prepare
from engine.store.embedded_cluster import EmbeddedCluster
from engine.store.jetstream_api import api_request
from engine.store.lease import NODE_LEASE_BUCKET
from engine.store.setup import check
from engine.store.streams import (
    EVENTS_STREAM,
    LEADER_BUCKET,
    REJECTED_STREAM,
    apply_definitions,
    delete_streams,
    load_definitions,
    with_replicas,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(90)]

_NS = 1_000_000_000

# (replicas the stream has, replicas the definition asks for, replicas after the apply, drift reported
# for num_replicas as (want, have, fixed) or None). The rows a single server can hold are in
# tests/shell/test_streams.py.
CLUSTER_REPLICAS = [
    ("more-than-asked-is-kept", 3, 1, 3, None),
    ("more-than-asked-is-kept-r2", 2, 1, 2, None),
    ("zero-asked-keeps-three", 3, 0, 3, None),
    ("same-count-is-unchanged", 3, 3, 3, None),
    ("fewer-than-asked-is-raised", 1, 3, 3, (3, 1, True)),
    ("one-short-is-raised", 2, 3, 3, (3, 2, True)),
]


async def test_replicas_are_a_floor_on_a_cluster(nats_cluster: EmbeddedCluster, cluster_nc: Any) -> None:
    """One cluster for the whole table (a fresh one per row would cost more than the rows); each row
    starts from a freshly created stream or bucket."""
    defs = {d.name: d for d in load_definitions()}
    failures = []
    for resource in (REJECTED_STREAM, f"KV_{LEADER_BUCKET}"):
        d = defs[resource]
        for row, have, want, after, drift in CLUSTER_REPLICAS:
            await delete_streams(cluster_nc, [d])
            await api_request(
                cluster_nc, f"STREAM.CREATE.{resource}", {**d.stream_config(), "num_replicas": have}
            )
            report = await apply_definitions(cluster_nc, with_replicas([d], want), strict=False)
            now = (await api_request(cluster_nc, f"STREAM.INFO.{resource}"))["config"]["num_replicas"]
            found = [(x.want, x.have, x.fixed) for x in report.drift if x.field == "num_replicas"]
            expected = [] if drift is None else [drift]
            if now != after or found != expected or (drift is None) != (report.unchanged == [resource]):
                failures.append(f"{resource} {row}: replicas {now} (want {after}); {report.summary()}")
    assert not failures, "\n".join(failures)


async def test_a_check_repairs_nothing_and_an_engine_restart_keeps_r3(
    nats_cluster: EmbeddedCluster, cluster_nc: Any, r3_streams: Any
) -> None:
    """On a store an engine set up at R3: what an executor does at start-up (``check``) reports a
    drifted field and changes nothing; an engine restarted without ``--replicas`` (``ensure()``)
    keeps every stream, bucket and the object store at 3 copies, repairs the field, and creates a
    missing bucket at the store's 3 copies, not the file's 1."""
    events = next(d for d in r3_streams if d.name == EVENTS_STREAM).stream_config()
    info = await api_request(cluster_nc, f"STREAM.INFO.{EVENTS_STREAM}")
    await api_request(
        cluster_nc, f"STREAM.UPDATE.{EVENTS_STREAM}", {**info["config"], "duplicate_window": 10 * _NS}
    )
    checked = await check(cluster_nc)
    assert [(d.resource, d.field) for d in checked.pending] == [(EVENTS_STREAM, "duplicate_window")]
    config = (await api_request(cluster_nc, f"STREAM.INFO.{EVENTS_STREAM}"))["config"]
    assert config["duplicate_window"] == 10 * _NS

    await delete_streams(cluster_nc, [d for d in r3_streams if d.name == f"KV_{NODE_LEASE_BUCKET}"])
    setup = await prepare(cluster_nc)
    assert setup.replicas == 3 and setup.streams.created == [f"KV_{NODE_LEASE_BUCKET}"]
    for name in [d.name for d in r3_streams] + ["OBJ_dse_snapshots"]:
        config = (await api_request(cluster_nc, f"STREAM.INFO.{name}"))["config"]
        assert config["num_replicas"] == 3, name
    repaired = (await api_request(cluster_nc, f"STREAM.INFO.{EVENTS_STREAM}"))["config"]
    assert repaired["duplicate_window"] == events["duplicate_window"]
    assert [d for d in (await apply_definitions(cluster_nc)).drift if d.field == "num_replicas"] == []
