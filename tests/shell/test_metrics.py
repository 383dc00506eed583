"""The metrics exposition is one Prometheus accepts (docs/deploy.md, "Metrics and logs"), and its
per-DaemonSet numbers are the world's.

A strict reader of the text format (0.0.4) checks every rendering: each sample belongs to a family
declared once with ``# HELP`` and ``# TYPE``, counters end in ``_total``, no gauge or counter is named
like a histogram's parts, each histogram's buckets are cumulative up to ``+Inf`` which equals its
``_count``, label values are escaped. ``promtool check metrics`` (Debian's ``prometheus`` package)
runs too: ``ops/test`` installs it and sets ``DSCTL_PROMTOOL_TESTS=required``, so there a missing
promtool fails; elsewhere its checks are skipped. The checker (and promtool) are run on bad samples as
well, so one that stopped finding anything would fail. The engine test scrapes a real engine over
HTTP, on a real nats-server with the simulated fleet, and compares each DaemonSet's gauges with its
pods. It is skipped while the command feed can lose a cancel (tests/shell/test_feed_cancel.py): its
teardown, stopping the executor, then hangs now and then.
"""

from __future__ import annotations

import asyncio
import io
import math
import os
import re
import shutil
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import pytest

from engine.cli.daemonsets import delete_daemonset
from engine.runtime.metrics import Metrics, _sample, serve
from engine.store.embedded import free_port
from tests.e2e.harness import Cluster, nodes_yaml, pods_of
from tests.shell.test_feed_cancel import FEED_LOSES_CANCELS, WHY

NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')
SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)")
HISTOGRAM_PARTS = ("_bucket", "_sum", "_count")


@dataclass
class Family:
    name: str
    kind: str = ""
    help: str | None = None
    #: (sample name, labels, value)
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)


