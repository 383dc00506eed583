"""The executor drivers: what the simulated and the process driver report, and when."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from engine.shell.drivers.base import LocalPod
from engine.shell.drivers.process import ProcessDriver
from engine.shell.drivers.sim import SimDriver
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
