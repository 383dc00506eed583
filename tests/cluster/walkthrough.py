"""README's walk-through ("A walk through it"), run as a user runs it against one deployment, with what
every command gave reduced to its outcome, so two deployments can be compared.

A deployment is either one box (``dsctl up --demo``, what ``ops/up`` execs, on a free port in a
temporary directory) or the real ``ops/cluster up --demo`` (three servers, two engines, a fleet
executor, ingest; free ports, its own directory). Every command is run as its own process with
``--nats URL``, from a working directory holding ``my-daemonset.yaml`` (the one box is started from it
too, as README starts ``ops/up`` where the commands are then run), with whatever else ``up`` printed for
the user to ``export`` (say, where it keeps credentials).

Placeholders made real: ``my-daemonset.yaml`` is ``MY_DAEMONSET`` (a nodeSelector ``gpu=true``
DaemonSet, which the two ``label`` lines then place and remove); ``fluentd-xxxxx`` is the fluentd pod
``dsctl get pods -o json`` shows at that point; ``default/myweb-ds`` is seeded by ``ops/demo/002``;
``get pods -w`` runs until it has printed its table, then is stopped.

Between steps the walk waits as a user would: it polls ``dsctl get ds -A -o json`` and ``dsctl get pods
-A -o json`` until every DaemonSet has the number of desired nodes that step must lead to and is
converged (observed generation, desired = current = ready = up-to-date = available, nothing
misscheduled, one Running and Ready pod per desired node, none terminating), bounded. The expected
desired counts matter: a DaemonSet's status is the one its last decision recorded, so right after a
``label`` it still shows the old, converged status until the engine has decided.

Outcomes are normalised, never compared as raw text: ages are dropped, timestamps, sequence numbers,
command ids and uids are replaced by placeholders, the engine's identity (``leader vm-1234`` on one box,
``leader engine-1`` on the cluster) by ``<engine>``, and every pod name by a canonical one,
``<daemonset>@<node>#<k>`` (the k-th pod of that DaemonSet on that node, in log order), read from the
``create_pod`` commands the decisions in the log carry. What else legitimately differs between two
deployments is said where it is handled (``rollout restart``'s template hash, the demo's event source,
``--at 20``, the audit's interleaving and its status-only decisions, ``replay verify``'s decision count).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import selectors
import shlex
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from engine.cli.cluster.layout import ROOT
from engine.cli.cluster.processes import PidRecord, Workspace, alive, start_time
from engine.store.embedded import free_port

DSCTL = Path(sys.executable).parent / "dsctl"
CLUSTER = ROOT / "ops" / "cluster"
README = ROOT / "README.md"

#: the ``sh`` block under "A walk through it", comments stripped (``readme_walkthrough`` reads it back)
WALK = (
    "dsctl get ds -A",
    "dsctl get pods -o wide",
    "dsctl apply -f my-daemonset.yaml",
    "dsctl label nodes node2 gpu=true",
    "dsctl label nodes node2 gpu=false --overwrite",
    "dsctl taint nodes node3 dedicated=x:NoExecute",
    "dsctl cordon node3",
    "dsctl rollout restart ds/fluentd",
    "dsctl rollout status ds/fluentd --timeout 60s",
    "dsctl rollout history ds/fluentd",
    "dsctl rollout undo ds/fluentd",
    "dsctl describe ds fluentd",
    "dsctl explain pod fluentd-xxxxx",
    "dsctl explain node node1 --ds default/myweb-ds",
    "dsctl audit --node node2 --since 10m",
    "dsctl get ds -A --at 20",
    "dsctl replay verify",
    "dsctl get pods -w",
)

MY_DAEMONSET = """\
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: gpu-agent
spec:
  selector:
    matchLabels: {app: gpu-agent}
  template:
    metadata:
      labels: {app: gpu-agent}
    spec:
      nodeSelector: {gpu: "true"}
      containers:
      - name: agent
        image: example/gpu-agent:1
