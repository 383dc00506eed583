"""Commands made whole for sending (engine/core/dispatch.py): a decision's creates share one template per
revision, pinned to each node, and read exactly as if each were made on its own."""

from __future__ import annotations

import msgspec

from engine.core.dispatch import commands_to_send
from engine.core.pod_template import daemon_pod_template
from engine.core.reconcile import reconcile
from events import codec
from events.types import CreatePod
from tests.core.world import KEY, World, ds_doc

AFFINITY = {
    "nodeAffinity": {
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {
                "weight": 1,
                "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
            }
        ]
    },
    "podAntiAffinity": {},
}


def test_every_create_of_a_decision_reads_as_if_made_for_its_node_alone() -> None:
    w = World()
    w.nodes(40)
    w.apply(ds_doc(pod_spec={"affinity": AFFINITY, "tolerations": [{"key": "gpu", "operator": "Exists"}]}))
    result = reconcile(w.state, KEY, w.now)
    assert result.decision is not None
    sent = [c for c in commands_to_send(w.state, result.decision) if isinstance(c, CreatePod)]
    ds = w.state.daemonsets[KEY]
    assert len(sent) == 40
    for command in sent:
        alone = daemon_pod_template(ds, command.node)
        assert command.template == alone
        # byte for byte on the wire, key order included
        assert codec.encode_command(command) == codec.encode_command(
            msgspec.structs.replace(command, template=alone)
        )
    pins = {
        c.template.spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
            "nodeSelectorTerms"
        ][0]["matchFields"][0]["values"][0]
        for c in sent
        if c.template
    }
    assert pins == {c.node for c in sent}
    # the user's preferred affinity and the other affinities are kept beside the pin
    first = sent[0].template
    assert first is not None
    assert first.spec["affinity"]["podAntiAffinity"] == {}
    assert (
        first.spec["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        == (AFFINITY["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"])
    )
