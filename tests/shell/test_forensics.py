"""``explain node --at``: the past is judged by its own clock, not by the wall clock."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

import pytest

from engine.cli.explain import explain_node
from tests.e2e.recorded import T0, record_decision, setup

pytestmark = pytest.mark.integration


async def test_explain_node_at_a_past_sequence_uses_the_time_of_that_state(jetstream_store: Any) -> None:
    # a create recorded (and never answered) at T0+1: at that point of the log it is in flight, so the
    # engine was waiting for it. The wall clock is months later, when it would have long expired and
    # the engine would decide a create again: explaining the past with today's clock says the wrong thing
    await setup(jetstream_store, "n1", "n2")
    seq, decision = await record_decision(jetstream_store, T0 + 1)
    assert [c.node for c in decision.commands] == ["n1", "n2"]
    out = io.StringIO()
    assert await explain_node(jetstream_store, None, "n1", "default/web", out, at=seq) == 0
    text = out.getvalue()
    engine_line = next(line for line in text.splitlines() if line.startswith("the engine now:"))
    assert "wait" in engine_line and "still in flight" in engine_line and "CommandInFlight" in engine_line, (
        text
    )
    # the same point named by a time (the store's clock: now, the end of this log)
    out = io.StringIO()
    await explain_node(jetstream_store, None, "n1", "default/web", out, at=datetime.now(UTC))
    assert "still in flight" in out.getvalue(), out.getvalue()