"""

Key = tuple[str, str]
FLUENTD: Key = ("default", "fluentd")
MYWEB: Key = ("default", "myweb-ds")
ELASTIC: Key = ("kube-system", "fluentd-elasticsearch")
LABELS_DEMO: Key = ("labels-demo", "myweb-ds")
GPU: Key = ("default", "gpu-agent")

#: desired nodes per DaemonSet once the demo has converged: node1 is tainted master:NoSchedule, which
#: only fluentd-elasticsearch tolerates
DEMO_DESIRED: dict[Key, int] = {FLUENTD: 2, MYWEB: 2, ELASTIC: 3, LABELS_DEMO: 2}
_TAINTED = {**DEMO_DESIRED, GPU: 0, FLUENTD: 1, MYWEB: 1, ELASTIC: 2, LABELS_DEMO: 1}
#: what each mutating step must lead to (node3's NoExecute taint is tolerated by no DaemonSet)
SETTLES_TO: dict[str, dict[Key, int]] = {
    "dsctl apply -f my-daemonset.yaml": {**DEMO_DESIRED, GPU: 0},
    "dsctl label nodes node2 gpu=true": {**DEMO_DESIRED, GPU: 1},
    "dsctl label nodes node2 gpu=false --overwrite": {**DEMO_DESIRED, GPU: 0},
    "dsctl taint nodes node3 dedicated=x:NoExecute": _TAINTED,
    "dsctl cordon node3": _TAINTED,  # DaemonSet pods ignore cordons
    "dsctl rollout status ds/fluentd --timeout 60s": _TAINTED,
    "dsctl rollout undo ds/fluentd": _TAINTED,
}
#: the walk's own changes, in log order, as the event types they append (for the ``--at`` points)
WALK_EVENTS = (
    ("daemonset.applied", "apply gpu-agent"),
    ("node.labels_changed", "label node2 gpu=true"),
    ("node.labels_changed", "label node2 gpu=false"),
    ("node.taints_changed", "taint node3"),
    ("node.cordoned", "cordon node3"),
    ("daemonset.applied", "rollout restart fluentd"),
    ("daemonset.applied", "rollout undo fluentd"),
)
UNDO_STATUS = "dsctl rollout status ds/fluentd --timeout 60s"
SETTLE_TIMEOUT = 30.0


def step_ids() -> list[str]:
    """Every outcome ``walk`` records, in the order it records them."""
    ids = ["demo settled"]
    for line in WALK:
        ids.append(line)
        if line == "dsctl rollout undo ds/fluentd":
            # not in README: the user waits for the undo before describing it
            ids += [f"(wait) {UNDO_STATUS}", "(after undo) dsctl rollout history ds/fluentd"]
        if line in SETTLES_TO:
            ids.append(f"settled after: {line}")
    ids += [f"dsctl get ds -A --at <seq of: {label}>" for _, label in WALK_EVENTS]
    return ids


def readme_walkthrough() -> list[str]:
    """The commands of README's walk-through block, comments and continuation comments dropped."""
    text = README.read_text()
    section = text.split("## A walk through it", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    block = next(b for b in blocks if b.lstrip().startswith("dsctl "))
    commands = []
    for line in block.splitlines():
        command = line.split("#", 1)[0].strip()
        if command:
            commands.append(" ".join(command.split()))
    return commands


# --- deployments -----------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    """The environment without a developer's own pointers at a server, its credentials or log level."""
    env = dict(os.environ)
    for name in ("NATS_URL", "DSCTL_LOG_LEVEL", "DSCTL_REPLICAS", "DSCTL_CREDENTIALS"):
        env.pop(name, None)
    return env


def _exports(text: str) -> dict[str, str]:
    """The ``export NAME=VALUE`` lines ``up`` prints for the user to paste (the server URL is passed
    with ``--nats`` instead, as README's commands do)."""
    found = dict(re.findall(r"\bexport ([A-Z_][A-Z0-9_]*)=(\S+)", text))
    found.pop("NATS_URL", None)
    return found


@dataclass
class Deployment:
    name: str
    url: str
    cwd: Path
    #: what ``up`` told the user to export (besides NATS_URL), e.g. where its credentials are
    exports: dict[str, str] = field(default_factory=dict)
    #: the last failing ``json`` command and what it said (for a failure message)
    last_error: str = ""

    def environ(self) -> dict[str, str]:
        return {**_env(), **self.exports}

    def argv(self, line: str) -> list[str]:
        words = shlex.split(line)
        assert words[0] == "dsctl", line
        return [str(DSCTL), *words[1:], "--nats", self.url]

    def run(self, line: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(line), cwd=self.cwd, env=self.environ(), capture_output=True, text=True,
            timeout=timeout, check=False,
        )  # fmt: skip

    def json(self, line: str) -> Any:
        out = self.run(line)
        if out.returncode != 0:
            self.last_error = f"{line}: exit {out.returncode}: {out.stderr.strip()}"
            return None
        return json.loads(out.stdout)


def _prepare_cwd(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "my-daemonset.yaml").write_text(MY_DAEMONSET)
    return path


def _children(pid: int) -> list[PidRecord]:
    """The direct children of ``pid`` with their start times (the embedded nats-server of ``up``)."""
    out = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                start = start_time(int(child))
                if start is not None:
                    out.append(PidRecord(pid=int(child), start=start, argv=[]))
    return out


@contextlib.contextmanager
def single_box(tmp: Path) -> Iterator[Deployment]:
    """``dsctl up --demo`` (what ``ops/up`` execs) on a free port, run as README runs it: from the
    directory the commands are then run from, so what it keeps under ``.dsctl/`` (store, log, whatever
    else it puts there for the CLI) is where the CLI looks by default. On the way out Ctrl-C, then
    SIGKILL whatever of it (itself, its embedded server) is left."""
    cwd = _prepare_cwd(tmp / "cwd")
    port = free_port()
    printed = tmp / "up.out"
    with printed.open("wb") as log:
        proc = subprocess.Popen(
            [str(DSCTL), "up", "--demo", "--port", str(port)],
            cwd=cwd, env=_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    seen: list[PidRecord] = []
    try:
        box = Deployment("one box (dsctl up --demo)", f"nats://127.0.0.1:{port}", cwd)
        deadline = time.monotonic() + 60
        while True:
            box.exports = _exports(printed.read_text())
            got = _settled(box, DEMO_DESIRED)
            if got[0] or time.monotonic() > deadline:
                break
            assert proc.poll() is None, f"dsctl up exited:\n{printed.read_text()}"
            time.sleep(0.3)
        seen += _children(proc.pid)
        assert got[0], (
            f"the single box's demo did not converge: {got[1]}\n"
            f"dsctl up printed:\n{printed.read_text()[-3000:]}"
        )
        yield box
    finally:
        seen += _children(proc.pid)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for rec in seen:
            if alive(rec):
                os.kill(rec.pid, signal.SIGKILL)


def _records(ws: Workspace) -> dict[str, PidRecord]:
    out = {}
    for path in sorted(ws.run.glob("*.pid")) if ws.run.exists() else []:
        with contextlib.suppress(OSError, msgspec.DecodeError):
            out[path.stem] = msgspec.json.decode(path.read_bytes(), type=PidRecord)
    return out


@contextlib.contextmanager
def ops_cluster(tmp: Path) -> Iterator[Deployment]:
    """The real ``ops/cluster up --demo`` on free ports in ``tmp``; on the way out ``ops/cluster down``,
    then SIGKILL every process it started that is still alive (as tests/cluster/test_ops_cluster.py)."""
    cwd = _prepare_cwd(tmp / "cwd")
    base = tmp / "cluster"
    env = {**_env(), "DSCTL_CLUSTER_DIR": str(base), "DSCTL_CLUSTER_PORTS": "auto"}
    ws = Workspace(base)
    seen: dict[str, PidRecord] = {}

    def script(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(CLUSTER), *args], env=env, cwd=ROOT, capture_output=True, text=True,
            timeout=timeout, check=False,
        )  # fmt: skip

    try:
        try:
            up = script("up", "--demo", timeout=120)
        finally:
            seen.update(_records(ws))
        assert up.returncode == 0, up.stdout + up.stderr
        url = next(
            line.split("=", 1)[1] for line in up.stdout.splitlines() if line.startswith("export NATS_URL=")
        )
        assert len(url.split(",")) == 3, url
        cluster = Deployment("ops/cluster up --demo", url, cwd, exports=_exports(up.stdout))
        got = _wait_settled(cluster, DEMO_DESIRED, 60)
        assert got[0], f"the cluster's demo did not converge: {got[1]}"
        yield cluster
    finally:
        seen.update(_records(ws))
        try:
            script("down", timeout=60)
        finally:
            for rec in seen.values():
                if alive(rec):
                    os.kill(rec.pid, signal.SIGKILL)


# --- waiting ---------------------------------------------------------------------------------------


def _owner(pod: dict[str, Any]) -> str:
    refs = pod["metadata"].get("ownerReferences") or [{}]
    return str(refs[0].get("name", ""))


def _settled(dep: Deployment, desired: dict[Key, int], with_nodes: bool = False) -> tuple[bool, Any]:
    """(True, snapshot) once the deployment shows ``desired`` converged, else (False, why not); the
    nodes too ``with_nodes`` (at the start and the end of the walk: every process is CPU time)."""
    listing = dep.json("dsctl get ds -A -o json")
    if listing is None:
        return False, dep.last_error
    daemonsets = {(d["metadata"]["namespace"], d["metadata"]["name"]): d for d in listing["items"]}
    if set(daemonsets) != set(desired):
        return False, f"daemonsets {sorted(daemonsets)}"
    for key, ds in daemonsets.items():
        st = ds.get("status") or {}
        # the API server omits updatedNumberScheduled and numberAvailable at 0 (docs/output.md)
        counts = [st.get(k, 0) for k in ("currentNumberScheduled", "numberReady", "updatedNumberScheduled",
                                          "numberAvailable")]  # fmt: skip
        if (
            st.get("observedGeneration") != ds["metadata"]["generation"]
            or st.get("desiredNumberScheduled") != desired[key]
            or counts != [desired[key]] * 4
            or st.get("numberMisscheduled") != 0
        ):
            return False, f"{key}: status {st}"
    pods = dep.json("dsctl get pods -A -o json")
    if pods is None:
        return False, dep.last_error
    per_ds: dict[Key, list[str]] = defaultdict(list)
    for pod in pods["items"]:
        meta = pod["metadata"]
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"]["conditions"])
        if "deletionTimestamp" in meta or pod["status"]["phase"] != "Running" or not ready:
            return False, f"pod {meta['namespace']}/{meta['name']} not settled: {pod['status']}"
        per_ds[(meta["namespace"], _owner(pod))].append(pod["spec"]["nodeName"])
    for key, want in desired.items():
        on = per_ds.get(key, [])
        if len(on) != want or len(set(on)) != want:
            return False, f"{key}: pods on {on}"
    nodes = dep.json("dsctl get nodes -o json") if with_nodes else {"items": []}
    if nodes is None:
        return False, dep.last_error
    snapshot: dict[str, Any] = {
        "daemonsets": sorted(
            [
                k[0],
                k[1],
                d["metadata"]["generation"],
                d["status"]["observedGeneration"],
                d["status"]["desiredNumberScheduled"],
                d["status"]["numberReady"],
            ]
            for k, d in daemonsets.items()
        ),
        # pod placement per node: which pod (canonical name, so: which incarnation) of which revision
        "pods": sorted(
            [
                p["metadata"]["namespace"],
                _owner(p),
                p["spec"]["nodeName"],
                p["metadata"]["name"],
                p["metadata"]["labels"].get("controller-revision-hash", ""),
            ]
            for p in pods["items"]
        ),
        "nodes": sorted(
            [
                n["metadata"]["name"],
                n["metadata"].get("labels", {}),
                n["spec"].get("taints", []),
                bool(n["spec"].get("unschedulable")),
            ]
            for n in nodes["items"]
        ),
    }
    if not with_nodes:
        del snapshot["nodes"]
    return True, snapshot


def _wait_settled(
    dep: Deployment, desired: dict[Key, int], timeout: float, with_nodes: bool = False
) -> tuple[bool, Any]:
    deadline = time.monotonic() + timeout
    while True:
        got = _settled(dep, desired, with_nodes)
        if got[0] or time.monotonic() > deadline:
            return got
        time.sleep(0.25)


# --- outcomes --------------------------------------------------------------------------------------


def _result(out: subprocess.CompletedProcess[str], stdout: Any = None) -> dict[str, Any]:
    """A command's outcome: exit code, its stdout (or what was parsed from it) and its stderr."""
    return {"rc": out.returncode, "stdout": out.stdout if stdout is None else stdout, "stderr": out.stderr}


def _table(text: str, drop: Callable[[list[str]], list[str]]) -> list[list[str]]:
    """Rows of a whitespace-aligned table (header kept as its raw words), each passed through ``drop``
    (which removes the timing-dependent columns, such as AGE)."""
    lines = text.splitlines()
    if not lines:
        return []
    return [lines[0].split(), *(drop(line.split()) for line in lines[1:] if line.strip())]


def _history(text: str) -> list[list[str]]:
    # "daemonset.apps/fluentd", then the REVISION CHANGE-CAUSE table
    lines = text.splitlines()
    return [lines[0].split(), *_table("\n".join(lines[1:]), lambda row: row)] if lines else []


def _no_age_last(row: list[str]) -> list[str]:
    return row[:-1]


def _pods_wide_row(row: list[str]) -> list[str]:
    # NAME READY STATUS RESTARTS AGE IP NODE NOMINATED-NODE READINESS-GATES
    return row[:4] + row[5:]


def _no_age(row: list[str]) -> list[str]:
    # NAME READY STATUS RESTARTS AGE
    return row[:4]


def _describe(text: str) -> dict[str, Any]:
    head, _, events = text.partition("\nEvents:\n")
    rows = []
    for line in events.splitlines()[2:]:  # the column names and their underlines
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) == 5:
            kind, reason, _age, source, message = cells
            rows.append([kind, reason, source, message])
        else:
            rows.append(cells)
    return {"head": head.splitlines(), "events": rows}


