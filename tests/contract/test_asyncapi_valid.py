"""``dsctl schema -o asyncapi`` is a valid AsyncAPI 3.0.0 document: checked against the specification's
own JSON Schema (vendored from the npm package @asyncapi/specs, ``tests/contract/asyncapi/SOURCE.md``)
with ``jsonschema``, and by @asyncapi/parser itself where node and the parser are installed
(``tests/contract/asyncapi/install-parser.sh``). The object-style ``discriminator`` the document once
carried made the parser refuse it with 28 errors; the test of the validator shows it would catch that.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from engine.ingest.contract import schema_text

jsonschema = pytest.importorskip("jsonschema")

HERE = Path(__file__).parent / "asyncapi"
SPEC = json.loads((HERE / "asyncapi-3.0.0.schema.json").read_text())
PARSER_DIR = Path(
    os.environ.get("DSCTL_ASYNCAPI_PARSER_DIR", Path.home() / ".cache" / "dsctl" / "asyncapi-parser")
)
PARSER_REQUIRED = os.environ.get("DSCTL_ASYNCAPI_PARSER") == "required"


def document() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(schema_text("asyncapi"))
    return doc


def spec_errors(doc: dict[str, Any]) -> list[str]:
    validator = jsonschema.validators.validator_for(SPEC)(SPEC)
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message[:200]}" for e in validator.iter_errors(doc)]


def test_the_document_declares_the_version_of_the_vendored_specification() -> None:
    assert document()["asyncapi"] == "3.0.0" == SPEC["title"].split()[1]


def test_the_document_is_valid_against_the_asyncapi_3_specification() -> None:
    assert spec_errors(document()) == []


def test_the_specification_refuses_an_object_discriminator() -> None:
    """The validator is not vacuous: the shape msgspec emits (OpenAPI 3.1's discriminator object) is
    what the parser refused."""
    doc = copy.deepcopy(document())
    doc["components"]["schemas"]["Command"]["discriminator"] = {"propertyName": "kind"}
    assert any("discriminator" in e for e in spec_errors(doc))
    assert document()["components"]["schemas"]["Command"]["discriminator"] == "kind"


def test_the_ingest_endpoints_carry_the_ingest_line_schema() -> None:
    doc = document()
    messages = doc["components"]["messages"]
    assert messages["ingest_request"]["payload"] == {"$ref": "#/components/schemas/IngestLine"}
    batch = messages["ingest_batch_request"]["payload"]
    assert batch["items"] == {"$ref": "#/components/schemas/IngestLine"} and batch["maxItems"] == 1000
    line = doc["components"]["schemas"]["IngestLine"]
    assert line["additionalProperties"] is False and len(line["oneOf"]) >= 8


def _parser() -> tuple[str, Path] | None:
    node = shutil.which("node")
    script = PARSER_DIR / "validate.mjs"
    if (
        node is None
        or not (PARSER_DIR / "node_modules" / "@asyncapi" / "parser").is_dir()
        or not script.exists()
    ):
        return None
    return node, script


@pytest.mark.slow
def test_asyncapi_parser_accepts_the_document(tmp_path: Path) -> None:
    found = _parser()
    if found is None:
        message = (
            "node or @asyncapi/parser missing (run tests/contract/asyncapi/install-parser.sh; "
            f"looked in {PARSER_DIR})"
        )
        if PARSER_REQUIRED:
            pytest.fail(message)
        pytest.skip(message)
    node, script = found
    path = tmp_path / "asyncapi.json"
    path.write_text(schema_text("asyncapi"))
    run = subprocess.run([node, str(script), str(path)], capture_output=True, text=True, timeout=120)
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    errors = [d for d in lines if d.get("severity") == 0]
    assert run.returncode == 0 and not errors, run.stdout[-4000:] + run.stderr[-2000:]
    assert lines[-1] == {"errors": 0, "document": True}


def test_the_asyncapi_ingest_schema_gives_the_json_schemas_verdicts() -> None:
    """The hoisted copy (draft-07, as an AsyncAPI Schema Object) still refuses what ingest refuses."""
    doc = document()
    line = jsonschema.Draft7Validator({"$ref": "#/components/schemas/IngestLine", **doc})
    good = {
        "type": "node.registered",
        "data": {"name": "node-7", "taints": [{"key": "k", "effect": "NoExecute"}]},
    }
    assert line.is_valid(good)
    assert not line.is_valid({**good, "data": {"name": "Node_7"}})
    assert not line.is_valid({**good, "data": {"name": "node-7", "colour": "blue"}})
    assert not line.is_valid({**good, "data": {"name": "n", "taints": [{"key": "k", "effect": "Sometimes"}]}})


def test_every_json_schema_of_the_contract_is_valid_draft_2020_12() -> None:
    doc = json.loads(schema_text("json"))
    schemas = [doc["envelope"], doc["command"], doc["ingest_line"], doc["ingest_batch"], doc["rejected"]]
    for schema in [*schemas, *doc["events"].values(), *doc["ingest"].values()]:
        jsonschema.Draft202012Validator.check_schema(schema)
