"""An ingest service on the test's real server, over fresh streams; stopped before the store closes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from engine.ingest.service import IngestService, serve_ingest


@pytest.fixture
async def ingest(nc: Any, jetstream_store: Any) -> AsyncIterator[IngestService]:
    service = await serve_ingest(nc, jetstream_store, rejected_timeout=2.0, append_budget=1.0)
    try:
        yield service
    finally:
        await service.stop()
