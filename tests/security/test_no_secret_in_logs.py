"""No secret in any log, output, error or process command line, for the processes these tests start.

- ``dsctl up`` as a user starts it (from a directory of its own, defaults everywhere): the CLI finds the
  credentials by itself (the README walk-through needs nothing more), a node's executor added while
  it runs can connect at once (the server is reloaded), and no seed is in up's output,
  its log, the server's log or configuration, any CLI output, or the command line of up or its server.
- An engine given a password in ``NATS_URL`` (the environment, not a flag) loses its server and
  reconnects: neither its log (which once printed the password on reconnect) nor its command line nor
  the server's log holds the password; its metrics listen on 127.0.0.1 only.
- The CLI given credentials in a URL flag warns that the command line shows them, and its errors (a
  refused connection, an unreachable server, several URLs, a token) mask them.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.store.connection import close, connect
from engine.store.embedded import EmbeddedNats, free_port
from engine.store.settings import NatsSettings
from events.errors import PermanentError

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def _run(cwd: Path, env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NATS_", "DSCTL_"))}
    env["PYTHONPATH"] = str(ROOT)
    return {**env, **extra}


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _until(what: str, check: object, timeout: float = 30) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()  # type: ignore[operator]
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _no_secret(secrets: list[str], texts: dict[str, str]) -> None:
    assert secrets and all(len(s) >= 8 for s in secrets)
    for where, text in texts.items():
        for secret in secrets:
            assert secret not in text, f"a secret in {where}"


def test_dsctl_up_is_secure_by_default_and_shows_no_seed_anywhere(tmp_path: Path) -> None:
    port = free_port()
    env = _env(NATS_URL=f"nats://127.0.0.1:{port}")
    out = (tmp_path / "up.out").open("w")
    up = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "up", "--demo", "--port", str(port),
         "--metrics-port", str(free_port())],
        cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
    )  # fmt: skip
    outputs: dict[str, str] = {}
    try:
        # the walk-through as written: no credentials named anywhere, found in ./.dsctl/credentials
        def converged() -> subprocess.CompletedProcess[str] | None:
            r = _run(tmp_path, env, "get", "ds", "-A")
            return r if r.returncode == 0 and r.stdout.count("\n") == 5 else None

        got = _until("the demo's four DaemonSets", converged)
        outputs["get ds"] = got.stdout + got.stderr  # type: ignore[attr-defined]
        for args in (
            ("label", "nodes", "node2", "gpu=true"),
            ("get", "pods", "-o", "wide"),
            ("audit", "--node", "node2", "--since", "10m"),
            ("replay", "verify"),
        ):
            r = _run(tmp_path, env, *args)
            assert r.returncode == 0, f"dsctl {' '.join(args)}: {r.stdout}{r.stderr}"
            outputs[" ".join(args)] = r.stdout + r.stderr
        # a node's executor added while up runs: its key, auth.conf again, the server reloaded
        added = _run(tmp_path, env, "admin", "credentials", "executor", "--node", "node2")
        assert added.returncode == 0 and "reloaded: dsctl-" in added.stdout, added.stdout + added.stderr
        outputs["admin credentials"] = added.stdout + added.stderr
        seed = tmp_path / ".dsctl" / "credentials" / "executor-node2.nk"
        asyncio.run(_connects(env["NATS_URL"], seed, "_INBOX_executor.node2"))
        # without credentials nothing is possible
        bare = _run(tmp_path, {**env, "DSCTL_CREDENTIALS": str(tmp_path / "none")}, "get", "ds", "-A")
        assert bare.returncode == 1 and "Authorization Violation" in bare.stderr, bare.stderr
        assert "no credentials for admin or auditor" in bare.stderr
        servers = _children(up.pid)
        assert len(servers) == 1
        outputs[f"/proc/{up.pid}/cmdline"] = _cmdline(up.pid)
        outputs[f"/proc/{servers[0]}/cmdline"] = _cmdline(servers[0])
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(timeout=30)
        out.close()
    creds = tmp_path / ".dsctl" / "credentials"
    assert sorted(p.name for p in creds.glob("*.nk")) == [
        f"{r}.nk" for r in ("admin", "auditor", "engine", "executor-node2", "fleet", "ingest", "publisher")
    ]
    assert oct(creds.stat().st_mode & 0o777) == "0o700"
    assert all(oct(p.stat().st_mode & 0o777) == "0o600" for p in creds.iterdir() if p.is_file())
    seeds = [p.read_text().strip() for p in creds.glob("*.nk")]
    store = tmp_path / ".dsctl" / "nats"
    outputs["up output"] = (tmp_path / "up.out").read_text()
    outputs["up log"] = (tmp_path / ".dsctl" / "dsctl.log").read_text()
    outputs["server log"] = (store / "nats-server.log").read_text()
    outputs["server config"] = (store / "nats-server.conf").read_text()
    outputs["auth.conf"] = (creds / "auth.conf").read_text()
    _no_secret(seeds, outputs)
    assert "Violation" not in outputs["server log"].replace("Authorization Violation", "")
    assert "dsctl up: stopped" in outputs["up output"]


async def _connects(url: str, seed: Path, inbox: str) -> None:
    """Connect with ``seed`` (retried for a moment: the server reloads its configuration after SIGHUP)."""
    settings = NatsSettings(servers=[url], nkey=str(seed), inbox_prefix=inbox, connect_deadline=5)
    for attempt in range(30):
        try:
            nc = await connect(settings)
            break
        except PermanentError:
            if attempt == 29:
                raise
            await asyncio.sleep(0.1)
    try:
        await nc.subscribe("dse.cmd.node2")
        await nc.flush()
    finally:
        await close(nc)


def _listening(port: int) -> list[str]:
    """The local addresses listening on ``port`` (from /proc/net/tcp, IPv4)."""
    found = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:
            found.append(".".join(str(int(address[i : i + 2], 16)) for i in (6, 4, 2, 0)))
    return found


def test_a_password_in_the_url_stays_out_of_logs_and_command_lines_across_a_reconnect(tmp_path: Path) -> None:
    password = "pw-" + os.urandom(9).hex()
    server = EmbeddedNats(
        store_dir=tmp_path / "nats", config=f'authorization {{ user: dsctl, password: "{password}" }}\n'
    )
    server.start()
    metrics = free_port()
    url = f"nats://dsctl:{password}@127.0.0.1:{server.port}"
    env = _env(NATS_URL=url, DSCTL_LOG_FORMAT="json", DSCTL_LOG_LEVEL="debug")
    log = (tmp_path / "engine.log").open("w")
    engine = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "engine", "run", "--lease-ttl", "2",
         "--metrics-port", str(metrics)],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    texts: dict[str, str] = {}
    try:
        _until("the engine to lead", lambda: "lease.acquired" in (tmp_path / "engine.log").read_text())
        assert _listening(metrics) == ["127.0.0.1"]
        texts["engine cmdline"] = _cmdline(engine.pid)
        server.restart()
        _until("the engine to reconnect", lambda: "nats.reconnected" in (tmp_path / "engine.log").read_text())
        # the CLI: a URL flag with the password works, with a warning; its errors are masked
        flagged = _run(tmp_path, _env(), "get", "ds", "-A", "--nats", url)
        assert flagged.returncode == 0, flagged.stderr
        assert "warning: --nats (credentials in the URL) puts a secret on the command line" in flagged.stderr
        texts["cli with the password flag"] = flagged.stdout + flagged.stderr
        wrong = _run(
            tmp_path, _env(NATS_URL=f"nats://dsctl:{password}x@127.0.0.1:{server.port}"), "get", "ds"
        )
        assert wrong.returncode == 1 and "Authorization Violation" in wrong.stderr
        assert f"nats://127.0.0.1:{server.port}" in wrong.stderr
        texts["cli refused"] = wrong.stdout + wrong.stderr
        several = f"nats://dsctl:{password}@127.0.0.1:1,nats://dsctl:{password}@127.0.0.1:2"
        unreachable = _run(tmp_path, _env(NATS_URL=several), "get", "ds")
        assert unreachable.returncode == 1
        assert "nats://127.0.0.1:1, nats://127.0.0.1:2" in unreachable.stderr
        texts["cli unreachable"] = unreachable.stdout + unreachable.stderr
        token = _run(tmp_path, _env(NATS_URL=f"nats://{password}@127.0.0.1:1"), "get", "ds")
        assert token.returncode == 1 and "nats://127.0.0.1:1" in token.stderr
        texts["cli with a token"] = token.stdout + token.stderr
    finally:
        engine.send_signal(signal.SIGTERM)
        engine.wait(timeout=30)
        log.close()
        server.close()
    texts["engine log"] = (tmp_path / "engine.log").read_text()
    texts["server log"] = server.log_path.read_text() if server.log_path.exists() else ""
    assert "nats.reconnected" in texts["engine log"] and '"server": "127.0.0.1:' in texts["engine log"]
    _no_secret([password], texts)
