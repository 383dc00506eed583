"""The gauges the engine exports track what they name."""

from __future__ import annotations

from typing import Any

import pytest

from engine.reconciler.engine import Engine, prepare
from tests.e2e.harness import Cluster, nodes_yaml

pytestmark = pytest.mark.integration

DS = """
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec: {containers: [{name: c, image: example/agent:1}]}
"""


async def test_commands_in_flight_counts_unanswered_commands(nc: Any, streams: Any) -> None:
    c = await Cluster(nc).start(executor=False)  # nobody answers the commands
    try:
        await c.apply(nodes_yaml("n1", "n2", "n3"))
        await c.apply(DS)
        await c.wait("three creates in flight", lambda s: len(s.in_flight) == 3)
        assert c.engine is not None
        await c.wait("the gauge follows", lambda s: c.engine.metrics.commands_in_flight == 3)  # type: ignore[union-attr]
        assert c.engine.metrics.appends >= 1 and c.engine.metrics.append_seconds_sum > 0
    finally:
        await c.stop()


async def test_projection_lag_is_what_the_projection_has_not_folded(nc: Any, streams: Any) -> None:
    await prepare(nc)
    engine = Engine(nc)
    await engine.start()  # loaded, not following
    assert await engine.measure_lag() == 0
    c = Cluster(nc)
    await c.applier.apply(nodes_yaml("n1", "n2", "n3"))
    assert await engine.measure_lag() == 3
    assert engine.metrics.projection_lag == 3
    await engine.store.close()
    await c.store.close()
