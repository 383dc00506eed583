"""An executor reports its pods' state again after a reconnect, with the ids of the first reports, so the
log stores each state once; and an executor that stops mid-delete has the delete finished by the next."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

from engine.executor.drivers.process import ProcessDriver
from engine.executor.drivers.sim import SimDriver
from engine.executor.executor import Executor, LogReporter
from events.k8s import PodTemplate, TemplateMetadata
from events.types import CreatePod, DeletePod, PodEvent
from projections.model import ClusterState, PodState


class Recorder:
    """The log as an appender sees it: each report's event and id."""

    def __init__(self) -> None:
        self.reports: list[tuple[str, PodEvent]] = []

    async def __call__(self, event: PodEvent, *, event_id: str, causation_id: str) -> None:
        self.reports.append((event_id, event))

    @property
    def ids(self) -> list[str]:
        return [i for i, _ in self.reports]


def _template(*command: str) -> PodTemplate:
    spec = {"containers": [{"name": "c", "image": "x", "command": list(command)}],
            "terminationGracePeriodSeconds": 1}  # fmt: skip
    return PodTemplate(metadata=TemplateMetadata(labels={"app": "x"}), spec=spec)


def _create(template: PodTemplate) -> CreatePod:
    return CreatePod(id="create-1", node="n1", namespace="default", pod_name="p-abcde", pod_uid="u1",
                     owner_uid="o", owner_name="ds", revision_hash="h", template=template)  # fmt: skip


async def test_reasserting_repeats_the_first_reports_ids_for_a_running_process(tmp_path: Path) -> None:
    log = Recorder()
    driver = ProcessDriver(tmp_path)
    executor = Executor(driver, LogReporter(log, "t"), nodes=frozenset({"n1"}))
    await executor.handle(_create(_template("sleep", "30")))
    pid = driver.pid_of(executor.pods["default/p-abcde"])
    try:
        first = list(log.ids)
        assert [e.TAG for _, e in log.reports] == ["pod.created", "pod.running", "pod.ready"]
        assert await executor.reassert() == 1
        assert log.ids[len(first) :] == first[1:]  # the same ids: the server drops them as duplicates
    finally:
        await executor.close(stop_pods=True)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


async def test_a_deleted_pod_is_not_reported_again() -> None:
    log = Recorder()
    executor = Executor(SimDriver(), LogReporter(log, "t"), nodes=frozenset({"n1"}))
    await executor.handle(_create(_template("true")))
    await executor.handle(DeletePod(id="delete-1", node="n1", namespace="default", pod_name="p-abcde"))
    before = len(log.ids)
    assert await executor.reassert() == 0
    assert len(log.ids) == before
    await executor.close()


async def test_a_delete_interrupted_by_an_executor_stop_is_finished_by_the_next_one() -> None:
    """The interrupted delete's command id is already in the log (on ``pod.terminating``), so its
    redelivery is skipped as applied: the restarted executor must finish it by itself."""
    state = ClusterState()
    state.pods["default/p-abcde"] = PodState(
        namespace="default", name="p-abcde", uid="u1", node="n1", phase="Running", ready=True,
        deletion_timestamp=1.0, command_id="create-1",
    )  # fmt: skip
    log = Recorder()
    executor = Executor(SimDriver(), LogReporter(log, "t"), nodes=frozenset({"n1"}))
    resume = executor.recover(state)
    await executor.restore(resume)
    for _ in range(100):
        if "pod.deleted" in [e.TAG for _, e in log.reports]:
            break
        await asyncio.sleep(0.01)
    assert [e.TAG for _, e in log.reports] == ["pod.deleted"]
    assert "default/p-abcde" not in executor.pods
    await executor.close()
