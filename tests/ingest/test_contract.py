"""``dsctl schema -o json|asyncapi``: the pure documents (tested in ``tests/events/test_asyncapi.py``)
printed as JSON, stamped with the installed package's version."""

from __future__ import annotations

import json

import pytest

from engine.ingest.contract import schema_text
from engine.ingest.service import service_version
from events.asyncapi import asyncapi_document
from events.errors import InvalidInput
from events.schema import json_schema_document


def test_the_printed_documents_are_the_pure_ones_with_the_package_version() -> None:
    version = service_version()
    assert json.loads(schema_text("json")) == json_schema_document(version)
    assert json.loads(schema_text()) == json_schema_document(version)
    assert json.loads(schema_text("asyncapi")) == asyncapi_document(version)
    assert schema_text("asyncapi").endswith("}\n")


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(InvalidInput, match="choose json or asyncapi"):
        schema_text("yaml")  # type: ignore[arg-type]
