"""The CLI's failures keep their kind: a pod delete that NATS could not take is transient (or whatever
NATS said), not a conflict; a ``rollout status`` that ran out of time is transient, not bad input."""

from __future__ import annotations

from typing import Any

import nats.errors
import nats.js.errors
import pytest

from engine.cli.operations import request_pod_delete
from engine.cli.rollout import TimedOut
from engine.store.jetstream_api import JetStreamUnavailable
from events.errors import ConflictError, InvalidInput, PermanentError, TransientError
from projections.model import PodState

POD = PodState(namespace="default", name="web-abcde", uid="u1", node="n1")


class _JetStream:
    def __init__(self, failure: BaseException | None) -> None:
        self.failure = failure
        self.published: list[tuple[str, dict[str, str]]] = []

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str]) -> None:
        if self.failure is not None:
            raise self.failure
        self.published.append((subject, headers))


class _Client:
    def __init__(self, failure: BaseException | None = None) -> None:
        self.js = _JetStream(failure)

    def jetstream(self) -> _JetStream:
        return self.js


async def test_a_delete_is_one_command_to_the_pods_node() -> None:
    nc: Any = _Client()
    cid = await request_pod_delete(nc, POD)
    assert nc.js.published == [("dse.cmd.n1", {"Nats-Msg-Id": cid})]


@pytest.mark.parametrize(
    ("failure", "kind"),
    [
        (nats.errors.TimeoutError(), JetStreamUnavailable),
        (nats.errors.NoRespondersError(), JetStreamUnavailable),
        (nats.errors.ConnectionClosedError(), JetStreamUnavailable),
        (nats.js.errors.APIError(code=503, err_code=10008, description="no leader"), TransientError),
        (nats.errors.BadSubjectError(), PermanentError),
    ],
)  # fmt: skip
async def test_a_failed_delete_keeps_the_kind_nats_gave_it(failure: BaseException, kind: type) -> None:
    with pytest.raises(kind) as info:
        await request_pod_delete(_Client(failure), POD)  # type: ignore[arg-type]
    assert not isinstance(info.value, ConflictError)
    assert str(info.value).startswith("could not send the delete to node n1")
    assert info.value.__cause__ is failure


def test_a_rollout_status_timeout_is_transient_not_invalid_input() -> None:
    err = TimedOut("timed out waiting for the condition")
    assert isinstance(err, TransientError) and not isinstance(err, InvalidInput)
    assert str(err) == "timed out waiting for the condition"
