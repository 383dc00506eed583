"""``dsctl version``: the client's version and, unless ``--client``, the server side's: the NATS
server's (from the connection's INFO) and every engine's that answers nats-micro discovery of its query
service (``$SRV.INFO.dsctl-query``; engine/query/service.py registers it with the package version).

No engine answering is not an error (the log may have none running now); no NATS server is, after the
client's version is printed, as ``kubectl version`` does with an unreachable API server.
"""

from __future__ import annotations

import asyncio
import json
import platform
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import Any, TextIO

import yaml

from engine.security.roles import QUERY_SERVICE
from engine.store.connection import close, connect
from engine.store.settings import NatsSettings

#: how long engines have to answer discovery after the first answer (or at all)
FIRST_ANSWER = 1.5
MORE_ANSWERS = 0.3


def _client() -> dict[str, str]:
    try:
        mine = package_version("dsctl")
    except PackageNotFoundError:
        mine = "0.0.0"
    return {"version": mine, "python": platform.python_version()}


def _print(info: dict[str, Any], output: str | None, out: TextIO) -> None:
    if output == "json":
        out.write(json.dumps(info, indent=2) + "\n")
    elif output == "yaml":
        out.write(yaml.safe_dump(info, sort_keys=False))
    else:
        out.write(f"Client Version: {info['clientVersion']['version']}\n")
        if "natsServerVersion" in info:
            out.write(f"NATS Server Version: {info['natsServerVersion']}\n")
        if "engineVersions" in info:
            engines = info["engineVersions"]
            shown = ", ".join(f"{e['version']} ({e['id']})" for e in engines) or "none answering"
            out.write(f"Engine Version: {shown}\n")
    out.flush()


def client_version(output: str | None, out: TextIO) -> int:
    _print({"clientVersion": _client()}, output, out)
    return 0


async def _engines(nc: Any) -> list[dict[str, str]]:
    """Every engine's query service that answers discovery within the window, by id."""
    inbox = nc.new_inbox()
    answers: list[dict[str, str]] = []
    first = asyncio.Event()

    async def on_info(msg: Any) -> None:
        try:
            data = json.loads(msg.data)
            answers.append({"id": str(data.get("id", "")), "version": str(data.get("version", "?"))})
        except ValueError:
            return
        first.set()

    sub = await nc.subscribe(inbox, cb=on_info)
    try:
        await nc.publish(f"$SRV.INFO.{QUERY_SERVICE}", b"", reply=inbox)
        try:
            await asyncio.wait_for(first.wait(), FIRST_ANSWER)
            await asyncio.sleep(MORE_ANSWERS)
        except TimeoutError:
            pass
    finally:
        await sub.unsubscribe()
    return sorted(answers, key=lambda a: a["id"])


def _semver(v: Any) -> str:
    text = f"{v.major}.{v.minor}.{v.patch}"
    return f"{text}-{v.prerelease}" if v.prerelease else text


async def server_versions(settings: NatsSettings, output: str | None, out: TextIO) -> int:
    info: dict[str, Any] = {"clientVersion": _client()}
    try:
        nc = await connect(settings)
    except BaseException:
        _print(info, output, out)
        raise
    try:
        info["natsServerVersion"] = _semver(nc.connected_server_version)
        info["engineVersions"] = await _engines(nc)
    finally:
        await close(nc)
    _print(info, output, out)
    return 0
