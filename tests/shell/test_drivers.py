"""The executor drivers: what the simulated and the process driver report, and when."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import msgspec
import pytest

from engine.executor.drivers.base import LocalPod
from engine.executor.drivers.pid_records import PidRecord
from engine.executor.drivers.proc import current_boot_id, proc_stat
from engine.executor.drivers.process import ProcessDriver
from engine.executor.drivers.sim import SimDriver
from events.k8s import PodTemplate, TemplateMetadata
from events.types import PodEvent, PodFailed, PodSucceeded


class Reports:
    def __init__(self) -> None:
        self.events: list[PodEvent] = []
        self.times: list[float] = []

    async def report(self, event: PodEvent, *, causation_id: str = "") -> None:
        self.events.append(event)
        self.times.append(time.monotonic())

    @property
    def tags(self) -> list[str]:
        return [e.TAG for e in self.events]

    async def wait_for(self, tag: str, timeout: float = 5.0) -> PodEvent:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.events:
                if tag == e.TAG:
                    return e
            await asyncio.sleep(0.01)
        raise AssertionError(f"no {tag} within {timeout}s; got {self.tags}")


def pod(annotations: dict[str, str] | None = None, spec: dict[str, object] | None = None) -> LocalPod:
    return LocalPod(
        namespace="default", name="p-abcde", uid="u", node="n1", owner_uid="o", owner_name="ds",
        revision_hash="h",
        template=PodTemplate(metadata=TemplateMetadata(labels={"app": "x"}, annotations=annotations or {}),
                             spec=spec or {}),
    )  # fmt: skip


async def test_sim_pods_become_ready_after_the_annotated_delay() -> None:
    driver, reports = SimDriver(), Reports()
    started = time.monotonic()
    await driver.start(pod({"sim.dsctl.io/ready-after": "0.2"}), "c1", reports)
    await reports.wait_for("pod.ready")
    assert reports.tags == ["pod.created", "pod.running", "pod.ready"]
    assert reports.times[-1] - started >= 0.19
    assert reports.events[0].labels["controller-revision-hash"] == "h"  # type: ignore[attr-defined]
    await driver.close()


@pytest.mark.parametrize(
    ("annotations", "final", "ready_first"),
    [
        ({"sim.dsctl.io/fail-after": "0.05"}, PodFailed, False),
        ({"sim.dsctl.io/exit-after": "0.05"}, PodSucceeded, False),
        ({"sim.dsctl.io/ready-after": "0.01", "sim.dsctl.io/fail-after": "0.1"}, PodFailed, True),
    ],
)
async def test_sim_pods_fail_or_exit_when_told(
    annotations: dict[str, str], final: type[PodEvent], ready_first: bool
) -> None:
    driver, reports = SimDriver(ready_after=1.0), Reports()
    await driver.start(pod(annotations), "c1", reports)
    await reports.wait_for(final.TAG)
    assert ("pod.ready" in reports.tags) == ready_first
    await driver.close()


async def test_a_never_ready_sim_pod_runs_but_is_never_ready() -> None:
    driver, reports = SimDriver(), Reports()
    await driver.start(pod({"sim.dsctl.io/never-ready": "true"}), "c1", reports)
    await reports.wait_for("pod.running")
    await asyncio.sleep(0.2)
    assert "pod.ready" not in reports.tags
    await driver.close()


async def test_a_deleted_sim_pod_lingers_in_terminating_when_told() -> None:
    driver, reports = SimDriver(), Reports()
    p = pod({"sim.dsctl.io/terminate-after": "0.2"})
    await driver.start(p, "c1", reports)
    started = time.monotonic()
    await driver.stop(p, "c2", reports, grace_seconds=30, evict=False)
    assert reports.tags[-1] == "pod.terminating"
    await reports.wait_for("pod.deleted")
    assert reports.times[-1] - started >= 0.19
    await driver.close()


async def test_a_bad_sim_annotation_fails_the_pod_with_a_reason() -> None:
    driver, reports = SimDriver(), Reports()
    await driver.start(pod({"sim.dsctl.io/ready-after": "soon"}), "c1", reports)
    failed = await reports.wait_for("pod.failed")
    assert "sim.dsctl.io/ready-after='soon'" in failed.reason  # type: ignore[attr-defined]
    await driver.close()


def _spec(*command: str, grace: int = 30) -> dict[str, object]:
    return {"containers": [{"name": "c", "image": "x", "command": list(command)}],
            "terminationGracePeriodSeconds": grace}  # fmt: skip


async def test_the_process_driver_runs_the_command_logs_it_and_stops_it(tmp_path: Path) -> None:
    driver, reports = ProcessDriver(tmp_path), Reports()
    p = pod(spec=_spec("sh", "-c", "echo hello from the pod; sleep 30"))
    await driver.start(p, "c1", reports)
    assert reports.tags == ["pod.created", "pod.running", "pod.ready"]
    log = tmp_path / "default_p-abcde.log"
    deadline = time.monotonic() + 5
    while (
        "hello from the pod" not in (log.read_text() if log.exists() else "") and time.monotonic() < deadline
    ):
        await asyncio.sleep(0.05)
    assert "hello from the pod" in log.read_text()
    await driver.stop(p, "c2", reports, grace_seconds=2, evict=False)
    assert reports.tags[-2:] == ["pod.terminating", "pod.deleted"]
    await driver.close()


async def test_a_process_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path: Path) -> None:
    driver, reports = ProcessDriver(tmp_path), Reports()
    p = pod(spec=_spec("sh", "-c", "trap '' TERM; sleep 30"))
    await driver.start(p, "c1", reports)
    await asyncio.sleep(0.2)
    started = time.monotonic()
    await driver.stop(p, "c2", reports, grace_seconds=0.5, evict=True)
    assert 0.4 <= time.monotonic() - started < 5
    assert reports.tags[-1] == "pod.evicted"
    await driver.close()


async def test_a_process_exiting_non_zero_is_failed_and_zero_succeeded(tmp_path: Path) -> None:
    driver, reports = ProcessDriver(tmp_path), Reports()
    await driver.start(pod(spec=_spec("sh", "-c", "exit 3")), "c1", reports)
    failed = await reports.wait_for("pod.failed")
    assert failed.exit_code == 3  # type: ignore[attr-defined]
    ok = Reports()
    await driver.start(_renamed(pod(spec=_spec("true"))), "c2", ok)
    await ok.wait_for("pod.succeeded")
    await driver.close()


def _renamed(p: LocalPod) -> LocalPod:
    p.name = "p-other"
    return p


async def test_a_pod_without_a_command_fails_with_a_reason(tmp_path: Path) -> None:
    driver, reports = ProcessDriver(tmp_path), Reports()
    await driver.start(pod(spec={"containers": [{"name": "c", "image": "x"}]}), "c1", reports)
    failed = await reports.wait_for("pod.failed")
    assert "has no command or args" in failed.reason  # type: ignore[attr-defined]
    await driver.close()


# --- the process driver across executor restarts ---------------------------------------------------


def _alive(pid: int) -> bool:
    stat = proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def _kill(*pids: int | None) -> None:
    for pid in pids:
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


async def _wait_dead(pid: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert not _alive(pid), f"process {pid} still runs"


async def test_a_new_driver_reattaches_to_a_process_the_last_one_left_running(tmp_path: Path) -> None:
    first, reports = ProcessDriver(tmp_path), Reports()
    p = pod(spec=_spec("sleep", "30", grace=1))
    await first.start(p, "c1", reports)
    pid = first.pid_of(p)
    assert pid is not None
    try:
        await first.shutdown(reports, stop_pods=False)
        assert _alive(pid), "a driver shutdown without stop_pods killed the pod"
        assert reports.tags == ["pod.created", "pod.running", "pod.ready"]

        second, again = ProcessDriver(tmp_path), Reports()
        restored = pod(spec=_spec("sleep", "30", grace=1))
        restored.phase, restored.ready, restored.command_id = "Running", True, "c1"
        await second.reattach([restored], again, nodes=frozenset({"n1"}))
        assert second.pid_of(restored) == pid and again.tags == []  # the log was right: nothing to say

        await second.stop(restored, "c2", again, grace_seconds=1, evict=False)
        await _wait_dead(pid)
        assert again.tags == ["pod.terminating", "pod.deleted"]
        assert not list((tmp_path / ".state").glob("*/pods/*.json")), "the pid record outlived the pod"
        await second.close()
    finally:
        _kill(pid)


@pytest.mark.parametrize("pidfd", [True, False], ids=["pidfd", "polling"])
async def test_a_reattached_process_that_exits_is_reported_failed_with_an_unknown_code(
    tmp_path: Path, pidfd: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not pidfd:
        monkeypatch.delattr(os, "pidfd_open", raising=False)  # an older kernel or another OS
    first, reports = ProcessDriver(tmp_path), Reports()
    p = pod(spec=_spec("sleep", "30"))
    await first.start(p, "c1", reports)
    pid = first.pid_of(p)
    assert pid is not None
    try:
        await first.shutdown(reports, stop_pods=False)
        second, again = ProcessDriver(tmp_path), Reports()
        p.phase, p.ready, p.command_id = "Running", True, "c1"
        await second.reattach([p], again, nodes=None)
        os.kill(pid, signal.SIGKILL)
        failed = await again.wait_for("pod.failed")
        assert "exit code is unknown" in failed.reason  # type: ignore[attr-defined]
        assert failed.command_id == "c1"
        await second.close()
    finally:
        _kill(pid)


async def test_a_recycled_pid_is_not_taken_for_the_pod(tmp_path: Path) -> None:
    """The record names a live process that is not ours (another start time): the pod is reported
    gone, and that process is left alone."""
    bystander = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        driver, reports = ProcessDriver(tmp_path), Reports()
        p = pod(spec=_spec("sleep", "30"))
        p.phase, p.ready, p.command_id = "Running", True, "c1"
        stat = proc_stat(bystander.pid)
        assert stat is not None
        record = PidRecord(namespace="default", name=p.name, node="n1", uid=p.uid, pid=bystander.pid,
                           start_time=stat[1] - 1, boot_id=current_boot_id(), command_id="c1",
                           argv=["sleep", "30"], log_path="", started_at=0.0)  # fmt: skip
        path = driver.records.path("n1", "default", p.name)
        path.parent.mkdir(parents=True)
        path.write_bytes(msgspec.json.encode(record))
        await driver.reattach([p], reports, nodes=frozenset({"n1"}))
        assert reports.tags == ["pod.failed"]
        assert "while the executor was down" in reports.events[0].reason  # type: ignore[attr-defined]
        assert _alive(bystander.pid) and driver.pid_of(p) is None and not path.exists()
        await driver.close()
        assert _alive(bystander.pid)
    finally:
        bystander.kill()
        bystander.wait(timeout=5)


async def test_reattach_starts_a_pod_never_started_and_stops_one_the_log_does_not_have(
    tmp_path: Path,
) -> None:
    first, reports = ProcessDriver(tmp_path), Reports()
    gone = _renamed(pod(spec=_spec("sleep", "30")))
    await first.start(gone, "c0", reports)
    stray = first.pid_of(gone)
    assert stray is not None
    started: int | None = None
    try:
        await first.shutdown(reports, stop_pods=False)
        second, again = ProcessDriver(tmp_path), Reports()
        pending = pod(spec=_spec("sleep", "30"))
        pending.command_id = "c1"  # created in the log, but its process was never started
        await second.reattach([pending], again, nodes=frozenset({"n1"}))
        started = second.pid_of(pending)
        assert again.tags == ["pod.running", "pod.ready"] and started is not None and _alive(started)
        await _wait_dead(stray)  # the log has no p-other: nothing else would ever stop it
        await second.close()
        await _wait_dead(started)
    finally:
        _kill(stray, started)


async def test_stop_pods_at_shutdown_stops_them_and_reports_them_failed(tmp_path: Path) -> None:
    driver, reports = ProcessDriver(tmp_path), Reports()
    p = pod(spec=_spec("sh", "-c", "trap 'exit 0' TERM; sleep 30 & wait", grace=2))
    await driver.start(p, "c1", reports)
    pid = driver.pid_of(p)
    assert pid is not None
    try:
        await driver.shutdown(reports, stop_pods=True)
        await _wait_dead(pid)
        failed = reports.events[-1]
        assert isinstance(failed, PodFailed) and failed.reason.startswith("Terminated")
        assert p.phase == "Failed"
    finally:
        _kill(pid)
