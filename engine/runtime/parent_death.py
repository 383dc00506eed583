"""Children that must not outlive the process that started them (an embedded nats-server, the
read-ahead reader, the soak's engine process): a killed parent would otherwise leave them running,
holding ports and memory, with nobody reading their output."""

from __future__ import annotations

import contextlib
import ctypes
import signal

#: prctl's PR_SET_PDEATHSIG
_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: signal.Signals = signal.SIGTERM) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies. Called in the child (as a
    ``preexec_fn`` before exec, or first thing in its main); elsewhere than Linux it does nothing, and
    the child outlives a crashed parent as it would anyway."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, sig)
