"""Which manifest documents dsctl applies and how the others are named when skipped (kubectl's
``KIND.GROUP/NAME``), table-driven."""

from __future__ import annotations

from typing import Any

import pytest

from engine.core.foreign import is_managed, reference, skipped_line


def _doc(api_version: str, kind: str, name: str = "calico-node") -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": kind, "metadata": {"name": name}}


@pytest.mark.parametrize(
    ("doc", "managed", "ref"),
    [
        (_doc("apps/v1", "DaemonSet"), True, "daemonset.apps/calico-node"),
        (_doc("v1", "Node", "node1"), True, "node/node1"),
        (_doc("v1", "ServiceAccount"), False, "serviceaccount/calico-node"),
        (_doc("v1", "ConfigMap", "calico-config"), False, "configmap/calico-config"),
        (_doc("v1", "Namespace", "calico-system"), False, "namespace/calico-system"),
        (_doc("v1", "Secret", "tls"), False, "secret/tls"),
        (
            _doc("rbac.authorization.k8s.io/v1", "ClusterRole"),
            False,
            "clusterrole.rbac.authorization.k8s.io/calico-node",
        ),
        (
            _doc("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
            False,
            "clusterrolebinding.rbac.authorization.k8s.io/calico-node",
        ),
        (_doc("apps/v1", "Deployment", "typha"), False, "deployment.apps/typha"),
        (_doc("storage.k8s.io/v1", "CSIDriver", "csi.x"), False, "csidriver.storage.k8s.io/csi.x"),
        # no kind: the validator must say so, not the skipper
        ({"apiVersion": "v1", "metadata": {"name": "x"}}, True, "/x"),
        ({"kind": "ConfigMap"}, False, "configmap/"),
    ],
)
def test_managed_and_reference(doc: dict[str, Any], managed: bool, ref: str) -> None:
    assert is_managed(doc) is managed
    assert reference(doc) == ref


def test_skipped_line_is_kubectl_shaped() -> None:
    line = skipped_line(_doc("v1", "ServiceAccount"))
    assert line == "serviceaccount/calico-node skipped: not managed by dsctl"
