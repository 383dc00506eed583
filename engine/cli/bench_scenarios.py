"""The ``dsctl bench`` scenarios that run the CLI's own verbs, so live in the CLI layer (``engine/bench``
may not import it: the layer contract in ``pyproject.toml``); the command line adds them to
``engine.bench.SCENARIOS``."""

from __future__ import annotations

from engine.bench.runner import Scenario
from engine.cli.bench_audit import audit_by_node
from engine.cli.bench_console import console_paint
from engine.cli.bench_reads import reads
from engine.cli.bench_verify import verify_effects

CLI_SCENARIOS: dict[str, Scenario] = {
    "reads": reads,
    "audit": audit_by_node,
    "console": console_paint,
    "verify": verify_effects,
}