def _audit_by_entity(text: str) -> dict[str, Any]:
    """``audit`` rows grouped by what they are about (a pod, the node itself, or a DaemonSet's
    decisions that name the node), each group in log order. Across groups the order is timing: on one
    box the demo is applied in one process between the engine's decisions, on the cluster by four
    ``dsctl apply`` processes, so reports of different pods interleave differently; what happened to
    each pod and to the node, and which commands each DaemonSet's decisions gave for it, is the outcome.
    A decision with no command only records a status on the way (how many there are depends on how
    reports fall into the engine's passes, as ``replay verify`` counts them), so it is counted out, as
    is the status a decision with commands records; a decision's source is the engine's identity."""
    lines = text.splitlines()
    groups: dict[str, list[list[str]]] = defaultdict(list)
    for line in lines[1:]:
        cells = line.split(None, 4)
        if len(cells) < 5:
            groups["?"].append(cells)
            continue
        _seq, _time, kind, source, summary = cells
        if kind == "decision.recorded":
            # "decision for NS/NAME gen G (N commands: ...) status ..."
            if "(0 commands)" in summary:
                continue
            entity, source = f"decisions of {summary.split()[2]}", "<engine>"
            # the status it records counts the old pod or not by whether the engine's pass came
            # after its pod.terminating report or after its pod.deleted, a millisecond later: timing
            summary = summary.split(") status ", 1)[0] + ")"
        elif kind.startswith("pod."):
            entity = summary.split()[1]
        else:
            entity = "node"
        groups[entity].append([kind, source, summary])
    return {"header": lines[0].split() if lines else [], "by_entity": dict(sorted(groups.items()))}


