"""What the code cites lives in ``docs/``, and every citation resolves.

The code cites upstream DaemonSet behaviour as ``docs/upstream-semantics.md A.8`` (scenarios ``B.20``) and
JetStream facts as ``docs/jetstream.md §4.5``. These tests hold that every cited docs page exists, every
cited section is a heading (or, for scenarios, an entry) of its page, each citation names its page close
before it (so a bare ``A.8`` cannot creep back), and nothing points at files outside the repository.
Each checker is also run on a bad sample, so a check that stopped finding anything would fail too.
"""

from __future__ import annotations

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
UPSTREAM = ROOT / "docs" / "upstream-semantics.md"
JETSTREAM = ROOT / "docs" / "jetstream.md"
CODE_DIRS = ("engine", "events", "projections", "tests")
THIS = pathlib.Path(__file__).resolve()

#: how far before a section number its page must be named (``docs/... A.2, A.3, B.20`` fits)
LOOKBACK = 80

DOC_PATH = re.compile(r"\bdocs/[\w./-]+?\.md\b")
OUTSIDE = re.compile(r"\.\./shared|shared/spec|jetstream-notes|semantics doc\b")
UPSTREAM_CITE = re.compile(r"(?<![\w/.§])([AB]\.\d+)\b")
JETSTREAM_CITE = re.compile(r"§(\d+(?:\.\d+)*)")
MD_LINK = re.compile(r"\]\(([^)\s]+)\)")


def upstream_sections(text: str) -> set[str]:
    """``A.n`` headings and ``B.n`` scenario entries of the upstream page."""
    headings = re.findall(r"^#{2,4} (A\.\d+)\b", text, flags=re.MULTILINE)
    scenarios = re.findall(r"^- \*\*(B\.\d+)\*\*", text, flags=re.MULTILINE)
    return {*headings, *scenarios}


def jetstream_sections(text: str) -> set[str]:
    """``§n`` and ``§n.m`` headings of the JetStream page."""
    return set(re.findall(r"^#{2,4} §(\d+(?:\.\d+)*)\b", text, flags=re.MULTILINE))


def citation_problems(text: str, where: str, upstream: set[str], jetstream: set[str]) -> list[str]:
    """Everything wrong with the citations in one source file's text."""
    problems: list[str] = []

    def line(pos: int) -> str:
        return f"{where}:{text.count(chr(10), 0, pos) + 1}"

    for m in DOC_PATH.finditer(text):
        if not (ROOT / m.group(0)).is_file():
            problems.append(f"{line(m.start())}: cites {m.group(0)}, which does not exist")
    for m in OUTSIDE.finditer(text):
        problems.append(f"{line(m.start())}: points outside the repository ({m.group(0)!r})")
    for m in UPSTREAM_CITE.finditer(text):
        before = text[max(0, m.start() - LOOKBACK) : m.start()]
        if "docs/upstream-semantics.md" not in before:
            problems.append(f"{line(m.start())}: {m.group(1)} without docs/upstream-semantics.md before it")
        elif m.group(1) not in upstream:
            problems.append(f"{line(m.start())}: {m.group(1)} is not a section of docs/upstream-semantics.md")
    for m in JETSTREAM_CITE.finditer(text):
        before = text[max(0, m.start() - LOOKBACK) : m.start()]
        if "docs/jetstream.md" not in before:
            problems.append(f"{line(m.start())}: §{m.group(1)} without docs/jetstream.md before it")
        elif m.group(1) not in jetstream:
            problems.append(f"{line(m.start())}: §{m.group(1)} is not a section of docs/jetstream.md")
    return problems


def link_problems(text: str, where: pathlib.Path) -> list[str]:
    """Relative links of a markdown page that lead nowhere, and references outside the repository."""
    problems = [
        f"{where.name}: points outside the repository ({m.group(0)!r})" for m in OUTSIDE.finditer(text)
    ]
    for m in MD_LINK.finditer(text):
        target = m.group(1).split("#", 1)[0]
        if not target or "://" in target or target.startswith("mailto:"):
            continue
        if not (where.parent / target).exists():
            problems.append(f"{where.name}: link to {m.group(1)}, which does not exist")
    return problems


def _sources() -> list[pathlib.Path]:
    files = [p for d in CODE_DIRS for p in sorted((ROOT / d).rglob("*.py"))]
    return [p for p in files if p.resolve() != THIS and ".venv" not in p.parts]


def test_the_cited_pages_have_their_sections() -> None:
    upstream = upstream_sections(UPSTREAM.read_text())
    assert {f"A.{n}" for n in range(1, 13)} <= upstream
    assert {f"B.{n}" for n in range(1, 28)} <= upstream
    jetstream = jetstream_sections(JETSTREAM.read_text())
    assert {str(n) for n in range(8)} <= jetstream
    assert {"0.3", "1.1", "1.2", "1.3", "4.5"} <= jetstream


def test_every_citation_in_the_code_resolves_in_docs() -> None:
    upstream = upstream_sections(UPSTREAM.read_text())
    jetstream = jetstream_sections(JETSTREAM.read_text())
    problems: list[str] = []
    for path in _sources():
        where = str(path.relative_to(ROOT))
        problems += citation_problems(path.read_text(), where, upstream, jetstream)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"], ids=str)
def test_docs_links_resolve_and_stay_inside(page: pathlib.Path) -> None:
    problems = link_problems(page.read_text(), page)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("(docs/upstream-semantics.md A.13)", "not a section"),
        ("(docs/upstream-semantics.md B.99)", "not a section"),
        ("docs/upstream-semantics.md B.1-B.28", "B.28 is not a section"),
        ("the fold (A.8) decides", "without docs/upstream-semantics.md"),
        ("see docs/jetstream.md §9.9", "not a section of docs/jetstream.md"),
        ("the reader resets (§4.5)", "without docs/jetstream.md"),
        ("as in jetstream-notes section 4", "outside the repository"),
        ("see ../shared/spec/architecture.md", "outside the repository"),
        ("docs/no-such-page.md", "does not exist"),
    ],
)
def test_a_bad_citation_is_caught(text: str, expected: str) -> None:
    upstream = upstream_sections(UPSTREAM.read_text())
    jetstream = jetstream_sections(JETSTREAM.read_text())
    problems = citation_problems(text, "sample.py", upstream, jetstream)
    assert any(expected in p for p in problems), problems


def test_good_citations_pass() -> None:
    upstream = upstream_sections(UPSTREAM.read_text())
    jetstream = jetstream_sections(JETSTREAM.read_text())
    text = (
        "(docs/upstream-semantics.md A.2, A.3) and docs/upstream-semantics.md B.1-B.27;\n"
        "(``docs/jetstream.md §1.2``, ``§1.3``), docs/architecture.md"
    )
    assert citation_problems(text, "sample.py", upstream, jetstream) == []


def test_a_broken_docs_link_is_caught(tmp_path: pathlib.Path) -> None:
    page = tmp_path / "page.md"
    assert link_problems("[x](missing.md) [y](https://example.org/a.md)", page) == [
        "page.md: link to missing.md, which does not exist"
    ]
