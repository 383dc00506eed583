"""Daemon endpoints (docs/rollout-control.md): for each Ready pod of a DaemonSet, the node's address and
the host ports the pod binds there.

Why: a DaemonSet's clients often reach "the agent on my node" without a Service, at the node's IP and
a host port. Who is reachable is exactly the Ready pods (a pod not Ready, or terminating, takes no
traffic), and the ports are those of the revision the pod runs, not of the current template: during a
rollout old and new pods may bind different ports. With ``hostNetwork`` every container port is a host
port. Pure: the read model, plus each node's addresses as its last registration gave them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from engine.core.pods import revision_of
from events.k8s import NodeAddress, PodTemplate
from projections.model import ClusterState, DaemonSetState

#: which address to show first when a node has several (the one peers on the cluster network use)
ADDRESS_ORDER = ("InternalIP", "ExternalIP", "Hostname", "InternalDNS", "ExternalDNS")


class HostPort(msgspec.Struct, frozen=True):
    port: int
    protocol: str = "TCP"
    name: str = ""
    container: str = ""

    def __str__(self) -> str:
        return f"{self.port}/{self.protocol}" + (f"({self.name})" if self.name else "")


class Endpoint(msgspec.Struct, frozen=True):
    pod: str
    node: str
    #: the node's addresses, the preferred one first (``ADDRESS_ORDER``)
    addresses: tuple[NodeAddress, ...]
    ports: tuple[HostPort, ...]
    revision: str

    @property
    def address(self) -> str:
        return self.addresses[0].address if self.addresses else ""


def host_ports(template: PodTemplate) -> tuple[HostPort, ...]:
    spec = template.spec
    host_network = spec.get("hostNetwork") is True
    found: list[HostPort] = []
    containers: Any = spec.get("containers")
    for container in containers if isinstance(containers, list) else []:
        if not isinstance(container, dict):
            continue
        ports: Any = container.get("ports")
        for port in ports if isinstance(ports, list) else []:
            if not isinstance(port, dict):
                continue
            number = port.get("hostPort") or (port.get("containerPort") if host_network else None)
            if isinstance(number, int) and not isinstance(number, bool) and number > 0:
                found.append(
                    HostPort(
                        port=number,
                        protocol=str(port.get("protocol") or "TCP"),
                        name=str(port.get("name") or ""),
                        container=str(container.get("name") or ""),
                    )
                )
    return tuple(found)


def _ordered(addresses: tuple[NodeAddress, ...]) -> tuple[NodeAddress, ...]:
    def rank(a: NodeAddress) -> int:
        return ADDRESS_ORDER.index(a.type) if a.type in ADDRESS_ORDER else len(ADDRESS_ORDER)

    return tuple(sorted(addresses, key=rank))


def endpoints(
    state: ClusterState, ds: DaemonSetState, addresses: Mapping[str, tuple[NodeAddress, ...]]
) -> list[Endpoint]:
    """Every Ready, non-terminating pod of ``ds`` on a known node, by node name."""
    out = []
    for key in sorted(state.pods_by_owner.get(ds.uid, ())):
        pod = state.pods.get(key)
        if pod is None or not pod.ready or pod.deletion_timestamp is not None or pod.node not in state.nodes:
            continue
        revision = revision_of(pod)
        found = ds.revisions.get(revision)
        template = found.template if found is not None else ds.spec.template
        out.append(
            Endpoint(
                pod=pod.name,
                node=pod.node,
                addresses=_ordered(addresses.get(pod.node, ())),
                ports=host_ports(template),
                revision=revision,
            )
        )
    return sorted(out, key=lambda e: (e.node, e.pod))
