"""What executors are sent for a recorded decision: its commands, made whole.

The recorded decision is the one source of what is sent, on every path (the engine's command relay,
a new leader catching up, the simulated world of the core tests, ``replay verify``): a decision records
its creates by revision hash, without the pod template, and this restores the template from the
DaemonSet's revision in the read model. Nothing else may build a command list, so "recorded" and
"sent" cannot drift apart (docs/design.md, "Commands are a projection of the decisions").
"""

from __future__ import annotations

import msgspec

from engine.core.pod_template import daemon_pod_template, pinned_to
from events.k8s import PodTemplate
from events.types import AnyCommand, CreatePod, DecisionRecorded
from projections.lookups import owner_revision
from projections.model import ClusterState


def command_with_template(
    state: ClusterState, command: AnyCommand, made: dict[tuple[str, str], PodTemplate] | None = None
) -> AnyCommand:
    """A recorded create made whole again, from its DaemonSet's revision. A create whose revision the
    state no longer knows stays as recorded (the executor refuses it, and the core re-decides).
    ``made``: templates already made for other nodes, by (owner uid, revision), to pin anew."""
    if not isinstance(command, CreatePod) or command.template is not None:
        return command
    key = (command.owner_uid, command.revision_hash)
    other = made.get(key) if made is not None else None
    if other is not None:
        return msgspec.structs.replace(command, template=pinned_to(other, command.node))
    found = owner_revision(state, command.owner_uid, command.revision_hash)
    if found is None:
        return command
    ds, revision = found
    template = daemon_pod_template(
        ds, command.node, revision.template, revision.hash, revision.template_generation
    )
    if made is not None:
        made[key] = template
    return msgspec.structs.replace(command, template=template)


def commands_to_send(state: ClusterState, decision: DecisionRecorded) -> tuple[AnyCommand, ...]:
    """Every command of ``decision``, in its recorded order, as an executor must receive it."""
    made: dict[tuple[str, str], PodTemplate] = {}
    return tuple(command_with_template(state, c, made) for c in decision.commands)
