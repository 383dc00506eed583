"""A real node: ``dsctl executor run --node NAME --driver process`` as its own process, running the
DaemonSet's container command as a local process. (Restarts, re-attachment and the node lease:
``test_executor_restart.py``.)"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import Cluster, nodes_yaml, running_nodes

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]

DS = """
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: echo}
spec:
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: echo
        image: local
        command: ["sh", "-c"]
        args: ["echo started on $NODE_TAG; sleep 60"]
        env: [{name: NODE_TAG, value: node-one}]
"""


@pytest.fixture
async def cluster(nc: Any, streams: Any) -> AsyncIterator[Cluster]:
    c = await Cluster(nc).start(executor=False)
    try:
        yield c
    finally:
        await c.stop()


async def test_a_process_executor_runs_and_stops_the_pod(
    cluster: Cluster, nats_server: Any, tmp_path: Path
) -> None:
    """With ``--stop-pods-on-exit`` nothing is left running after the executor stops."""
    logs = tmp_path / "pods"
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "executor", "run", "--node", "node1", "--driver", "process",
         "--pod-logs", str(logs), "--state-dir", str(tmp_path / "state"), "--stop-pods-on-exit",
         "--nats", nats_server.url],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ),
    )  # fmt: skip
    try:
        await cluster.apply(nodes_yaml("node1"))
        await cluster.apply(DS)
        await cluster.wait("the pod is ready", lambda s: running_nodes(s, "echo") == ["node1"], timeout=30)
        pod = next(p for p in cluster.state.pods.values() if p.owner_name == "echo")
        log = logs / f"default_{pod.name}.log"
        await cluster.wait("its output", lambda s: log.exists() and "started on node-one" in log.read_text())
        await cluster.delete_pod(pod.name)
        replaced = lambda s: pod.key not in s.pods and running_nodes(s, "echo") == ["node1"]  # noqa: E731
        await cluster.wait("a replacement", replaced, timeout=30)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert proc.returncode == 0
    leftover = subprocess.run(["pgrep", "-f", "started on $NODE_TAG"], capture_output=True, text=True)
    assert leftover.stdout.strip() == "", "the executor left pod processes running"
