"""The query service answers get, describe, explain and rollout history from the engine's live
projection, and prints exactly what a rebuild from the log prints (docs/console.md)."""

from __future__ import annotations

import asyncio
import difflib
import io
import time
from typing import Any

import pytest

from engine.cli import get, served
from engine.cli.remote import MODE_ENV, ask
from engine.core.arguments import parse_label_selector
from engine.query.protocol import SERVICE_NAME
from engine.query.service import QueryService
from events.errors import NotFound
from tests.e2e.harness import Cluster

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def _both(
    monkeypatch: pytest.MonkeyPatch, call: Any, store: Any = None
) -> tuple[tuple[str, str, Any], tuple[str, str, Any]]:
    """The same read through the service, then from the log (``DSCTL_QUERY=log``), at one clock; with
    ``store``, read again while the log moved in between (a late status decision is not a difference
    between the paths)."""
    frozen = time.time()
    monkeypatch.setattr(time, "time", lambda: frozen)
    for _ in range(20):
        before = await store.last_seq() if store is not None else 0
        results = []
        for mode in ("service", "log"):
            if mode == "log":
                monkeypatch.setenv(MODE_ENV, "log")
            else:
                monkeypatch.delenv(MODE_ENV, raising=False)
            out, err = io.StringIO(), io.StringIO()
            try:
                outcome: Any = await call(out, err)
            except NotFound as e:
                outcome = ("NotFound", str(e))
            results.append((out.getvalue(), err.getvalue(), outcome))
        monkeypatch.delenv(MODE_ENV, raising=False)
        if store is None or results[0] == results[1] or await store.last_seq() == before:
            break
        await asyncio.sleep(0.1)
    return results[0], results[1]


