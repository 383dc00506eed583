"""``dsctl up`` as a process: it stops cleanly on Ctrl-C, and its embedded server never outlives it."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.store.embedded import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _start(tmp: Path) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "up", "--demo", "--port", str(port),
         "--store", str(tmp / "nats"), "--log-file", str(tmp / "log")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    assert proc.stdout is not None
    for line in proc.stdout:
        if "converged" in line or time.monotonic() > deadline:
            break
    return proc, port


def test_ctrl_c_stops_everything_cleanly(tmp_path: Path) -> None:
    proc, port = _start(tmp_path)
    assert _listening(port)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "dsctl up: stopped" in out
    assert not _listening(port)


def test_a_killed_up_takes_its_server_with_it(tmp_path: Path) -> None:
    proc, port = _start(tmp_path)
    proc.kill()
    proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while _listening(port) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _listening(port), "the embedded nats-server outlived its dsctl up"


def test_a_busy_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = subprocess.run(
            [sys.executable, "-m", "engine.cli", "up", "--port", str(port), "--store", str(tmp_path / "n"),
             "--log-file", str(tmp_path / "log")],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert r.returncode == 1
    assert f"cannot start nats-server on 127.0.0.1:{port}" in r.stderr
