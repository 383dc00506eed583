"""No secret in a log line: a structlog processor that masks every string of every event, and a filter
for the standard ``logging`` records nats-py writes.

Why a processor and not care at each call site: a secret reaches a log through values nobody thinks
of as secret (an exception's text naming a URL, a URL list in an error, a reconnect callback printing
the server it reached: a password was once logged on reconnect). Masking the rendered event
catches all of them: user information in any URL (``nats://user:pass@``, ``nats://token@``, several
URLs in one string) and every secret the connection registered (``engine.store.settings.redact``).
Installed by ``install`` after ``engine.runtime.logs.configure``, just before the renderer, so it also
sees the formatted exception.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

import structlog

from engine.store.settings import redact


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_clean(v) for v in value)
    if isinstance(value, BaseException):
        return redact(f"{type(value).__name__}: {value}")
    return value


def mask_secrets(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """The structlog processor: every value, nested ones included, masked."""
    for key, value in list(event.items()):
        event[key] = _clean(value)
    return event


#: the standard loggers nats-py 2.16 writes to
NATS_LOGGERS = ("nats", "nats.aio.client", "nats.js.kv", "nats.js.client", "nats.micro.service")


class _LoggingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = ()
        if record.exc_info and record.exc_info[1] is not None:
            # the traceback is rendered from exc_info later: render it masked now instead
            text = logging.Formatter().formatException(record.exc_info)
            record.msg = f"{record.msg}\n{redact(text)}"
            record.exc_info = None
            record.exc_text = None
        return True


def install() -> None:
    """Add ``mask_secrets`` to the configured structlog chain (once), and mask stdlib log records."""
    config = structlog.get_config()
    processors = list(config["processors"])
    if mask_secrets not in processors:
        processors.insert(max(len(processors) - 1, 0), mask_secrets)
        structlog.configure(processors=processors)
    # a logger's filters see only its own records, a handler's every record it writes: both, for the
    # loggers nats-py writes to and whatever handles the records (the last resort when none is set)
    loggers = [logging.getLogger(n) for n in ("", *NATS_LOGGERS)]
    handlers = [h for lg in loggers for h in lg.handlers]
    if logging.lastResort is not None:
        handlers.append(logging.lastResort)
    for target in [*loggers, *handlers]:
        if not any(isinstance(f, _LoggingFilter) for f in target.filters):
            target.addFilter(_LoggingFilter())
