"""Driving dsctl as a user does, for outcome tests: long-running ``dsctl up`` / ``engine run`` /
``executor run`` processes, every other command as its own ``dsctl`` process with ``NATS_URL`` set, and
the world read back from ``dsctl get pods -o json`` (a kubectl-shaped List).

Everything runs from the checkout this file belongs to (``cwd`` and ``PYTHONPATH``), not from whatever
``engine`` the interpreter has installed, so the same tests can be pointed at an older checkout to show
that they catch a bug it has.

Waits are bounded and poll what ``get pods`` shows; a timeout fails with what was wrong last and the
pods as they were, so a failure reads like a user's bug report.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.store.embedded import free_port

ROOT = Path(__file__).resolve().parents[2]
#: seconds one ``dsctl`` command may take (a hung command is a failure, not a hang)
COMMAND_TIMEOUT = 30.0
POLL_SECONDS = 0.1


def cli_env(url: str, credentials: Path | None = None) -> dict[str, str]:
    """The environment of every dsctl process: this checkout's code first, the server in NATS_URL, and
    the credentials a secured ``dsctl up`` made (``DSCTL_CREDENTIALS``) when there are any."""
    env = dict(os.environ, NATS_URL=url)
    if credentials is not None:
        env["DSCTL_CREDENTIALS"] = str(credentials)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    env.pop("DSCTL_LOG_LEVEL", None)
    return env


@dataclass(frozen=True)
class Pod:
    """One item of ``dsctl get pods -o json``, reduced to what the outcome tests look at."""

    namespace: str
    name: str
    node: str
    owner: str  # the owning DaemonSet's name, "" for an orphan
    owner_uid: str
    revision: str  # the controller-revision-hash label
    image: str
    phase: str
    ready: bool
    deleting: bool
    annotations: dict[str, str]

    @classmethod
    def of(cls, item: dict[str, Any]) -> Pod:
        meta = item.get("metadata") or {}
        owners = meta.get("ownerReferences") or []
        owner: dict[str, Any] = next(
            (o for o in owners if o.get("kind") == "DaemonSet" and o.get("controller")), {}
        )
        spec = item.get("spec") or {}
        status = item.get("status") or {}
        containers = spec.get("containers") or [{}]
        conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
        return cls(
            namespace=meta.get("namespace", ""),
            name=meta.get("name", ""),
            node=spec.get("nodeName", ""),
            owner=owner.get("name", ""),
            owner_uid=owner.get("uid", ""),
            revision=(meta.get("labels") or {}).get("controller-revision-hash", ""),
            image=containers[0].get("image", ""),
            phase=status.get("phase", ""),
            ready=conditions.get("Ready") == "True",
            deleting=bool(meta.get("deletionTimestamp")),
            annotations=dict(meta.get("annotations") or {}),
        )

    @property
    def live(self) -> bool:
        """Running and Ready, not on its way out: what "a pod on that node" means to a user."""
        return self.phase == "Running" and self.ready and not self.deleting

    def __str__(self) -> str:
        flags = "ready" if self.ready else "not-ready"
        if self.deleting:
            flags += ",deleting"
        return (
            f"{self.namespace}/{self.name} node={self.node} owner={self.owner or '<none>'} "
            f"rev={self.revision} image={self.image} {self.phase}/{flags}"
        )


def describe(pods: Sequence[Pod]) -> str:
    return "\n    ".join(str(p) for p in sorted(pods, key=lambda p: (p.namespace, p.name))) or "(no pods)"


class Dsctl:
    """The ``dsctl`` command against one NATS URL."""

    def __init__(self, url: str, credentials: Path | None = None) -> None:
        self.url = url
        self.credentials = credentials

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "engine.cli", *args],
            cwd=ROOT, env=cli_env(self.url, self.credentials), input=stdin, capture_output=True, text=True,
            timeout=COMMAND_TIMEOUT,
        )  # fmt: skip

    def ok(self, *args: str, stdin: str | None = None) -> str:
        r = self.run(*args, stdin=stdin)
        assert r.returncode == 0, f"dsctl {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
        return r.stdout

    def pods(self, namespace: str) -> list[Pod]:
        """What ``dsctl get pods -n NAMESPACE -o json`` shows."""
        out = self.ok("get", "pods", "-n", namespace, "-o", "json")
        listing = json.loads(out)
        assert listing.get("kind") == "List", out
        return [Pod.of(item) for item in listing["items"]]

    def ds_exists(self, name: str, namespace: str) -> bool:
        r = self.run("get", "ds", name, "-n", namespace, "-o", "json")
        if r.returncode == 0:
            return True
        assert "not found" in r.stderr, r.stderr
        return False

    def wait_pods(
        self,
        what: str,
        namespace: str,
        check: Callable[[list[Pod]], str | None],
        timeout: float = 20.0,
    ) -> list[Pod]:
        """Poll ``get pods`` until ``check`` (which says what is still wrong, or None) passes."""
        deadline = time.monotonic() + timeout
        while True:
            pods = self.pods(namespace)
            wrong = check(pods)
            if wrong is None:
                return pods
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout:.0f}s waiting for {what}: {wrong}\n"
                    f"  dsctl get pods -n {namespace} shows:\n    {describe(pods)}"
                )
            time.sleep(POLL_SECONDS)

    def wait(self, what: str, check: Callable[[], str | None], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            wrong = check()
            if wrong is None:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}: {wrong}")
            time.sleep(POLL_SECONDS)


# --- what the world should look like ---------------------------------------------------------------


def of_ds(pods: Sequence[Pod], ds: str) -> list[Pod]:
    return [p for p in pods if p.owner == ds]


def one_per_node(
    ds: str,
    nodes: Sequence[str],
    *,
    image: str | None = None,
    revision: str | None = None,
    not_revision: str | None = None,
) -> Callable[[list[Pod]], str | None]:
    """Exactly one live pod of ``ds`` on each of ``nodes``, none elsewhere and nothing else of it
    listed (no pod still terminating); optionally all with this image / revision hash."""

    def check(pods: list[Pod]) -> str | None:
        mine = of_ds(pods, ds)
        by_node: dict[str, list[Pod]] = {}
        for p in mine:
            by_node.setdefault(p.node, []).append(p)
        for node in nodes:
            here = by_node.get(node, [])
            if len(here) != 1:
                return f"{len(here)} pods of {ds} on {node}"
            if not here[0].live:
                return f"{here[0].name} on {node} is not running and ready"
        extra = sorted(set(by_node) - set(nodes))
        if extra:
            return f"pods of {ds} on {extra}, which should have none"
        for p in mine:
            if image is not None and p.image != image:
                return f"{p.name} runs {p.image}, not {image}"
            if revision is not None and p.revision != revision:
                return f"{p.name} is on revision {p.revision}, not {revision}"
            if not_revision is not None and p.revision == not_revision:
                return f"{p.name} is still on revision {p.revision}"
        return None

    return check


def none_of(ds: str) -> Callable[[list[Pod]], str | None]:
    def check(pods: list[Pod]) -> str | None:
        left = of_ds(pods, ds)
        return f"{len(left)} pods of {ds} still listed" if left else None

    return check


def all_of(*checks: Callable[[list[Pod]], str | None]) -> Callable[[list[Pod]], str | None]:
    """Every check passes; says what the first failing one says."""

    def check(pods: list[Pod]) -> str | None:
        return next((wrong for c in checks if (wrong := c(pods)) is not None), None)

    return check


def placement(pods: Sequence[Pod], ds: str) -> dict[str, str]:
    """node -> pod name, for a DaemonSet with one pod per node."""
    return {p.node: p.name for p in of_ds(pods, ds)}


# --- manifests --------------------------------------------------------------------------------------


def nodes_manifest(names: Sequence[str], labels: dict[str, str]) -> str:
    items = "".join(
        f"- apiVersion: v1\n  kind: Node\n  metadata:\n    name: {n}\n    labels: {json.dumps(labels)}\n"
        for n in names
    )
    return f"apiVersion: v1\nkind: List\nitems:\n{items}"


def daemonset(
    name: str,
    namespace: str,
    node_selector: dict[str, str],
    *,
    image: str = "example/agent:1",
    annotations: dict[str, str] | None = None,
    tolerations: Sequence[dict[str, str]] = (),
    pod_spec: dict[str, Any] | None = None,
) -> str:
    """A DaemonSet manifest (JSON is YAML) whose selector is ``app: NAME``."""
    spec: dict[str, Any] = {
        "nodeSelector": node_selector,
        "containers": [{"name": name, "image": image}],
        **(pod_spec or {}),
    }
    if tolerations:
        spec["tolerations"] = list(tolerations)
    return json.dumps(
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}, "annotations": annotations or {}},
                    "spec": spec,
                },
            },
        }
    )


# --- long-running processes ------------------------------------------------------------------------


class Background:
    """A long-running dsctl process (``up``, ``engine run``, ``executor run``) with its output in a file."""

    def __init__(self, args: Sequence[str], url: str, log: Path) -> None:
        self.args = list(args)
        self.log_path = log
        self._log = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", *args],
            cwd=ROOT, env=cli_env(url), stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_output(self, text: str, timeout: float = 20.0) -> None:
        """Until ``text`` appears in the output; fails at once if the process exits first."""
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"dsctl {' '.join(self.args)} exited ({self.proc.returncode}):\n{self.output()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"dsctl {' '.join(self.args)} never printed {text!r}:\n{self.output()}")
            time.sleep(POLL_SECONDS)

    def stop(self, *, kill: bool = False, timeout: float = 20.0) -> int:
        """SIGTERM (a clean stop) or SIGKILL (a crash); returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout)
        self._log.close()
        return self.proc.returncode


class Up(Background):
    """``dsctl up`` with its embedded nats-server on ``port`` and ``store``; ready once commands work."""

    def __init__(self, tmp: Path, *, store: Path | None = None, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.store = store or tmp / "nats"
        super().__init__(
            ["up", "--port", str(self.port), "--store", str(self.store), "--ready-after", "0.05",
             "--lease-ttl", "2", "--log-file", str(tmp / "dsctl.log")],
            self.url, tmp / f"up-{self.port}-{time.monotonic_ns()}.out",
        )  # fmt: skip
        # secure by default: up keeps the credentials it made next to its store
        self.cli = Dsctl(self.url, self.store.parent / "credentials")
        try:
            self.cli.wait("dsctl up to serve", self._serving, timeout=30)
        except BaseException:
            self.stop()
            raise

    def _serving(self) -> str | None:
        if self.proc.poll() is not None:
            raise AssertionError(f"dsctl up exited ({self.proc.returncode}):\n{self.output()}")
        if "ingest service" not in self.output():
            return "not started yet"
        r = self.cli.run("get", "nodes")
        return None if r.returncode == 0 else r.stderr
