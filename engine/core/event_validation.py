"""What an event from outside must satisfy before it enters the log: the rules the API server would apply
to the same object (names, labels, taints, conditions, a DaemonSet spec ``dsctl apply`` would accept),
and the envelope fields a caller may set (ids, source, correlation).

Why here and not in the ingest service: these are decisions about values, with no I/O, and the engine
trusts every event in the log to have passed them (a node named ``Node_7`` or a taint effect ``Never``
would otherwise surface much later, in every reader). Keeping them pure lets them be table-tested
without a server, and lets any other door into the log apply exactly the same rules.

Each check records every problem on a ``Checker`` with its ``$``-rooted JSON path (``$.data.name``,
``$.data.taints[0].effect``), so one refusal names all that is wrong at once.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

import msgspec

from engine.core import names
from engine.core.daemonset_validation import check_labels, check_name, check_spec
from engine.core.defaults import with_daemonset_defaults
from engine.core.tolerations import TAINT_EFFECTS
from engine.core.validation import Checker, join
from events.ingest_wire import IngestRequest
from events.k8s import NodeCondition, Taint
from events.types import (
    DaemonSetApplied,
    DaemonSetDeleted,
    Event,
    NodeConditionChanged,
    NodeLabelsChanged,
    NodeRegistered,
    NodeTaintsChanged,
    PodCreated,
    PodEvent,
    PodFailed,
    PodSucceeded,
    PodTerminating,
)

#: an event id: printable ASCII without spaces, because it travels as the ``Nats-Msg-Id`` header. Always
#: ``fullmatch``: with ``match`` and ``$`` an id ending in a newline passed, and the header (which loses
#: the newline) then made it a duplicate of the id without it
EVENT_ID: Final = re.compile(r"[!-~]{1,128}")
#: control characters: never in a text that may end up in a header or a log line
CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
CONDITION_STATUSES: Final = ("True", "False", "Unknown")
#: the longest ``source``, ``causation_id`` or ``correlation_id`` (a DNS subdomain's length)
MAX_ENVELOPE_TEXT: Final = 253
#: a Kubernetes resource quantity (``4``, ``1.5``, ``500m``, ``16Gi``, ``1e3``), without a sign: a node's
#: capacity is never negative, and ``NaN`` or ``Infinity`` is no quantity at all
QUANTITY: Final = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?")
MAX_QUANTITY_TEXT: Final = 64
#: Kubernetes' integers (generation, exit codes, seconds) are 64-bit at most
MAX_INT64: Final = 2**63 - 1


def check_envelope_fields(c: Checker, request: IngestRequest) -> None:
    """The envelope fields a caller chose: an id that can be a header, texts without control characters."""
    if request.id and not EVENT_ID.fullmatch(request.id):
        c.invalid("$.id", request.id, "must be 1-128 printable ASCII characters without spaces")
    for path, value in (
        ("$.source", request.source),
        ("$.causation_id", request.causation_id),
        ("$.correlation_id", request.correlation_id),
    ):
        if len(value) > MAX_ENVELOPE_TEXT or CONTROL.search(value):
            c.invalid(path, value, "must be at most 253 characters, without control characters")


def check_taints(c: Checker, taints: Sequence[Taint], path: str) -> None:
    """Keys and values as labels, a known effect, and at most one taint per (key, effect), as upstream."""
    seen: set[tuple[str, str]] = set()
    for i, taint in enumerate(taints):
        p = join(path, i)
        for problem in names.qualified_name(taint.key):
            c.invalid(join(p, "key"), taint.key, problem)
        for problem in names.label_value(taint.value):
            c.invalid(join(p, "value"), taint.value, problem)
        if taint.effect not in TAINT_EFFECTS:
            c.unsupported(join(p, "effect"), taint.effect, TAINT_EFFECTS)
        if (taint.key, taint.effect) in seen:
            c.add(
                p, f'Duplicate value: "{taint.key}:{taint.effect}": taints must be unique by key and effect'
            )
        seen.add((taint.key, taint.effect))


def check_capacity(c: Checker, capacity: dict[str, str], path: str) -> None:
    """Resource names as label keys (``cpu``, ``nvidia.com/gpu``), amounts as non-negative quantities."""
    for name, amount in capacity.items():
        for problem in names.qualified_name(name):
            c.invalid(path, name, problem)
        p = join(path, name)
        if amount.startswith("-"):
            c.invalid(p, amount, "must be greater than or equal to 0")
        elif len(amount) > MAX_QUANTITY_TEXT or not QUANTITY.fullmatch(amount.removeprefix("+")):
            c.invalid(p, amount, "must be a quantity such as '4', '1.5', '500m', '16Gi' or '1e3'")


def check_count(c: Checker, value: int | None, path: str, *, minimum: int = 0) -> None:
    """A count, code or number of seconds: at least ``minimum``, and a 64-bit integer as upstream's."""
    if value is None:
        return
    if value < minimum:
        c.invalid(path, value, f"must be greater than or equal to {minimum}")
    elif value > MAX_INT64:
        c.invalid(path, value, f"must be less than or equal to {MAX_INT64}")


