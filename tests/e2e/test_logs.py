"""``dsctl logs POD [-f] [--tail N]`` as a user runs it, against ``dsctl up --demo`` (secure by default:
every command finds the credentials up made): the simulated fleet's lifecycle lines, and a real node
whose executor runs the process driver, showing the pod's own output (``--tail``, ``-f`` receiving a
line written after it started, the follow ending when the pod goes, and the error once no executor
serves the node). The reading itself is in engine/executor/pod_logs.py; the roles' side is in
tests/security/test_logs_permissions.py. The pure pieces (tail of a file, the simulated log's bounds)
are at the end."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.cli import logs as cli_logs
from engine.executor import pod_logs
from engine.executor.drivers.log_files import read_from, tail_offset
from engine.executor.drivers.process import ProcessDriver
from engine.executor.drivers.sim_log import MAX_LINES, PodLines
from engine.executor.run import run_executor
from events.subjects import logs_reply
from tests.cli.test_cli import ROOT, Up, converged, dsctl, ok, wait_for
from tests.e2e.harness import Cluster, nodes_yaml, running_nodes

STAMPED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (.+)$")

ECHOER = """
apiVersion: v1
kind: Node
metadata:
  name: proc1
  labels: {{logs-test: "yes"}}
spec:
  taints: [{{key: logs-test, value: "yes", effect: NoSchedule}}]
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: echoer}}
spec:
  selector: {{matchLabels: {{app: echoer}}}}
  template:
    metadata: {{labels: {{app: echoer}}}}
    spec:
      nodeSelector: {{logs-test: "yes"}}
      tolerations: [{{key: logs-test, operator: Exists, effect: NoSchedule}}]
      terminationGracePeriodSeconds: 2
      containers:
      - name: echoer
        image: local
        command: ["sh", "-c"]
        args:
        - 'echo one; echo two; echo three;
          while [ ! -e "$GO" ]; do sleep 0.1; done; echo after-follow; sleep 600'
        env: [{{name: GO, value: "{go}"}}]
"""


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    server = Up(tmp_path_factory.mktemp("logs-up"))
    try:
        wait_for("fluentd to converge", lambda: converged(server, "fluentd"), timeout=90)
        yield server
    finally:
        server.stop()


def _pods(up: Up, **match: str) -> list[dict[str, Any]]:
    r = dsctl(up, "get", "pods", "-A", "-o", "json")
    if r.returncode != 0:
        return []
    items: list[dict[str, Any]] = json.loads(r.stdout)["items"]
    out = []
    for pod in items:
        facts = {
            "ds": pod["metadata"]["ownerReferences"][0]["name"],
            "node": pod["spec"].get("nodeName", ""),
            "phase": (pod.get("status") or {}).get("phase", ""),
            "name": pod["metadata"]["name"],
        }
        if all(facts[k] == v for k, v in match.items()):
            out.append(facts)
    return out


def _messages(text: str) -> list[str]:
    """The lines' text after their timestamps (every simulated line has one)."""
    out = []
    for line in text.splitlines():
        m = STAMPED.match(line)
        assert m, f"a line without its time: {line!r}"
        out.append(m[1])
    return out


class Follower:
    """``dsctl logs -f`` in the background, its output collected line by line."""

    def __init__(self, up: Up, *args: str) -> None:
        env = dict(os.environ, NATS_URL=up.url, DSCTL_CREDENTIALS=str(up.credentials))
        env.pop("DSCTL_LOG_LEVEL", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "logs", "-f", *args],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait(self, timeout: float = 60) -> tuple[int, str]:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        assert self.proc.stderr is not None
        return code, self.proc.stderr.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.mark.integration
