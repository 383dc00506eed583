"""``--replicas`` end to end on a real 3-node cluster: ``dsctl engine run --replicas 3`` puts every
stream, bucket and the snapshot object store at 3 copies, and a count above the cluster's size is
refused with the size in the message, before anything is created."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from engine.store.embedded_cluster import EmbeddedCluster
from engine.store.jetstream_api import api_request
from engine.store.setup import all_definitions, ensure
from engine.store.streams import ReplicasUnavailable
from tests.cli.test_admin import Background

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(120)]
ROOT = Path(__file__).resolve().parents[2]


async def _replicas(nc: Any) -> dict[str, int]:
    names = (await api_request(nc, "STREAM.NAMES", {}))["streams"] or []
    return {n: (await api_request(nc, f"STREAM.INFO.{n}"))["config"]["num_replicas"] for n in names}


async def test_engine_run_with_replicas_3_gives_r3_everywhere(
    nats_cluster: EmbeddedCluster, cluster_nc: Any, tmp_path: Path
) -> None:
    engine = Background(nats_cluster.url, tmp_path / "engine.out", "engine", "run", "--replicas", "3")
    try:
        engine.wait_for("lease.acquired", timeout=60)
    finally:
        engine.stop()
    expected = {d.name: 3 for d in all_definitions()}
    assert await _replicas(cluster_nc) == expected
    assert "OBJ_dse_snapshots" in expected


async def test_more_replicas_than_the_cluster_has_is_refused(
    nats_cluster: EmbeddedCluster, cluster_nc: Any
) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "engine.cli", "admin", "streams", "--replicas", "5",
         "--nats", nats_cluster.url],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 1
    # a cluster gets a grace to finish forming (its servers may not all know each other yet), then
    # the refusal names the size it reported and the server's own refusal
    assert "error: --replicas 5 needs a JetStream cluster of at least 5 servers; this one has 3" in r.stderr
    assert "no suitable peers for placement" in r.stderr
    assert await _replicas(cluster_nc) == {}
    with pytest.raises(ReplicasUnavailable, match="at least 4 servers; this one has 3"):
        await ensure(cluster_nc, replicas=4, placement_grace=1.0)
    # R2 fits: and a later R3 raises every copy count, never lowers one
    await ensure(cluster_nc, replicas=2)
    assert set((await _replicas(cluster_nc)).values()) == {2}
    await ensure(cluster_nc, replicas=3)
    await ensure(cluster_nc, replicas=1)
    assert set((await _replicas(cluster_nc)).values()) == {3}
