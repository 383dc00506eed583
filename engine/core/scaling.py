"""Int-or-percent values (``maxUnavailable``, ``maxSurge``), scaled the way upstream's
``intstr.GetScaledValueFromIntOrPercent`` does: a percent of a total, rounded up for DaemonSets."""

from __future__ import annotations

import math
import re

_PERCENT = re.compile(r"^([0-9]+)%$")


class BadIntOrPercent(ValueError):
    """The value is neither a non-negative integer nor a ``<n>%`` string."""


def parse_int_or_percent(value: int | str | None) -> tuple[int, bool]:
    """``(number, is_percent)``; ``None`` reads as the integer 0, as a nil IntOrString scales to 0."""
    if value is None:
        return 0, False
    if isinstance(value, bool):
        raise BadIntOrPercent(f"{value!r} is not an integer or percentage")
    if isinstance(value, int):
        return value, False
    match = _PERCENT.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise BadIntOrPercent(f"{value!r} is not an integer or percentage (e.g. 1 or '25%')")
    return int(match.group(1)), True


def scaled_value(value: int | str | None, total: int, round_up: bool = True) -> int:
    """The absolute count ``value`` stands for, given ``total`` (desiredNumberScheduled)."""
    number, percent = parse_int_or_percent(value)
    if not percent:
        return number
    scaled = number * total / 100
    return math.ceil(scaled) if round_up else math.floor(scaled)