@pytest.mark.slow
def test_a_simulated_pods_lifecycle_lines(up: Up) -> None:
    pod = wait_for("a fluentd pod on node2", lambda: _pods(up, ds="fluentd", node="node2", phase="Running"))[
        0
    ]
    name = pod["name"]
    assert _messages(ok(up, "logs", name)) == ["created", "started", "ready"]
    assert _messages(ok(up, "logs", name, "--tail", "1")) == ["ready"]
    assert ok(up, "logs", name, "--tail", "0") == ""
    # the auditor's role may read logs as well
    r = dsctl(up, "logs", name, "--role", "auditor")
    assert r.returncode == 0, r.stderr
    assert _messages(r.stdout) == ["created", "started", "ready"]

    missing = dsctl(up, "logs", "no-such-pod")
    assert missing.returncode != 0
    assert missing.stderr.strip() == 'error: pods "no-such-pod" not found in namespace default', (
        missing.stderr
    )
    bad = dsctl(up, "logs", name, "--tail", "-5")
    assert bad.returncode != 0 and "--tail" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1

    # -f: the lines so far, then what happens while it follows, and it ends when the pod is gone
    follower = Follower(up, name)
    try:
        wait_for("the follower to print the lines so far", lambda: len(follower.lines) >= 3)
        ok(up, "delete", "pod", name)
        code, err = follower.wait()
    finally:
        follower.stop()
    assert code == 0, err
    assert _messages("\n".join(follower.lines)) == [
        "created",
        "started",
        "ready",
        "stopping (grace 30s)",
        "stopped",
    ]


@pytest.mark.integration
@pytest.mark.slow
def test_a_process_pods_own_output_tail_and_follow(up: Up, tmp_path: Path) -> None:
    go = tmp_path / "go"
    # a node of its own for a real executor: its credentials (the server reloads them), then the executor
    ok(up, "admin", "credentials", "executor", "--node", "proc1")
    env = dict(os.environ, NATS_URL=up.url, DSCTL_CREDENTIALS=str(up.credentials))
    executor = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "executor", "run", "--node", "proc1", "--driver", "process",
         "--pod-logs", str(tmp_path / "pods"), "--state-dir", str(tmp_path / "state"), "--stop-pods-on-exit"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=(tmp_path / "executor.log").open("w"),
    )  # fmt: skip
    follower: Follower | None = None
    try:
        # serving: by then the fleet has seen proc1's lease and leaves the node alone (no simulated pod)
        wait_for(
            "proc1's executor", lambda: "executor.started" in (tmp_path / "executor.log").read_text(), 60
        )
        manifest = tmp_path / "echoer.yaml"
        manifest.write_text(ECHOER.format(go=go))
        ok(up, "apply", "-f", str(manifest))
        pod = wait_for("the echoer pod running on proc1", lambda: _pods(up, ds="echoer", phase="Running"), 60)
        name = pod[0]["name"]
        assert pod[0]["node"] == "proc1"
        wait_for("its output", lambda: dsctl(up, "logs", name).stdout == "one\ntwo\nthree\n")
        assert ok(up, "logs", name, "--tail", "2") == "two\nthree\n"

        follower = following = Follower(up, name, "--tail", "1")
        wait_for("the follower to print the last line", lambda: following.lines == ["three"])
        go.touch()  # the pod writes its next line only now
        wait_for("the line written while following", lambda: "after-follow" in following.lines)
        ok(up, "delete", "pod", name)  # the follow ends with the pod
        code, err = following.wait()
        assert code == 0, err
        assert following.lines == ["three", "after-follow"]

        # the node's executor stops: its pods' logs have nobody to serve them (the fleet leaves the node
        # alone once it has seen an executor of its own), and the CLI says so instead of waiting forever
        executor.terminate()
        executor.wait(timeout=30)
        left = wait_for("a pod of echoer still on proc1", lambda: _pods(up, ds="echoer", node="proc1"), 60)
        r = dsctl(up, "logs", left[0]["name"])
        assert r.returncode != 0
        assert r.stderr.startswith("error: no executor answers for node proc1: "), r.stderr
    finally:
        if follower is not None:
            follower.stop()
        if executor.poll() is None:
            executor.terminate()
            executor.wait(timeout=30)


BIG = """
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: big}
spec:
  selector: {matchLabels: {app: big}}
  template:
    metadata: {labels: {app: big}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - {name: big, image: local, command: ["sh", "-c"], args: ["seq 1 200000; sleep 600"]}
"""


