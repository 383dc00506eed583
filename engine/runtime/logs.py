"""structlog set-up, one place: JSON lines in production, a readable console in development.

``DSCTL_LOG_FORMAT=json|console`` chooses (default: console on a terminal, JSON otherwise);
``DSCTL_LOG_LEVEL`` sets the level (default info). ``dsctl up`` sends logs to a file so they do not
tear its live view. Documented for operators in docs/deploy.md, "Metrics and logs".
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

import structlog


def configure(*, stream: TextIO | None = None, level: str | None = None, fmt: str | None = None) -> None:
    out = stream or sys.stderr
    chosen = (fmt or os.environ.get("DSCTL_LOG_FORMAT") or ("console" if out.isatty() else "json")).lower()
    lvl_name = (level or os.environ.get("DSCTL_LOG_LEVEL") or "info").upper()
    lvl = logging.getLevelNamesMapping().get(lvl_name, logging.INFO)
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if chosen == "json"
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