def check_condition(c: Checker, condition: NodeCondition, path: str) -> None:
    """A condition needs a type, and a status the engine can read (``Ready`` is compared to ``True``)."""
    if not condition.type:
        c.required(join(path, "type"))
    if condition.status not in CONDITION_STATUSES:
        c.unsupported(join(path, "status"), condition.status, CONDITION_STATUSES)


def check_event(event: Event) -> None:
    """The rules the API server would apply to the same object, on a decoded payload; raises
    ``ManifestInvalid`` listing every problem with its ``$.data...`` path."""
    c = Checker()
    if event.TAG.startswith("node."):
        check_name(c, getattr(event, "name"), "$.data.name")  # noqa: B009 - every node fact has a name
    match event:
        case NodeRegistered():
            check_labels(c, event.labels, "$.data.labels")
            check_taints(c, event.taints, "$.data.taints")
            for i, condition in enumerate(event.conditions):
                check_condition(c, condition, join("$.data.conditions", i))
            check_capacity(c, event.capacity, "$.data.capacity")
        case NodeLabelsChanged():
            check_labels(c, event.labels, "$.data.labels")
        case NodeTaintsChanged():
            check_taints(c, event.taints, "$.data.taints")
        case NodeConditionChanged():
            check_condition(c, event.condition, "$.data.condition")
        case DaemonSetApplied() | DaemonSetDeleted():
            check_name(c, event.namespace, "$.data.namespace", label=True)
            check_name(c, event.name, "$.data.name")
            if not event.uid:
                c.required("$.data.uid")
        case PodEvent():
            check_name(c, event.node, "$.data.node")
            check_name(c, event.namespace, "$.data.namespace", label=True)
            check_name(c, event.name, "$.data.name")
    match event:
        case DaemonSetApplied():
            check_count(c, event.generation, "$.data.generation", minimum=1)
            if not event.template_hash:
                c.required("$.data.template_hash")
            check_labels(c, event.labels, "$.data.labels")
            # the same checks `dsctl apply` runs, so the engine never reconciles a spec it would refuse
            inner = Checker()
            check_spec(inner, with_daemonset_defaults({"spec": msgspec.to_builtins(event.spec)})["spec"])
            for e in inner.errors:
                c.add("$.data." + e.path if e.path else "$.data.spec", e.message)
        case PodCreated():
            if not event.uid:
                c.required("$.data.uid")
            check_labels(c, event.labels, "$.data.labels")
        # pod facts come from executors only (the ingest door refuses them: ``EXECUTOR_ONLY``), but a
        # fact is checked the same whoever sends it
        case PodFailed():
            check_count(c, event.exit_code, "$.data.exit_code")
        case PodSucceeded():
            check_count(c, event.exit_code, "$.data.exit_code")
        case PodTerminating():
            check_count(c, event.grace_period_seconds, "$.data.grace_period_seconds")
        case _:
            pass
    c.raise_if_any(kind=event.TAG, name=str(getattr(event, "name", "")))