def _unescape(value: str) -> str:
    return re.sub(r"\\([\\\"n])", lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def _labels(text: str) -> dict[str, str] | None:
    """The labels of ``{text}``, or None when it is not a well-formed, escaped label list."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(text):
        m = LABEL.match(text, pos)
        if m is None or m.group(1) in out:
            return None
        out[m.group(1)] = _unescape(m.group(2))
        pos = m.end()
        if pos < len(text):
            if text[pos] != ",":
                return None
            pos += 1
    return out


def _value(text: str) -> float:
    if text in ("+Inf", "-Inf", "NaN"):
        return float(text.replace("+", ""))
    if not re.fullmatch(r"-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", text):
        raise ValueError(text)
    return float(text)


def parse(text: str) -> tuple[dict[str, Family], list[str]]:
    """The families of an exposition and everything wrong with it."""
    problems: list[str] = []
    families: dict[str, Family] = {}
    current: Family | None = None
    closed: set[str] = set()
    series: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    if not text.endswith("\n"):
        problems.append("the exposition does not end with a newline")
    for n, line in enumerate(text.splitlines(), 1):
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            _, word, rest = line.split(" ", 2)
            name, _, arg = rest.partition(" ")
            if not NAME.fullmatch(name):
                problems.append(f"line {n}: bad metric name {name!r}")
            fam = families.get(name)
            if fam is None:
                if current is not None:
                    closed.add(current.name)
                fam = families[name] = Family(name)
                current = fam
            elif fam is not current or fam.samples:
                problems.append(f"line {n}: {word} for {name} away from its family")
            if word == "HELP":
                if fam.help is not None:
                    problems.append(f"line {n}: {name} has two HELP lines")
                fam.help = arg
                if re.search(r"\\[^\\n]", arg):
                    problems.append(f"line {n}: bad escape in the HELP of {name}")
            else:
                if fam.kind:
                    problems.append(f"line {n}: {name} has two TYPE lines")
                if arg not in ("counter", "gauge", "histogram", "summary", "untyped"):
                    problems.append(f"line {n}: {name} has an unknown type {arg!r}")
                fam.kind = arg
            continue
        if line.startswith("#") or not line:
            problems.append(f"line {n}: unexpected line {line!r}")
            continue
        m = SAMPLE.fullmatch(line)
        if m is None:
            problems.append(f"line {n}: not a sample: {line!r}")
            continue
        name, label_text, value_text = m.groups()
        labels = _labels(label_text) if label_text is not None else {}
        if labels is None:
            problems.append(f"line {n}: bad labels in {line!r}")
            continue
        try:
            value = _value(value_text)
        except ValueError:
            problems.append(f"line {n}: bad value in {line!r}")
            continue
        owner = _owner(name, current)
        if owner is None:
            problems.append(f"line {n}: {name} belongs to no declared family (or not the one just declared)")
            continue
        key = (name, tuple(sorted(labels.items())))
        if key in series:
            problems.append(f"line {n}: {line!r} repeats a series")
        series.add(key)
        owner.samples.append((name, labels, value))
    for fam in families.values():
        problems.extend(_family_problems(fam))
    return families, problems


def _owner(name: str, current: Family | None) -> Family | None:
    if current is None:
        return None
    if current.kind == "histogram":
        return current if name in {current.name + p for p in HISTOGRAM_PARTS} else None
    return current if name == current.name else None


def _family_problems(fam: Family) -> list[str]:
    problems = []
    if fam.help is None or not fam.help.strip():
        problems.append(f"{fam.name} has no HELP")
    if not fam.kind:
        problems.append(f"{fam.name} has no TYPE")
    if fam.kind == "counter" and not fam.name.endswith("_total"):
        problems.append(f"the counter {fam.name} does not end in _total")
    if fam.kind != "counter" and fam.name.endswith("_total"):
        problems.append(f"the {fam.kind} {fam.name} ends in _total")
    if fam.kind not in ("histogram", "summary") and fam.name.endswith(HISTOGRAM_PARTS):
        problems.append(f"the {fam.kind} {fam.name} is named like a histogram's part")
    if fam.kind == "counter" and any(v < 0 for _, _, v in fam.samples):
        problems.append(f"the counter {fam.name} is negative")
    if fam.kind == "histogram":
        problems.extend(_histogram_problems(fam))
    return problems


def _histogram_problems(fam: Family) -> list[str]:
    problems = []
    by_series: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}
    for name, labels, value in fam.samples:
        rest = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
        one = by_series.setdefault(rest, {"buckets": []})
        part = name[len(fam.name) :]
        if part == "_bucket":
            if "le" not in labels:
                problems.append(f"{name}{dict(rest)} has no le")
                continue
            one["buckets"].append((_value(labels["le"]), value))
        elif "le" in labels:
            problems.append(f"{name} carries le")
        else:
            one[part] = value
    for rest, one in by_series.items():
        where = f"{fam.name}{dict(rest)}"
        buckets = one["buckets"]
        bounds = [le for le, _ in buckets]
        counts = [c for _, c in buckets]
        if not buckets or not math.isinf(bounds[-1]):
            problems.append(f"{where} has no +Inf bucket")
        if bounds != sorted(set(bounds)):
            problems.append(f"{where}: bucket bounds not increasing")
        if counts != sorted(counts):
            problems.append(f"{where}: bucket counts not cumulative")
        if "_count" not in one or "_sum" not in one:
            problems.append(f"{where} lacks _count or _sum")
        elif buckets and counts[-1] != one["_count"]:
            problems.append(f"{where}: the +Inf bucket ({counts[-1]}) is not _count ({one['_count']})")
    return problems


def promtool_exe() -> str | None:
    """promtool's path; None where it is missing, except under ``ops/test``, where that fails."""
    exe = shutil.which("promtool")
    if exe is None and os.environ.get("DSCTL_PROMTOOL_TESTS") == "required":
        pytest.fail("promtool is required here (DSCTL_PROMTOOL_TESTS=required) but not on PATH")
    return exe


def promtool(text: str) -> str | None:
    """``promtool check metrics``' complaints (empty: clean), or None where promtool may be missing."""
    exe = promtool_exe()
    if exe is None:
        return None
    r = subprocess.run([exe, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    return "" if r.returncode == 0 else (r.stdout + r.stderr)


def value(families: dict[str, Family], name: str, **labels: str) -> float:
    fam_name = next(
        (f for f in families if name == f or (name.startswith(f) and name[len(f) :] in HISTOGRAM_PARTS)), name
    )
    for sample, got, v in families[fam_name].samples if fam_name in families else []:
        if sample == name and got == labels:
            return v
    raise KeyError(f"{name}{labels}")


# --- the checker ------------------------------------------------------------------------------------


def test_a_fresh_engines_exposition_is_clean() -> None:
    metrics = Metrics()
    metrics.append_seconds.observe(0.003)
    metrics.append_seconds.observe(50.0)  # past the last bucket: only +Inf counts it
    metrics.reconcile_seconds["full"].observe(0.02)
    text = metrics.render()
    families, problems = parse(text)
    assert problems == []
    assert value(families, "dsctl_append_seconds_bucket", le="0.005") == 1
    assert value(families, "dsctl_append_seconds_bucket", le="+Inf") == 2
    assert value(families, "dsctl_append_seconds_sum") == pytest.approx(50.003)
    assert metrics.append_seconds_sum == pytest.approx(50.003)
    assert value(families, "dsctl_reconcile_seconds_count", lane="full") == 1
    assert value(families, "dsctl_reconcile_seconds_count", lane="nodes") == 0
    assert value(families, "process_resident_memory_bytes") > 0


def test_promtool_accepts_the_exposition_and_refuses_the_old_one() -> None:
    if promtool_exe() is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus); ops/test installs it")
    metrics = Metrics()
    metrics.append_seconds.observe(0.003)
    metrics.reconcile_seconds["nodes"].observe(0.0001)
    assert promtool(metrics.render()) == ""
    # what the engine exposed before: promtool must still find it wrong, or this check proves nothing
    old = (
        "# HELP dsctl_append_seconds_sum Time spent appending\n"
        "# TYPE dsctl_append_seconds_sum counter\n"
        "dsctl_append_seconds_sum 0.5\n"
    )
    assert 'counter metrics should have "_total" suffix' in (promtool(old) or "")


@pytest.mark.parametrize(
    ("bad", "complaint"),
    [
        # what the engine exposed before: a counter named like a histogram's sum, without _total
        (
            "# HELP dsctl_append_seconds_sum Time spent appending\n# TYPE dsctl_append_seconds_sum counter\n"
            "dsctl_append_seconds_sum 0.5\n",
            "does not end in _total",
        ),
        ("# TYPE x gauge\nx 1\n", "x has no HELP"),
        ("# HELP x a\n# TYPE x gauge\ny 1\n", "belongs to no declared family"),
        ("x 1\n", "belongs to no declared family"),
        ('# HELP x a\n# TYPE x gauge\nx{a="b"c"} 1\n', "bad labels"),
        ('# HELP x a\n# TYPE x gauge\nx{a="b\\t"} 1\n', "bad labels"),
        ("# HELP x a\n# TYPE x gauge\nx 1\nx 2\n", "repeats a series"),
        ("# HELP x_total a\n# TYPE x_total gauge\nx_total 1\n", "ends in _total"),
        (
            '# HELP h a\n# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n',
            "not cumulative",
        ),
        ('# HELP h a\n# TYPE h histogram\nh_bucket{le="1"} 1\nh_sum 1\nh_count 1\n', "no +Inf bucket"),
        ('# HELP h a\n# TYPE h histogram\nh_bucket{le="+Inf"} 2\nh_sum 1\nh_count 1\n', "is not _count"),
        ('# HELP h a\n# TYPE h histogram\nh_bucket{le="+Inf"} 2\nh_count 2\n', "lacks _count or _sum"),
        ("# HELP x a\n# TYPE x gauge\nx one\n", "bad value"),
    ],
)
def test_the_checker_finds_what_is_wrong(bad: str, complaint: str) -> None:
    _, problems = parse(bad)
    assert any(complaint in p for p in problems), problems


def test_label_values_are_escaped() -> None:
    awkward = 'a "quoted" back\\slash\nnewline'
    line = _sample("x", [("namespace", awkward), ("daemonset", "d")], 1)
    families, problems = parse(f"# HELP x a\n# TYPE x gauge\n{line}")
    assert problems == []
    assert families["x"].samples == [("x", {"namespace": awkward, "daemonset": "d"}, 1.0)]


def test_process_metrics_are_read_from_proc() -> None:
    families, problems = parse(Metrics().render())
    assert problems == []
    with open("/proc/self/status") as f:
        rss = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
    assert value(families, "process_resident_memory_bytes") == pytest.approx(rss, rel=0.5)
    assert 0 < value(families, "process_cpu_seconds_total") < time.process_time() + 1
    assert value(families, "process_open_fds") > 2
    started = value(families, "process_start_time_seconds")
    assert time.time() - 24 * 3600 < started <= time.time()
    # where there is no /proc, the process metrics are left out rather than made up
    assert "process_" not in Metrics(proc="/nonexistent").render()


# --- a real engine -----------------------------------------------------------------------------------

DS = """
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: {name}
  namespace: {namespace}
spec:
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      {selector}
      containers:
      - name: c
        image: example/{name}:1
"""


async def _scrape(port: int) -> str:
    url = f"http://127.0.0.1:{port}/metrics"
    return await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())


@pytest.mark.integration
@pytest.mark.skipif(FEED_LOSES_CANCELS, reason=f"its teardown can hang: {WHY}")
async def test_an_engine_serves_each_daemonsets_status_as_its_pods_show_it(nc: Any, streams: Any) -> None:
    cluster = await Cluster(nc).start()
    assert cluster.engine is not None
    server = None
    try:
        await cluster.apply(nodes_yaml("node-a", "node-b", "node-c", labels={"node-c": {"gpu": "true"}}))
        await cluster.apply(DS.format(name="agent", namespace="default", selector=""))
        await cluster.apply(
            DS.format(name="gpu-plugin", namespace="kube-system", selector="nodeSelector: {gpu: 'true'}")
        )

        def settled(s: Any) -> bool:
            want = {"default/agent": 3, "kube-system/gpu-plugin": 1}
            return (
                all(
                    (ds := s.daemonsets.get(key)) is not None and ds.status.number_available == n
                    for key, n in want.items()
                )
                and not s.in_flight
            )

        await cluster.wait("both DaemonSets available", settled)
        port = free_port()
        server = await serve(cluster.engine.metrics, "127.0.0.1", port)
        text = await _scrape(port)
        families, problems = parse(text)
        assert problems == []
        assert promtool(text) in (None, ""), promtool(text)

        state = cluster.state
        for namespace, name in (("default", "agent"), ("kube-system", "gpu-plugin")):
            pods = [p for p in pods_of(state, name, namespace) if p.deletion_timestamp is None]
            ready = [p for p in pods if p.ready]
            ds = state.daemonsets[f"{namespace}/{name}"]
            wanted = 1 if name == "gpu-plugin" else len(state.nodes)

            def gauge(field: str, namespace: str = namespace, name: str = name) -> float:
                return value(families, f"dsctl_daemonset_status_{field}", namespace=namespace, daemonset=name)

            assert gauge("desired_number_scheduled") == wanted
            assert gauge("current_number_scheduled") == len({p.node for p in pods}) == wanted
            assert gauge("number_ready") == len(ready) == wanted
            assert gauge("number_available") == wanted
            assert gauge("number_unavailable") == 0
            assert gauge("updated_number_scheduled") == wanted
            assert gauge("number_misscheduled") == 0
            assert gauge("observed_generation") == ds.generation == 1
            assert (
                value(families, "dsctl_daemonset_metadata_generation", namespace=namespace, daemonset=name)
                == 1
            )

        # the timings were observed where the counters count
        appends = value(families, "dsctl_appends_total")
        assert appends > 0 and value(families, "dsctl_append_seconds_count") == appends
        assert value(families, "dsctl_append_seconds_sum") > 0
        reconciles = sum(
            value(families, "dsctl_reconcile_seconds_count", lane=lane) for lane in ("nodes", "full")
        )
        assert reconciles == value(families, "dsctl_reconciles_total") > 0
        assert 0 < value(families, "dsctl_relay_seconds_count") <= value(families, "dsctl_decisions_total")
        assert value(families, "dsctl_is_leader") == 1
        assert value(families, "process_resident_memory_bytes") > 10_000_000

        # a deleted DaemonSet's series go at the next scrape (nothing is kept between scrapes)
        await delete_daemonset(cluster.store, "gpu-plugin", "kube-system", "background", io.StringIO())
        await cluster.wait("gpu-plugin gone", lambda s: "kube-system/gpu-plugin" not in s.daemonsets)
        families, problems = parse(await _scrape(port))
        assert problems == []
        assert 'daemonset="gpu-plugin"' not in await _scrape(port)
        assert (
            value(families, "dsctl_daemonset_status_number_ready", namespace="default", daemonset="agent")
            == 3
        )
    finally:
        if server is not None:
            server.close()
        await cluster.stop()
