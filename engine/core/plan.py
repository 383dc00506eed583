"""What a phase (manage, rolling update, cascade) wants done, before commands get ids.

Each planned action carries the reason a person reads and the code a program filters on; the reconcile
turns creates and deletes into commands and every item into a ``NodeReason``.
"""

from __future__ import annotations

import msgspec

from engine.core.backoff import BackoffStep
from events.types import NodeAction
from projections.model import PodState


class PlannedCreate(msgspec.Struct, frozen=True):
    node: str
    code: str
    message: str
    #: the revision to create at; empty means the current one (only a node a rollout control holds
    #: back gets another, docs/rollout-control.md)
    revision: str = ""


class PlannedDelete(msgspec.Struct, frozen=True):
    node: str
    pod: PodState
    code: str
    message: str


class Note(msgspec.Struct, frozen=True):
    """An action without a command: keep, skip, wait (and the upstream Events, by code)."""

    node: str
    action: NodeAction
    code: str
    message: str
    pod: str = ""


class Plan(msgspec.Struct):
    creates: list[PlannedCreate] = msgspec.field(default_factory=list)
    deletes: list[PlannedDelete] = msgspec.field(default_factory=list)
    notes: list[Note] = msgspec.field(default_factory=list)
    backoffs: dict[str, BackoffStep] = msgspec.field(default_factory=dict)
    requeue_after: float | None = None
    #: node -> the name chosen for the pod created there (unique: see reconcile.assign_pod_names)
    pod_names: dict[str, str] = msgspec.field(default_factory=dict)

    @property
    def has_commands(self) -> bool:
        return bool(self.creates or self.deletes)

    def requeue(self, seconds: float | None) -> None:
        if seconds is not None:
            self.requeue_after = seconds if self.requeue_after is None else min(self.requeue_after, seconds)
