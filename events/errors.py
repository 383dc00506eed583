"""The project's one error tree. Every layer raises these, never a library's own exceptions.

DsctlError
├── TransientError      retry with backoff (connection lost, timeout, no JetStream leader)
│   └── DeadlineExceeded     retried for as long as the caller could wait, then given up
├── ConflictError       retry now, after re-reading (wrong expected sequence, lost lease)
├── FencedOff           stop acting in the role: another process holds it now; never retried
│   └── LeadershipLost       (engine.reconciler.fencing) a deposed leader's decision was refused
└── PermanentError      record, do not retry
    ├── InvalidInput    bad manifest, flag or event: says what is wrong and where
    │   └── MalformedEvent   a payload that does not decode; names the field
    └── NotFound
"""

from __future__ import annotations


class DsctlError(Exception):
    """Base of every error the project raises on purpose."""


class TransientError(DsctlError):
    """The operation may succeed if retried later."""


class DeadlineExceeded(TransientError):
    """A transient failure outlasted the caller's deadline. Still transient (a later run may succeed),
    but the retrying already happened: the message says for how long, and the last failure seen."""


class ConflictError(DsctlError):
    """Someone else wrote first (optimistic concurrency) or this process lost its lease."""


class FencedOff(DsctlError):
    """The store refused a write because another process now holds the role it was made in (a deposed
    leader's decision, fenced on the decision subject tree). Not a conflict: re-reading and retrying
    cannot succeed, and must not be tried; the caller stops acting in the role (a leader steps down)."""


class PermanentError(DsctlError):
    """Retrying will not help."""


class InvalidInput(PermanentError):
    """Input that does not meet the contract. ``field`` is a JSON path such as ``$.spec.selector``."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.reason = message


class MalformedEvent(InvalidInput):
    """An event or command payload that cannot be decoded into its type."""


class NotFound(PermanentError):
    """The named object or message does not exist."""
