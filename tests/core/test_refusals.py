"""How a refusal is worded (``engine.core.refusals``): one shape whatever went wrong, bounded whatever the
input was, and a rejected-input record that keeps the exact bytes."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest

from engine.core.refusals import (
    MAX_KEPT_INPUT,
    MAX_LISTED_ERRORS,
    Refused,
    clipped,
    refusal,
    rejection_record,
    split_msgspec,
)
from engine.core.validation import FieldError, ManifestInvalid
from events.errors import InvalidInput, MalformedEvent
from events.ingest_wire import INVALID, MALFORMED, ErrorDetail

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("err", "code", "field", "fields"),
    [
        (MalformedEvent("Expected `object`", "$.data"), MALFORMED, "$.data", ["$.data"]),
        (InvalidInput("bad"), INVALID, "$", ["$"]),
        (
            ManifestInvalid([FieldError("$.data.name", "Invalid"), FieldError("$.data.labels", "Invalid")]),
            INVALID,
            "$.data.name",
            ["$.data.name", "$.data.labels"],
        ),
        (Refused("engine_only", "written by the engine only", "$.type"), "engine_only", "$.type", ["$.type"]),
    ],
)
def test_every_error_maps_onto_one_shape(err: InvalidInput, code: str, field: str, fields: list[str]) -> None:
    refused = refusal(err)
    assert (refused.reason_code, refused.field, [d.field for d in refused.errors]) == (code, field, fields)


def test_a_batch_item_is_named_by_index_and_line() -> None:
    refused = refusal(MalformedEvent("Expected `str`", "$.data.name"), index=3, line=7)
    assert refused.field == "$[3].data.name"
    assert refused.errors == [ErrorDetail(field="$[3].data.name", reason="Expected `str`", index=3, line=7)]
    assert str(refused) == "$[3].data.name: Expected `str`"


def test_a_long_list_is_summarised_and_clipped() -> None:
    many = ManifestInvalid([FieldError(f"$.data.labels.k{i}", "x" * 5000) for i in range(80)])
    refused = refusal(many)
    assert refused.reason.endswith("; and 75 more")
    short = clipped(refused)
    assert len(short.errors) == MAX_LISTED_ERRORS
    assert all(len(d.reason) <= 2000 for d in short.errors) and len(short.reason) <= 2000


def test_a_rejection_record_keeps_text_as_text_and_bytes_as_base64() -> None:
    refused = Refused(MALFORMED, "not JSON", "$")
    text = rejection_record("dse.ingest.event", b"{oops", refused, received_at=NOW)
    assert (text.input, text.input_encoding, text.input_truncated) == ("{oops", "utf-8", False)
    assert (text.endpoint, text.reason_code, text.received_at) == ("dse.ingest.event", MALFORMED, NOW)
    binary = rejection_record("dse.ingest.event", b"\xff\xfe", refused, received_at=NOW)
    assert binary.input_encoding == "base64" and base64.b64decode(binary.input) == b"\xff\xfe"
    big = rejection_record("dse.ingest.batch", b"a" * (MAX_KEPT_INPUT + 1), refused, received_at=NOW)
    assert big.input_truncated and len(big.input) == MAX_KEPT_INPUT


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Expected `str`, got `int` - at `$.data.name`", ("Expected `str`, got `int`", "$.data.name")),
        ("Input data was truncated", ("Input data was truncated", "$")),
    ],
)
def test_msgspec_errors_are_split_into_reason_and_path(text: str, expected: tuple[str, str]) -> None:
    assert split_msgspec(ValueError(text)) == expected