async def test_every_read_prints_the_same_through_the_service_and_from_the_log(
    served_cluster: tuple[Cluster, QueryService], nc: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster, service = served_cluster
    store = cluster.store
    pod = sorted(p.name for p in cluster.state.pods.values() if p.owner_name == "agent")[0]
    reads: list[Any] = []
    for kind in ("daemonsets", "pods", "nodes"):
        for fmt in ("table", "wide", "json", "yaml", "name"):
            for all_ns in (False, True):
                q = get.Query(kind=kind, all_namespaces=all_ns)  # type: ignore[arg-type]
                reads.append(lambda o, e, q=q, fmt=fmt: get.get(store, nc, q, fmt, o, e))
    q = get.Query(kind="daemonsets", selector=parse_label_selector("team=obs"))
    reads.append(lambda o, e: get.get(store, nc, q, "table", o, e))
    q = get.Query(kind="pods", name="nope")
    reads.append(lambda o, e: get.get(store, nc, q, "table", o, e))
    q = get.Query(kind="pods", name=pod)
    reads.append(lambda o, e: get.get(store, nc, q, "yaml", o, e))
    for kind, name in (("daemonsets", "agent"), ("pods", pod), ("nodes", "n2"), ("daemonsets", "nope")):
        reads.append(lambda o, e, k=kind, n=name: served.describe(store, nc, k, n, "default", o))
    reads.append(lambda o, e: served.explain_pod(store, nc, pod, "default", o))
    reads.append(lambda o, e: served.explain_node(store, nc, "n1", "default/agent", o))
    reads.append(lambda o, e: served.explain_node(store, nc, "n3", "default/gpu", o))
    reads.append(lambda o, e: served.rollout_history(store, nc, "agent", "default", None, o))
    reads.append(lambda o, e: served.rollout_history(store, nc, "agent", "default", 1, o))
    before = service.counters.answered
    for read in reads:
        answered = service.counters.answered
        via_service, from_log = await _both(monkeypatch, read, store)
        assert service.counters.answered > answered  # the service answered it (not a fallback)
        assert via_service == from_log, "".join(
            difflib.unified_diff(
                from_log[0].splitlines(True), via_service[0].splitlines(True), "log", "service"
            )
        )
    # every one of them was answered by the service (the not-found ones as errors it raised)
    assert service.counters.answered - before >= len(reads)
    assert "agent" in (await _both(monkeypatch, reads[0]))[0][0]


async def test_discoverable_as_a_micro_service_and_absent_means_the_log(
    served_cluster: tuple[Cluster, QueryService], nc: Any
) -> None:
    cluster, service = served_cluster
    info = await nc.request("$SRV.INFO." + SERVICE_NAME, b"", timeout=2)
    assert b'"dse.query.get"' in info.data and b'"dse.query.describe"' in info.data
    reply = await ask(nc, "get", {"query": {"kind": "nodes"}, "fmt": "name"}, await cluster.store.last_seq())
    assert reply is not None and reply.out == "node/n1\nnode/n2\nnode/n3\n"
    # a projection that cannot reach what the client saw is not trusted: the client reads the log
    reply = await ask(nc, "get", {"query": {"kind": "nodes"}, "fmt": "name"}, 10**9, timeout=5)
    assert reply is not None and reply.unavailable
    await service.stop()
    assert await ask(nc, "get", {"query": {"kind": "nodes"}, "fmt": "name"}, 0, timeout=2) is None


async def test_a_large_answer_arrives_in_parts(
    served_cluster: tuple[Cluster, QueryService], nc: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster, _ = served_cluster
    monkeypatch.setattr(type(nc), "max_payload", property(lambda self: 2048))
    q = get.Query(kind="pods", all_namespaces=True)
    via_service, from_log = await _both(monkeypatch, lambda o, e: get.get(cluster.store, nc, q, "json", o, e))
    assert len(via_service[0]) > 2048
    assert via_service == from_log


async def test_serve_reads_starts_the_query_service_and_the_console_beside_an_engine(
    nc: Any, streams: Any
) -> None:
    """What ``dsctl up`` starts beside its engine (``serve_reads``), over the engine's projection."""
    import urllib.request

    from engine.cli.served import serve_reads
    from tests.e2e.harness import nodes_yaml

    cluster = await Cluster(nc).start()
    assert cluster.engine is not None and cluster.engine.projector is not None
    reads = await serve_reads(nc, cluster.engine.projector)
    try:
        await cluster.apply(nodes_yaml("a1"))
        out, err = io.StringIO(), io.StringIO()
        assert await get.get(cluster.store, nc, get.Query(kind="nodes"), "name", out, err) == 0
        assert out.getvalue() == "node/a1\n" and reads.query.counters.answered == 1
        assert reads.console_url.startswith("http://127.0.0.1:")
        assert reads.console is not None and reads.console.timeline.index is reads.query.index

        def page() -> bytes:
            with urllib.request.urlopen(reads.console_url + "api/fleet", timeout=5) as r:
                return bytes(r.read())

        assert b'"nodes":1' in await asyncio.to_thread(page)
    finally:
        await reads.stop()
        await cluster.stop()


async def test_an_engine_that_no_longer_trusts_its_log_does_not_answer(
    served_cluster: tuple[Cluster, QueryService], nc: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tamper evidence (docs/design.md): a projection whose log was found replaced or with a gap is
    not answered from; the client reads the log itself."""
    from engine.store.port import LogIntegrityError

    cluster, service = served_cluster
    assert cluster.engine is not None and cluster.engine.projector is not None
    monkeypatch.setattr(
        cluster.engine.projector, "untrusted", LogIntegrityError("sequence gap", "sequence_gap")
    )
    reply = await ask(nc, "get", {"query": {"kind": "nodes"}, "fmt": "name"}, 0)
    assert reply is not None and "no longer trusts" in reply.unavailable
    out, err = io.StringIO(), io.StringIO()
    answered = service.counters.answered
    await get.get(cluster.store, nc, get.Query(kind="nodes"), "name", out, err)
    assert out.getvalue() == "node/n1\nnode/n2\nnode/n3\n" and service.counters.answered == answered
