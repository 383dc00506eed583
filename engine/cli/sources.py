"""What ``apply -f`` and ``delete -f`` read: files, directories, ``-`` and repeated ``-f``, as kubectl.

A directory reads its ``*.yaml``, ``*.yml`` and ``*.json`` files in name order (subdirectories only with
``-R``), every ``-f`` is read in the order given, and ``-`` is stdin. Each file may hold several
documents or a ``kind: List``. DaemonSets and Nodes are validated here, before anything is appended, so
an invalid one anywhere appends nothing and the error can say which file and document it came from;
every other object becomes a ``skipped`` line (or, with ``--strict``, a refusal).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from engine.cli.apply import parse
from engine.core.documents import load_documents
from engine.core.foreign import is_managed, reference, skipped_line
from engine.core.validation import ManifestInvalid
from events.errors import InvalidInput

EXTENSIONS = (".yaml", ".yml", ".json")


@dataclass(frozen=True)
class Source:
    name: str
    text: str


@dataclass
class Gathered:
    """The managed objects as one JSON list (what ``Applier`` and ``delete_file`` read) and, in input
    order, one entry per object: a skipped line, or None where a managed object's own line goes."""

    managed: list[dict[str, Any]] = field(default_factory=list)
    entries: list[str | None] = field(default_factory=list)

    @property
    def text(self) -> str:
        return msgspec.json.encode(self.managed).decode()

    def lines(self, managed_lines: Sequence[str]) -> list[str]:
        """The output in input order: managed lines fill the None slots; if the counts differ (they
        should not), skipped lines follow the managed ones rather than be lost."""
        if len(managed_lines) != self.entries.count(None):
            return [*managed_lines, *(e for e in self.entries if e is not None)]
        it = iter(managed_lines)
        return [next(it) if e is None else e for e in self.entries]


def files_in(directory: Path, recursive: bool) -> list[Path]:
    """kubectl's order: entries by name; files with a manifest extension; subdirectories only if
    ``recursive`` (descended where their name sorts)."""
    found: list[Path] = []
    for entry in sorted(directory.iterdir(), key=lambda p: p.name):
        if entry.is_dir():
            if recursive:
                found.extend(files_in(entry, recursive))
        elif entry.suffix in EXTENSIONS:
            found.append(entry)
    return found


def gather(paths: Sequence[str], recursive: bool, stdin: Callable[[], str] | None = None) -> list[Source]:
    """Every file named, in order. A path that does not exist, or a directory with no manifest in
    it, is an error (as kubectl's "error reading ... no such file" / "recognized file extensions")."""
    read_stdin = stdin or sys.stdin.read
    sources: list[Source] = []
    for path in paths:
        if path == "-":
            sources.append(Source("-", read_stdin()))
            continue
        p = Path(path)
        if p.is_dir():
            files = files_in(p, recursive)
            if not files:
                raise InvalidInput(
                    f'no manifest in the directory "{path}" (recognized file extensions are '
                    f"{', '.join(EXTENSIONS)}{'' if recursive else '; -R descends into subdirectories'})",
                    "-f",
                )
            sources.extend(Source(str(f), f.read_text()) for f in files)
        elif p.is_file():
            sources.append(Source(path, p.read_text()))
        else:
            raise InvalidInput(f'the path "{path}" does not exist', "-f")
    return sources


def collect(sources: Sequence[Source], namespace: str | None, strict: bool) -> Gathered:
    """Validate every managed object and sort out the rest, before anything is appended."""
    gathered = Gathered()
    for source in sources:
        try:
            docs = load_documents(source.text)
        except ManifestInvalid as err:
            raise InvalidInput(f"{source.name}: {err}; nothing was applied", "-f") from err
        for index, doc in enumerate(docs):
            if not is_managed(doc):
                if strict:
                    raise InvalidInput(
                        f"{source.name}: document {index}: {reference(doc)} is not managed by dsctl "
                        "(only DaemonSets and Nodes are; drop --strict to skip it); nothing was applied",
                        "--strict",
                    )
                gathered.entries.append(skipped_line(doc))
                continue
            try:
                parse(msgspec.json.encode(doc).decode(), namespace)
            except ManifestInvalid as err:
                raise InvalidInput(
                    f"{source.name}: document {index}: {err}; nothing was applied", "-f"
                ) from err
            gathered.managed.append(doc)
            gathered.entries.append(None)
    return gathered