def _verify(text: str) -> list[str]:
    # "verified 34 decisions (seq 6..99) in 0.01s: all match": how many decisions the engine records
    # depends on how changes and pod reports fall into its passes (34 on one box, 31 on the cluster in
    # one run), so the verdict and the commands' audit are the outcome; how many commands were issued
    # and how each was answered must be the same on both
    out = []
    for line in text.splitlines():
        line = re.sub(r"^verified \d+ decisions \(seq \d+\.\.\d+\) in [\d.]+s:", "verified:", line)
        out.append(re.sub(r" \(judged at [^)]*\)", "", line))
    return out


def _watch(dep: Deployment, rows: int, timeout: float = 15) -> dict[str, Any]:
    """``get pods -w`` until it has printed its header and ``rows`` pods (or ``timeout``), then Ctrl-C."""
    proc = subprocess.Popen(
        dep.argv("dsctl get pods -w"), cwd=dep.cwd, env=dep.environ(), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    assert proc.stdout is not None
    buf = b""
    deadline = time.monotonic() + timeout
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while buf.count(b"\n") < rows + 1 and (left := deadline - time.monotonic()) > 0:
                if sel.select(left):
                    chunk = os.read(proc.stdout.fileno(), 65536)
                    if not chunk:
                        break
                    buf += chunk
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    text = buf.decode()
    return {
        "table": _table(text, _no_age),
        "complete": text.count("\n") >= rows + 1,
        "stderr": "" if b"KeyboardInterrupt" in err else err.decode(),
    }


def _canonical_names(dep: Deployment) -> dict[str, str]:
    """Every pod name the log's decisions created -> ``<daemonset>@<node>#<k>``; and the template hash
    of fluentd's generation 2 -> ``<restarted>``: ``rollout restart`` stamps the template with a
    ``kubectl.kubernetes.io/restartedAt`` annotation, as kubectl does, so that revision's hash is the
    hash of a time (the original template's hash, which ``undo`` brings back, is compared as it is)."""
    decisions = dep.json("dsctl audit --type decision.recorded -o json")
    assert decisions is not None, f"{dep.name}: audit of the decisions failed"
    names: dict[str, str] = {}
    counts: dict[tuple[str, str, str], int] = defaultdict(int)
    for record in decisions:
        data = record["data"]
        if (data["namespace"], data["name"], data["generation"]) == (*FLUENTD, 2):
            names[data["template_hash"]] = "<restarted>"
        for cmd in record["data"].get("commands") or []:
            if cmd.get("kind") == "create_pod" and cmd["pod_name"] not in names:
                key = (cmd["namespace"], cmd["owner_name"], cmd["node"])
                counts[key] += 1
                names[cmd["pod_name"]] = f"{cmd['owner_name']}@{cmd['node']}#{counts[key]}"
    return names


_SUBS = (
    (re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})?"), "<time>"),
    (re.compile(r"\bseq \d+(\.\.\d+)?"), "seq N"),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"), "<uid>"),
    (re.compile(r"\b[0-9a-f]{32}\b"), "<id>"),
    # the engine's identity: its host name and pid on one box, engine-1 or engine-2 on the cluster
    (re.compile(r"\bleader [^\s,)]+"), "leader <engine>"),
    # the demo's source: `dsctl up --demo` appends it in-process as "dsctl-demo", `ops/cluster up
    # --demo` through `dsctl apply` (as a user would) as "dsctl"
    (re.compile(r"\bdsctl-demo\b"), "dsctl"),
)


