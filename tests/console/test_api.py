"""The console's JSON API and event stream over a running engine (docs/console.md)."""

from __future__ import annotations

import asyncio
import json
import urllib.parse
import urllib.request
from typing import Any

import pytest

from engine.console.server import Console
from tests.console.conftest import converged, ds
from tests.e2e.harness import Cluster

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def fetch(console: Console, path: str) -> tuple[int, Any]:
    def get() -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(console.url.rstrip("/") + path, timeout=10) as r:
                body = r.read()
                ctype = r.headers["Content-Type"]
                return r.status, json.loads(body) if "json" in ctype else body.decode()
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    return await asyncio.to_thread(get)


async def test_fleet_node_rollout_and_decisions(console_cluster: tuple[Cluster, Console]) -> None:
    _, console = console_cluster
    status, page = await fetch(console, "/")
    assert status == 200 and "<title>dsctl console</title>" in page
    _, fleet = await fetch(console, "/api/fleet")
    assert [d["key"] for d in fleet["daemonsets"]] == ["default/agent", "default/gpu"]
    assert [g["value"] for g in fleet["groups"]] == ["zone-0", "zone-1"]
    zone1 = fleet["groups"][1]  # n1 (tainted), n3, n5
    assert zone1["cells"]["default/agent"]["ready"] == 2 and zone1["cells"]["default/agent"]["none"] == 1
    _, nodes = await fetch(console, "/api/nodes?value=zone-0")
    assert [n["name"] for n in nodes["nodes"]] == ["n2", "n4", "n6"]
    assert [c["state"] for c in nodes["nodes"][0]["cells"]] == ["ready", "ready"]
    _, n1 = await fetch(console, "/api/node/n1")
    agent = n1["daemonsets"][0]
    assert agent["state"] == "none" and not agent["should_run"] and "taint" in agent["why"].lower()
    _, rollout = await fetch(console, "/api/rollout/default%2Fagent")
    assert (
        rollout["daemonset"]["complete"]
        and rollout["holding"] == []
        and rollout["budget"]["max_unavailable"] == 1
    )
    await asyncio.sleep(0.3)
    _, decisions = await fetch(console, "/api/decisions?ds=default/agent")
    assert decisions["items"] and all(i["ds"] == "default/agent" for i in decisions["items"])
    seqs = [i["seq"] for i in decisions["items"]]
    assert seqs == sorted(seqs, reverse=True)
    _, first = await fetch(console, f"/api/decision/{seqs[-1]}")
    assert first["daemonset"] == "default/agent" and first["commands"]
    assert all(r["reports"] for r in first["reports"])  # every create was reported by the executor
    _, about_n3 = await fetch(console, "/api/decisions?node=n3")
    assert about_n3["items"]
    for item in about_n3["items"]:
        _, one = await fetch(console, f"/api/decision/{item['seq']}")
        assert any(r["node"] == "n3" for r in one["reasons"]) or any(
            c["node"] == "n3" for c in one["commands"]
        )
    status, _ = await fetch(console, "/api/decision/1")
    assert status == 404
    status, _ = await fetch(console, "/api/node/nope")
    assert status == 404


async def test_paging_keeps_its_order_and_time_travel(console_cluster: tuple[Cluster, Console]) -> None:
    cluster, console = console_cluster
    before_roll = cluster.state.seq
    await cluster.apply(ds("agent", 2))
    await cluster.wait("agent v2", converged("agent", 5))
    await asyncio.sleep(0.3)
    _, all_ = await fetch(console, "/api/decisions?limit=500")
    everything = [i["seq"] for i in all_["items"]]
    paged: list[int] = []
    # from where the full list began: decisions arriving meanwhile go above it, never into the pages
    cursor = f"&before={everything[0] + 1}"
    while True:
        _, page = await fetch(console, f"/api/decisions?limit=3{cursor}")
        paged += [i["seq"] for i in page["items"]]
        if page["next"] is None:
            break
        cursor = f"&before={page['next']}"
    assert paged == everything
    # the fleet as it was before the rollout: agent at revision 1
    _, past = await fetch(console, f"/api/fleet?at={before_roll}")
    _, now = await fetch(console, "/api/fleet")
    assert past["seq"] == before_roll
    assert [d["revision"] for d in past["daemonsets"] if d["name"] == "agent"] == [1]
    assert [d["revision"] for d in now["daemonsets"] if d["name"] == "agent"] == [2]
    # the same point named by its time (the store's clock of the event there)
    when = (await cluster.store.get(before_roll)).time.isoformat()
    _, by_time = await fetch(console, "/api/fleet?at=" + urllib.parse.quote(when))
    assert by_time["seq"] == before_roll
    status, bad = await fetch(console, "/api/fleet?at=yesterday")
    assert status == 400 and "RFC 3339" in bad["error"]
    _, older = await fetch(console, f"/api/decisions?at={before_roll}&limit=500")
    assert all(i["seq"] <= before_roll for i in older["items"])


async def test_event_stream_says_when_the_log_moves(console_cluster: tuple[Cluster, Console]) -> None:
    cluster, console = console_cluster
    reader, writer = await asyncio.open_connection(console.host, console.port)
    writer.write(b"GET /api/stream HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    seen: list[int] = []

    async def read() -> None:
        while True:
            line = await reader.readline()
            if line.startswith(b"data: "):
                seen.append(json.loads(line[6:])["seq"])
                if len(seen) >= 2:
                    return

    task = asyncio.ensure_future(read())
    await asyncio.sleep(0.6)
    await cluster.apply(ds("gpu", 2, extra='nodeSelector: {gpu: "true"}'))
    await asyncio.wait_for(task, 10)
    assert seen[1] > seen[0]
    writer.close()


async def test_dsctl_console_serves_any_deployment_with_a_projection_of_its_own(
    console_cluster: tuple[Cluster, Console], nats_server: Any
) -> None:
    """``dsctl console --nats URL`` (``run_console``): its own projection from the log, the same pages."""
    import io

    from engine.cli.console import run_console
    from engine.store.settings import NatsSettings

    cluster, _ = console_cluster
    out = io.StringIO()
    stop = asyncio.Event()
    task = asyncio.ensure_future(
        run_console(NatsSettings(servers=[nats_server.url]), host="127.0.0.1", port=0, out=out, stop=stop)
    )
    try:
        for _ in range(100):
            if "http://" in out.getvalue():
                break
            await asyncio.sleep(0.05)
        url = out.getvalue().split()[2]

        def get() -> Any:
            with urllib.request.urlopen(url + "api/fleet", timeout=10) as r:
                return json.loads(r.read())

        fleet = await asyncio.to_thread(get)
        assert fleet["seq"] >= cluster.state.seq - 5 and fleet["nodes"] == 6
        assert [d["key"] for d in fleet["daemonsets"]] == ["default/agent", "default/gpu"]
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
