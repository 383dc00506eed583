"""Daemon endpoints (docs/rollout-control.md): Ready pods only, the node's preferred address, the host
ports of the revision each pod runs (container ports too under hostNetwork)."""

from __future__ import annotations

from typing import Any

from engine.core.endpoints import HostPort, endpoints, host_ports
from engine.core.manifests import parse_node
from events.k8s import NodeAddress, PodTemplate
from tests.core.world import World, ds_doc


def ports_doc(port: int, image: str = "v1") -> dict[str, Any]:
    container = {
        "name": "agent",
        "image": image,
        "ports": [{"containerPort": 80, "hostPort": port, "name": "metrics"}],
    }
    return ds_doc(pod_spec={"containers": [container]})


def test_host_ports_of_a_template() -> None:
    spec = {
        "containers": [
            {
                "name": "a",
                "ports": [{"containerPort": 80}, {"containerPort": 81, "hostPort": 9100, "protocol": "UDP"}],
            }
        ]
    }
    assert host_ports(PodTemplate(spec=spec)) == (HostPort(9100, "UDP", "", "a"),)
    on_host = PodTemplate(spec={**spec, "hostNetwork": True})
    assert [p.port for p in host_ports(on_host)] == [80, 9100]


def test_ready_pods_with_their_node_address_and_their_revision_ports() -> None:
    w = World()
    w.nodes(3)
    w.apply(ports_doc(9100))
    w.settle()
    addresses = {
        "node-0": (NodeAddress("Hostname", "n0"), NodeAddress("InternalIP", "10.0.0.10")),
        "node-1": (NodeAddress("InternalIP", "10.0.0.11"),),
    }
    found = endpoints(w.state, w.ds(), addresses)
    assert [(e.node, e.address, [str(p) for p in e.ports]) for e in found] == [
        ("node-0", "10.0.0.10", ["9100/TCP(metrics)"]),
        ("node-1", "10.0.0.11", ["9100/TCP(metrics)"]),
        ("node-2", "", ["9100/TCP(metrics)"]),
    ]
    # a new revision on another port: a pod still on the old one keeps answering on the old port
    w.apply(ports_doc(9200))
    w.step()  # node-0's old pod is deleted (not yet replaced): no longer an endpoint
    found = endpoints(w.state, w.ds(), addresses)
    assert [(e.node, e.ports[0].port) for e in found] == [("node-1", 9100), ("node-2", 9100)]
    w.step(ready=False)  # its replacement is not Ready yet
    assert [e.node for e in endpoints(w.state, w.ds(), addresses)] == ["node-1", "node-2"]
    (fresh,) = w.pods_on("node-0")
    w.ready(fresh)
    w.settle()
    assert {e.ports[0].port for e in endpoints(w.state, w.ds(), addresses)} == {9200}


def test_a_node_manifest_carries_its_addresses() -> None:
    doc = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "n1"},
        "status": {"addresses": [{"type": "InternalIP", "address": "10.1.2.3"}]},
    }
    assert parse_node(doc).addresses == (NodeAddress("InternalIP", "10.1.2.3"),)
