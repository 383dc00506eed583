"""The packages must come from this repository: PyPI has unrelated packages named ``events`` and
``projections``, and an installed one shadowing ours would make every other test meaningless."""

from __future__ import annotations

import importlib
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "name",
    [
        "engine",
        "events",
        "projections",
        "engine.core",
        "engine.store",
        "engine.reconciler",
        "engine.executor",
    ],
)
def test_package_imports_from_this_repository(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__file__ is not None
    assert pathlib.Path(module.__file__).resolve().is_relative_to(ROOT), module.__file__


@pytest.mark.parametrize("name", ["engine", "events", "projections"])
def test_package_is_typed(name: str) -> None:
    assert (ROOT / name / "py.typed").is_file()
