"""apps/v1 defaulting for a DaemonSet (``SetDefaults_DaemonSet``, docs/upstream-semantics.md A.1), on the
raw decoded object.

Defaults are applied before validation, as the API server does, which is why a spec setting only
``maxSurge: 1`` fails: ``maxUnavailable`` defaults to 1 and both are then non-zero. The docs' "25%"
default is a known docs bug; the code's 1 and 0 are used.
"""

from __future__ import annotations

import copy
from typing import Any

DEFAULT_NAMESPACE = "default"
DEFAULT_REVISION_HISTORY_LIMIT = 10


def with_daemonset_defaults(doc: dict[str, Any]) -> dict[str, Any]:
    """A defaulted deep copy; parts of the wrong type are left for validation to report."""
    out = copy.deepcopy(doc)
    metadata = out.get("metadata")
    if isinstance(metadata, dict) and not metadata.get("namespace"):
        metadata["namespace"] = DEFAULT_NAMESPACE
    spec = out.get("spec")
    if not isinstance(spec, dict):
        return out
    strategy = spec.get("updateStrategy")
    if strategy is None:
        strategy = spec["updateStrategy"] = {}
    if isinstance(strategy, dict):
        if not strategy.get("type"):
            strategy["type"] = "RollingUpdate"
        if strategy["type"] == "RollingUpdate":
            rolling = strategy.get("rollingUpdate")
            if rolling is None:
                rolling = strategy["rollingUpdate"] = {}
            if isinstance(rolling, dict):
                if rolling.get("maxUnavailable") is None:
                    rolling["maxUnavailable"] = 1
                if rolling.get("maxSurge") is None:
                    rolling["maxSurge"] = 0
    if spec.get("revisionHistoryLimit") is None:
        spec["revisionHistoryLimit"] = DEFAULT_REVISION_HISTORY_LIMIT
    template = spec.get("template")
    if isinstance(template, dict):
        pod_spec = template.get("spec")
        if isinstance(pod_spec, dict) and not pod_spec.get("restartPolicy"):
            pod_spec["restartPolicy"] = "Always"
    return out
