"""Text to manifest documents: YAML (multi-document) or JSON, with ``List`` objects flattened.

YAML is read as YAML 1.2 reads booleans (only ``true``/``false``), not 1.1: ``yes``, ``no``, ``on`` and
``off`` stay strings, so a label ``enabled: on`` means what the user typed.

Tabs: YAML forbids tabs in indentation, and kubectl refuses such a file. People paste manifests from
editors that insert them (seed 001 is one), so when parsing fails *because of a tab*, the tabs in each
line's leading whitespace are expanded to 8-column tab stops and the text is parsed again. Tabs inside
values are left alone. A deliberate leniency: the alternative is refusing input whose meaning is clear.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import msgspec
import yaml

from engine.core.validation import FieldError, ManifestInvalid


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)

_LEADING = re.compile(r"^[ \t]+", re.MULTILINE)


def expand_leading_tabs(text: str) -> str:
    return _LEADING.sub(lambda m: m.group(0).expandtabs(8), text)


def _is_tab_error(error: yaml.YAMLError) -> bool:
    return "\\t" in str(error) or "tab" in str(error).lower()


def _parse_yaml(text: str) -> list[Any]:
    try:
        return list(yaml.load_all(text, Loader=_Loader))
    except yaml.YAMLError as first:
        if "\t" not in text or not _is_tab_error(first):
            raise ManifestInvalid([FieldError("", f"not valid YAML: {first}")]) from first
        try:
            return list(yaml.load_all(expand_leading_tabs(text), Loader=_Loader))
        except yaml.YAMLError as second:
            raise ManifestInvalid([FieldError("", f"not valid YAML: {second}")]) from second


def _parse_json(text: str) -> list[Any]:
    try:
        data = msgspec.json.decode(text.encode())
    except msgspec.DecodeError as error:
        raise ManifestInvalid([FieldError("", f"not valid JSON: {error}")]) from error
    return data if isinstance(data, list) else [data]


def _flatten(doc: Any) -> Iterator[Any]:
    if (
        isinstance(doc, dict)
        and str(doc.get("kind", "")).endswith("List")
        and isinstance(doc.get("items"), list)
    ):
        for item in doc["items"]:
            yield from _flatten(item)
    elif doc is not None:
        yield doc


def load_documents(text: str) -> list[dict[str, Any]]:
    """Every object in ``text``, in order (``kind: List`` / ``NodeList`` items inlined, empty documents
    skipped). Raises ``ManifestInvalid`` if the text does not parse or holds something not an object."""
    stripped = text.lstrip()
    raw = _parse_json(stripped) if stripped.startswith(("{", "[")) else _parse_yaml(text)
    docs: list[dict[str, Any]] = []
    for i, doc in enumerate(d for r in raw for d in _flatten(r)):
        if not isinstance(doc, dict):
            raise ManifestInvalid([FieldError("", f"document {i} is not an object")], document=i)
        docs.append(doc)
    return docs