@pytest.mark.integration
async def test_a_large_log_comes_in_bounded_parts_over_several_answers(
    nc: Any, streams: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1.3 MB of output, read with at most 4 parts per answer: several answers, each part far under the
    server's max_payload, every line once and in order."""
    monkeypatch.setattr(pod_logs, "MAX_PARTS", 4)
    cluster = await Cluster(nc).start(executor=False)
    ready = asyncio.Event()
    driver = ProcessDriver(tmp_path / "pods", tmp_path / "state")
    executor = asyncio.ensure_future(
        run_executor(nc, driver, node="big1", ready=ready, stop_pods_on_exit=True, lease_wait=0)
    )
    parts: list[int] = []
    asked: set[str] = set()

    async def count(msg: Any) -> None:
        parts.append(len(msg.data))
        asked.add(pod_logs.decode_part(msg.data).request)

    watch = await nc.subscribe(logs_reply("big1"), cb=count)
    try:
        await asyncio.wait_for(ready.wait(), timeout=30)
        await cluster.apply(nodes_yaml("big1"))
        await cluster.apply(BIG)
        await cluster.wait("the pod running", lambda s: running_nodes(s, "big") == ["big1"], timeout=30)
        pod = next(p for p in cluster.state.pods.values() if p.owner_name == "big")
        path = driver.log_path("default", pod.name)
        await cluster.wait(
            "its output", lambda s: path.exists() and path.read_bytes().endswith(b"\n200000\n")
        )
        out = io.StringIO()
        assert await cli_logs.logs(nc, pod.name, "default", follow=False, tail=-1, out=out) == 0
        assert out.getvalue() == "".join(f"{i}\n" for i in range(1, 200001))
        assert len(asked) >= 3, asked  # 1.3 MB at 4 parts of at most 128 KiB per answer
        # JSON writes a newline in two characters, a control byte in six: a part stays under max_payload
        assert max(parts) <= 6 * pod_logs.part_bytes(nc.max_payload) + 512 < nc.max_payload
        tail = io.StringIO()
        assert await cli_logs.logs(nc, pod.name, "default", follow=False, tail=3, out=tail) == 0
        assert tail.getvalue() == "199998\n199999\n200000\n"
    finally:
        await watch.unsubscribe()
        executor.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await executor
        await cluster.stop()


# --- the pure pieces -----------------------------------------------------------------------------


def test_a_files_tail_counts_lines_from_its_end(tmp_path: Path) -> None:
    path = tmp_path / "pod.log"
    body = b"".join(b"line %d\n" % i for i in range(20000))  # larger than one block read backwards
    path.write_bytes(body)
    with path.open("rb") as f:
        f.seek(tail_offset(f, len(body), 2))
        assert f.read() == b"line 19998\nline 19999\n"
        assert tail_offset(f, len(body), 0) == len(body)
        assert tail_offset(f, len(body), 10**6) == 0
    whole = read_from(path, cursor=None, tail=3, limit=1 << 20, partial=False)
    assert whole is not None and whole.text == "line 19997\nline 19998\nline 19999\n" and not whole.more


def test_a_file_read_in_parts_never_splits_a_line_or_a_character(tmp_path: Path) -> None:
    path = tmp_path / "pod.log"
    path.write_bytes("ünïcödé\n".encode() * 100 + b"unfinished")
    got, cursor = io.StringIO(), None
    while True:
        read = read_from(path, cursor=cursor, tail=-1, limit=50, partial=False)
        assert read is not None
        got.write(read.text)
        cursor = read.cursor
        assert read.text == "" or read.text.endswith("\n")
        if not read.more:
            break
    assert got.getvalue() == "ünïcödé\n" * 100  # the unfinished line waits for its end
    rest = read_from(path, cursor=cursor, tail=-1, limit=50, partial=True)
    assert rest is not None and rest.text == "unfinished"
    long_line = tmp_path / "long.log"
    long_line.write_bytes("é".encode() * 100)
    part = read_from(long_line, cursor=None, tail=-1, limit=51, partial=False)
    assert part is not None and part.text == "é" * 25 and part.more  # cut before a half character
    assert read_from(tmp_path / "absent.log", cursor=None, tail=-1, limit=50, partial=True) is None


def test_a_simulated_log_is_bounded_and_its_cursor_never_shifts() -> None:
    lines = PodLines()
    for i in range(MAX_LINES + 5):
        lines.add(f"l{i}")
    assert lines.dropped == 5 and len(lines.lines) == MAX_LINES
    first = lines.read(None, -1, 1 << 20)
    assert first.text.splitlines()[0] == "l5" and first.cursor == MAX_LINES + 5
    lines.add("new")
    assert lines.read(first.cursor, -1, 1 << 20).text == "new\n"
    assert lines.read(0, -1, 1 << 20).text.splitlines()[0] == "l6"  # a cursor before the kept lines
    assert lines.read(None, 2, 1 << 20).text == f"l{MAX_LINES + 4}\nnew\n"
