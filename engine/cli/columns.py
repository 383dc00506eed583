"""``get``'s output options beyond the fixed tables: the ``-o`` value parsed once (``jsonpath=``,
``custom-columns=``), the custom-columns rows and the order of ``--sort-by`` (docs/output.md).
Pure: API-shaped objects in, rows or an order out.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

import msgspec

from engine.cli import jsonpath
from events.errors import InvalidInput

Fixed = Literal["table", "wide", "json", "yaml", "name"]
FIXED: tuple[Fixed, ...] = ("table", "wide", "json", "yaml", "name")


class Column(msgspec.Struct, frozen=True):
    header: str
    path: jsonpath.Template


class Output(msgspec.Struct, frozen=True):
    """What ``-o`` asked for: a fixed format, or a template (``jsonpath``) or columns."""

    kind: Literal["table", "wide", "json", "yaml", "name", "jsonpath", "custom-columns"]
    template: jsonpath.Template | None = None
    columns: tuple[Column, ...] = ()

    @property
    def objects(self) -> bool:
        """Whether the output is computed from API-shaped objects (not from the read model's rows)."""
        return self.kind in ("json", "yaml", "jsonpath", "custom-columns")


def parse_output(text: str) -> Output:
    """``-o``'s value; InvalidInput naming what is wrong (a bad template names its position)."""
    if text in FIXED:
        return Output(kind=text)
    if text.startswith("jsonpath="):
        source = text[len("jsonpath=") :]
        if not source:
            raise InvalidInput("jsonpath= needs a template, e.g. jsonpath={.items[*].metadata.name}", "-o")
        return Output(kind="jsonpath", template=jsonpath.parse(source))
    if text.startswith("custom-columns="):
        return Output(kind="custom-columns", columns=parse_columns(text[len("custom-columns=") :]))
    raise InvalidInput(
        f"{text!r} is not an output format ({', '.join(FIXED)}, jsonpath=TEMPLATE, "
        "custom-columns=NAME:PATH[,...])",
        "-o",
    )


def parse_columns(spec: str) -> tuple[Column, ...]:
    """``NAME:.metadata.name,READY:.status.numberReady`` (kubectl's relaxed paths: ``{}`` optional)."""
    if not spec.strip():
        raise InvalidInput("custom-columns= needs NAME:PATH[,NAME:PATH...]", "-o")
    columns = []
    for part in _split_columns(spec):
        header, sep, path = part.partition(":")
        if not sep or not header.strip() or not path.strip():
            raise InvalidInput(f"custom-columns: {part!r} is not NAME:PATH (e.g. NAME:.metadata.name)", "-o")
        try:
            template = jsonpath.parse(jsonpath.relaxed(path))
        except InvalidInput as e:
            raise InvalidInput(f"custom-columns column {header.strip()}: {e}", "-o") from None
        columns.append(Column(header.strip(), template))
    return tuple(columns)


def _split_columns(spec: str) -> list[str]:
    """Split on the commas between columns, not on those inside ``[...]`` or quotes of a path."""
    parts, depth, quote, start = [], 0, "", 0
    for i, c in enumerate(spec):
        if quote:
            quote = "" if c == quote else quote
        elif c in ("'", '"'):
            quote = c
        elif c in "[(":
            depth += 1
        elif c in "])":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(spec[start:i])
            start = i + 1
    parts.append(spec[start:])
    return parts


def cell(template: jsonpath.Template, obj: Any) -> str:
    """One custom-columns cell: the values found, comma-separated; ``<none>`` when nothing is."""
    found = [v for v in jsonpath.values(template, obj) if v is not None]
    if not found:
        return "<none>"
    return ",".join(jsonpath.text(v) for v in found)


def column_rows(columns: Sequence[Column], objs: Sequence[Any]) -> tuple[list[str], list[list[str]]]:
    """The headers and one row per object, for ``present.table`` to pad as the fixed tables are."""
    return [c.header for c in columns], [[cell(c.path, obj) for c in columns] for obj in objs]


# --- --sort-by --------------------------------------------------------------------------------------------


def sort_template(expression: str) -> jsonpath.Template:
    try:
        return jsonpath.parse(jsonpath.relaxed(expression))
    except InvalidInput as e:
        raise InvalidInput(f"--sort-by: {e}") from None


def _key(values: list[Any]) -> tuple[int, Any]:
    """Numbers before strings before the rest; numbers by value (so 10 sorts after 9)."""
    if not values or values[0] is None:
        return (0, 0)
    v = values[0]
    if isinstance(v, bool):
        return (3, int(v))
    if isinstance(v, int | float):
        return (1, v)
    if isinstance(v, str):
        return (2, v)
    return (4, json.dumps(v, sort_keys=True))


def sort_order(template: jsonpath.Template, objs: Sequence[Any], expression: str) -> list[int]:
    """The indices of ``objs`` in ``--sort-by`` order (stable; objects without the field first).
    InvalidInput when no object has the field at all, as kubectl refuses it."""
    keys = [_key(jsonpath.values(template, obj)) for obj in objs]
    if objs and all(k == (0, 0) for k in keys):
        raise InvalidInput(f"--sort-by: no object has the field {expression!r}")
    return sorted(range(len(objs)), key=keys.__getitem__)