def normalise(value: Any, names: dict[str, str], pattern: re.Pattern[str] | None) -> Any:
    if isinstance(value, str):
        if pattern is not None:
            value = pattern.sub(lambda m: names[m.group(0)], value)
        for regex, repl in _SUBS:
            value = regex.sub(repl, value)
        return value
    if isinstance(value, list):
        return [normalise(v, names, pattern) for v in value]
    if isinstance(value, dict):
        return {normalise(k, names, pattern): normalise(v, names, pattern) for k, v in value.items()}
    return value


# --- the walk --------------------------------------------------------------------------------------


def walk(dep: Deployment) -> dict[str, Any]:
    """Run README's walk-through against ``dep``; every step's outcome, normalised, by ``step_ids``."""
    ok, got = _settled(dep, DEMO_DESIRED, with_nodes=True)
    outcomes: dict[str, Any] = {"demo settled": got if ok else {"NOT SETTLED": got}}

    def settle(line: str) -> None:
        last = line == "dsctl rollout undo ds/fluentd"
        ok, got = _wait_settled(dep, SETTLES_TO[line], SETTLE_TIMEOUT, with_nodes=last)
        outcomes[f"settled after: {line}"] = got if ok else {"NOT SETTLED": got}

    for line in WALK:
        if line == "dsctl explain pod fluentd-xxxxx":
            pods = dep.json("dsctl get pods -o json") or {"items": []}
            fluentd = sorted(
                (p["spec"]["nodeName"], p["metadata"]["name"])
                for p in pods["items"]
                if _owner(p) == "fluentd"
            )
            name = fluentd[0][1] if fluentd else "fluentd-none"
            out = dep.run(line.replace("fluentd-xxxxx", name))
            outcomes[line] = _result(out, out.stdout.splitlines())
        elif line == "dsctl get pods -w":
            # interactive: watched until it has printed the table, as many rows as pods in default
            pods = dep.json("dsctl get pods -o json") or {"items": []}
            outcomes[line] = _watch(dep, len(pods["items"]))
        elif line == "dsctl get ds -A --at 20":
            # sequence 20 is a different moment of the demo on each deployment (one box appends the
            # demo in one process while its engine decides, the cluster through four `dsctl apply`
            # processes, the engine deciding on each before the next): compared here are the exit code
            # and the columns; the state at equivalent points (the sequence of each of the walk's own
            # changes) is compared below
            out = dep.run(line)
            outcomes[line] = {
                "rc": out.returncode,
                "header": out.stdout.splitlines()[0].split() if out.stdout else [],
                "stderr": out.stderr,
            }
        else:
            timeout = 90 if "rollout status" in line else 60
            out = dep.run(line, timeout=timeout)
            if line == "dsctl get ds -A":
                outcomes[line] = _result(out, _table(out.stdout, _no_age_last))
            elif line == "dsctl get pods -o wide":
                outcomes[line] = _result(out, _table(out.stdout, _pods_wide_row))
            elif line.startswith("dsctl rollout status"):
                # the "Waiting for ..." lines depend on when the polls fall; the verdict does not
                outcomes[line] = _result(out, out.stdout.splitlines()[-1:])
            elif line == "dsctl describe ds fluentd":
                outcomes[line] = _result(out, _describe(out.stdout))
            elif line.startswith("dsctl audit"):
                outcomes[line] = _result(out, _audit_by_entity(out.stdout))
            elif line == "dsctl replay verify":
                outcomes[line] = _result(out, _verify(out.stdout))
            elif line == "dsctl rollout history ds/fluentd":
                outcomes[line] = _result(out, _history(out.stdout))
            else:
                outcomes[line] = _result(out, out.stdout.splitlines())
        if line == "dsctl rollout undo ds/fluentd":
            out = dep.run(UNDO_STATUS, timeout=90)
            outcomes[f"(wait) {UNDO_STATUS}"] = _result(out, out.stdout.splitlines()[-1:])
            out = dep.run("dsctl rollout history ds/fluentd")
            outcomes["(after undo) dsctl rollout history ds/fluentd"] = _result(out, _history(out.stdout))
        if line in SETTLES_TO:
            settle(line)

    # `get ds -A --at` at equivalent points: the sequence of each change the walk made
    kinds = sorted({kind for kind, _ in WALK_EVENTS})
    types = " ".join(f"--type {kind}" for kind in kinds)
    log = dep.json(f"dsctl audit {types} -o json") or []
    demo_applies = len(DEMO_DESIRED)
    applied = [r for r in log if r["type"] == "daemonset.applied"][demo_applies:]
    mine = sorted([r for r in log if r["type"] != "daemonset.applied"] + applied, key=lambda r: r["seq"])
    for i, (kind, label) in enumerate(WALK_EVENTS):
        step = f"dsctl get ds -A --at <seq of: {label}>"
        if i >= len(mine) or mine[i]["type"] != kind:
            outcomes[step] = {"walk events": [r["type"] for r in mine]}
            continue
        out = dep.run(f"dsctl get ds -A --at {mine[i]['seq']}")
        outcomes[step] = _result(out, _table(out.stdout, _no_age_last))

    names = _canonical_names(dep)
    pattern = (
        re.compile(
            r"(?<![\w-])(" + "|".join(map(re.escape, sorted(names, key=len, reverse=True))) + r")(?![\w-])"
        )
        if names
        else None
    )
    assert list(outcomes) == step_ids(), list(outcomes)
    result = {step: normalise(value, names, pattern) for step, value in outcomes.items()}
    # pod tables are sorted by pod name, whose suffix is random: which rows, not their order
    wide, watch = result["dsctl get pods -o wide"], result["dsctl get pods -w"]
    wide["stdout"] = wide["stdout"][:1] + sorted(wide["stdout"][1:])
    watch["table"] = watch["table"][:1] + sorted(watch["table"][1:])
    return result
