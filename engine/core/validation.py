"""Validation errors with field paths, and the checker that collects them.

Like the API server, validation reports *every* problem at once, each with the path of the field it
concerns (``spec.selector``, ``spec.template.spec.tolerations[0].effect``) and a message starting with
the API server's error type (``Required value``, ``Invalid value``, ``Unsupported value``, ``Forbidden``).

Scalars where Kubernetes wants strings (label, annotation and nodeSelector values, selector values,
taint and toleration values): YAML reads ``gpu: true`` as a boolean and ``zone: 1`` as a number, and the
API server then refuses the manifest ("cannot unmarshal bool into ... string"). Here booleans and
integers are coerced to the text the user most plausibly meant (``true``/``false``, decimal digits) and
a null becomes the empty string; floats, lists and objects are refused with the field's path, since
their text form is ambiguous (``1.10`` reads as ``1.1``). A deliberate leniency, documented here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from events.errors import InvalidInput


class FieldError(msgspec.Struct, frozen=True):
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ManifestInvalid(InvalidInput):
    """A manifest the API server would refuse; ``errors`` lists every problem with its field path."""

    def __init__(
        self, errors: Sequence[FieldError], *, kind: str = "", name: str = "", document: int = 0
    ) -> None:
        self.errors = tuple(errors)
        self.kind = kind
        self.name = name
        self.document = document
        what = f"{kind} {name!r} is invalid: " if kind or name else ""
        super().__init__(what + "; ".join(str(e) for e in self.errors))
        self.field = (
            self.errors[0].path if self.errors else ""
        )  # the first problem's field, as InvalidInput has

    @property
    def paths(self) -> list[str]:
        return [e.path for e in self.errors]


def join(path: str, child: str | int) -> str:
    if isinstance(child, int):
        return f"{path}[{child}]"
    return f"{path}.{child}" if path else child


class Checker:
    """Collects ``FieldError``s while reading a raw (decoded YAML/JSON) object."""

    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def add(self, path: str, message: str) -> None:
        self.errors.append(FieldError(path, message))

    def required(self, path: str) -> None:
        self.add(path, "Required value")

    def invalid(self, path: str, value: Any, message: str) -> None:
        self.add(path, f"Invalid value: {_show(value)}: {message}")

    def unsupported(self, path: str, value: Any, supported: Sequence[str]) -> None:
        choices = ", ".join(f'"{s}"' for s in supported)
        self.add(path, f"Unsupported value: {_show(value)}: supported values: {choices}")

    def forbidden(self, path: str, message: str) -> None:
        self.add(path, f"Forbidden: {message}")

    def mapping(self, value: Any, path: str, *, required: bool = False) -> dict[str, Any]:
        if value is None:
            if required:
                self.required(path)
            return {}
        if not isinstance(value, dict):
            self.invalid(path, value, "must be an object")
            return {}
        return value

    def sequence(self, value: Any, path: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.invalid(path, value, "must be a list")
            return []
        return value

    def string(self, value: Any, path: str, *, required: bool = False) -> str:
        """A scalar coerced to text (see the module docstring); ``""`` when absent or refused."""
        if value is None or value == "":
            if required:
                self.required(path)
            return ""
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int):
            return str(value)
        if isinstance(value, str):
            return value
        self.invalid(path, value, "must be a string (quote the value in YAML)")
        return ""

    def string_map(self, value: Any, path: str) -> dict[str, str]:
        raw = self.mapping(value, path)
        return {self.string(k, path): self.string(v, join(path, str(k))) for k, v in raw.items()}

    def string_list(self, value: Any, path: str) -> list[str]:
        return [self.string(v, join(path, i)) for i, v in enumerate(self.sequence(value, path))]

    def integer(self, value: Any, path: str, *, minimum: int | None = 0) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.invalid(path, value, "must be an integer")
            return None
        if minimum is not None and value < minimum:
            self.invalid(path, value, f"must be greater than or equal to {minimum}")
        return value

    def boolean(self, value: Any, path: str) -> bool:
        if value is None:
            return False
        if not isinstance(value, bool):
            self.invalid(path, value, "must be a boolean")
            return False
        return value

    def raise_if_any(self, *, kind: str = "", name: str = "", document: int = 0) -> None:
        if self.errors:
            raise ManifestInvalid(self.errors, kind=kind, name=name, document=document)


def _show(value: Any) -> str:
    text = msgspec.json.encode(value).decode() if _encodable(value) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _encodable(value: Any) -> bool:
    try:
        msgspec.json.encode(value)
    except (TypeError, msgspec.EncodeError):
        return False
    return True
