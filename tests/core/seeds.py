"""Extract the Kubernetes manifests from the seed notes (``tests/core/seeds``, copied from the shared
seeds so the suite runs anywhere): fenced ```yaml blocks, and unfenced blocks that start with
``apiVersion:`` at the left margin and run while lines still look like YAML. Blocks without both
``apiVersion`` and ``kind`` (shell sessions, fragments) are not manifests."""

from __future__ import annotations

import pathlib
import re

SEEDS = pathlib.Path(__file__).parent / "seeds"
_FENCE = re.compile(r"^```\s*(\w*)[^\n]*\n(.*?)^```", re.S | re.M)
_YAMLISH = re.compile(r"""^(\s*(#.*|- .*|-|[\w./"'-]+:(\s.*)?)|\s*)$""")


def _is_manifest(block: str) -> bool:
    return bool(re.search(r"^apiVersion:", block, re.M) and re.search(r"^kind:", block, re.M))


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in _FENCE.finditer(text)]


def unfenced_blocks(text: str) -> list[str]:
    outside = _FENCE.sub("", text)
    blocks: list[str] = []
    current: list[str] | None = None
    for line in outside.splitlines():
        if current is None:
            if line.startswith("apiVersion:"):
                current = [line]
        elif _YAMLISH.match(line):
            current.append(line)
        else:
            blocks.append("\n".join(current))
            current = None
    if current is not None:
        blocks.append("\n".join(current))
    return blocks


def manifests(path: pathlib.Path) -> list[str]:
    text = path.read_text()
    found = [
        block for lang, block in fenced_blocks(text) if lang in ("yaml", "yml", "") and _is_manifest(block)
    ]
    found += [block for block in unfenced_blocks(text) if _is_manifest(block)]
    return found


def fragments(path: pathlib.Path) -> list[str]:
    """Fenced YAML-looking blocks that are not whole manifests (e.g. seed 003's nodeSelector snippet)."""
    return [
        block
        for lang, block in fenced_blocks(path.read_text())
        if lang in ("yaml", "yml", "")
        and not _is_manifest(block)
        and re.search(r"^\s*\w+:", block, re.M)
        and "$ " not in block
    ]


def seed(prefix: str) -> pathlib.Path:
    (path,) = SEEDS.glob(f"{prefix}_*.txt")
    return path
