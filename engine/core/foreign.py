"""Which documents of a manifest dsctl manages, and how kubectl would name the others.

Published DaemonSet manifests (CNI agents, CSI node plugins, log shippers) ship their ServiceAccount,
RBAC objects, ConfigMaps and Namespace in the same file, and users apply such files whole. dsctl
manages only DaemonSets and Nodes; refusing the whole file for the rest made those manifests
unusable, so the other objects are named (as kubectl names them, ``KIND.GROUP/NAME``) and skipped.
Pure: the CLI decides whether a skip is reported or, under ``--strict``, refused.
"""

from __future__ import annotations

from typing import Any

#: the kinds ``parse_object`` accepts; anything else is somebody else's object
MANAGED_KINDS = frozenset({"DaemonSet", "Node"})

SKIPPED = "skipped: not managed by dsctl"


def is_managed(doc: dict[str, Any]) -> bool:
    """A DaemonSet or Node is ours (and validated as such); a document with no kind at all is too, so
    that the validator, not the skipper, tells the user it is missing."""
    kind = doc.get("kind")
    return kind in MANAGED_KINDS or not kind


def reference(doc: dict[str, Any]) -> str:
    """kubectl's name for an object: lowercase kind, the API group when there is one, then the name
    (``serviceaccount/calico-node``, ``clusterrole.rbac.authorization.k8s.io/calico-node``)."""
    kind = str(doc.get("kind", "")).lower()
    api_version = str(doc.get("apiVersion", "") or "")
    group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
    metadata = doc.get("metadata")
    name = metadata.get("name", "") if isinstance(metadata, dict) else ""
    return f"{kind}.{group}/{name}" if group else f"{kind}/{name}"


def skipped_line(doc: dict[str, Any]) -> str:
    return f"{reference(doc)} {SKIPPED}"
