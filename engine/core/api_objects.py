"""The read model as the Kubernetes API server returns it: the DaemonSet, Pod and Node objects of
``get -o json|yaml`` (and of jsonpath, custom-columns and --sort-by), so a user's ``jq`` and jsonpath
scripts written against a cluster work here (docs/output.md).

What the API server adds is added here, as it would be: the defaulting of apps/v1 and core/v1
(``SetDefaults_DaemonSet``, ``SetDefaults_PodSpec``, ``SetDefaults_Container``, ``SetDefaults_Pod``
and the volume and probe defaults), the metadata it keeps (uid as a UUID, generation,
resourceVersion, creationTimestamp, the template-generation annotation), what the admission plugins of
a default cluster add to a pod (priority, preemptionPolicy, the service account), what the DaemonSet
controller puts on its pods (owner reference, ``generateName``, tolerations, the node affinity term),
and the status a kubelet reports (pod and node conditions, container statuses, QoS class). Fields the
API server omits when empty are omitted (no empty ``labels``/``annotations`` maps, ``taints`` only
when there are any, ``unschedulable`` only when true); the ones it always prints (``securityContext:
{}``, ``resources: {}``, ``spec: {}`` of a node) are printed.

Not shown, as dsctl does not hold them: managedFields, the projected service-account token volume,
pod and host IPs, container ids, node addresses and nodeInfo.

Pure: the state, a pod's template and a few numbers in, plain dicts out; times are RFC 3339 seconds.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import msgspec

from engine.core.affinity import NODE_NAME_FIELD
from engine.core.pods import TEMPLATE_GENERATION_ANNOTATION
from engine.core.tolerations import with_daemon_tolerations
from engine.core.uids import api_uid, node_uid
from events.k8s import REVISION_HASH_LABEL, PodTemplate, Toleration
from projections.lookups import owner_revision
from projections.model import ClusterState, DaemonSetState, NodeState, PodState

_to_builtins = msgspec.to_builtins

#: the volume sources whose files get mode 0644 (420) unless set
_DEFAULT_MODE_SOURCES = ("configMap", "secret", "downwardAPI", "projected")
_PROBES = ("livenessProbe", "readinessProbe", "startupProbe")


def rfc3339(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _iso(value: Any) -> Any:
    """A stored datetime (or its text) at the API server's one-second precision."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, str) and len(value) > 20 and value[10] == "T":
        try:
            return _iso(datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            return value
    return value


def _put_maps(metadata: dict[str, Any], **maps: dict[str, str]) -> None:
    """``labels``/``annotations`` only when not empty, as the API server (omitempty) returns them."""
    for key, value in maps.items():
        if value:
            metadata[key] = dict(value)


# --- core/v1 defaulting ----------------------------------------------------------------------------------


def pull_policy(image: str) -> str:
    """``Always`` for ``:latest`` or no tag, else ``IfNotPresent`` (a digest alone counts as a tag)."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if "@" in image and ":" not in last:
        return "IfNotPresent"
    tag = last.rsplit(":", 1)[1] if ":" in last else "latest"
    return "Always" if tag == "latest" else "IfNotPresent"


def _container(c: dict[str, Any], *, pod: bool, host_network: bool) -> dict[str, Any]:
    c.setdefault("imagePullPolicy", pull_policy(str(c.get("image", ""))))
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    resources = c.setdefault("resources", {})
    if pod and isinstance(resources, dict) and isinstance(resources.get("limits"), dict):
        # SetDefaults_Pod: a limit without a request requests the limit
        requests = dict(resources.get("requests") or {})
        for name, value in resources["limits"].items():
            requests.setdefault(name, value)
        resources["requests"] = requests
    for port in c.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
            if pod and host_network and "containerPort" in port:
                port.setdefault("hostPort", port["containerPort"])
    for env in c.get("env") or []:
        ref = env.get("valueFrom", {}).get("fieldRef") if isinstance(env, dict) else None
        if isinstance(ref, dict):
            ref.setdefault("apiVersion", "v1")
    for probe_name in _PROBES:
        probe = c.get(probe_name)
        if isinstance(probe, dict):
            probe.setdefault("timeoutSeconds", 1)
            probe.setdefault("periodSeconds", 10)
            probe.setdefault("successThreshold", 1)
            probe.setdefault("failureThreshold", 3)
            http = probe.get("httpGet")
            if isinstance(http, dict):
                http.setdefault("path", "/")
                http.setdefault("scheme", "HTTP")
    return c


def _volume(v: dict[str, Any]) -> dict[str, Any]:
    sources = [k for k in v if k != "name"]
    if not sources:
        v["emptyDir"] = {}
    host_path = v.get("hostPath")
    if isinstance(host_path, dict):
        host_path.setdefault("type", "")
    for source in _DEFAULT_MODE_SOURCES:
        body = v.get(source)
        if isinstance(body, dict):
            body.setdefault("defaultMode", 420)
    return v


def pod_spec_defaults(spec: dict[str, Any], *, pod: bool = False) -> dict[str, Any]:
    """A defaulted deep copy of a pod spec (a template's, or with ``pod`` a pod's: requests from
    limits, host ports on the host network, service links, and what admission adds)."""
    out = copy.deepcopy(spec)
    host_network = bool(out.get("hostNetwork"))
    for key in ("containers", "initContainers"):
        for c in out.get(key) or []:
            if isinstance(c, dict):
                _container(c, pod=pod, host_network=host_network)
    for v in out.get("volumes") or []:
        if isinstance(v, dict):
            _volume(v)
    out.setdefault("dnsPolicy", "ClusterFirst")
    out.setdefault("restartPolicy", "Always")
    out.setdefault("schedulerName", "default-scheduler")
    out.setdefault("securityContext", {})
    out.setdefault("terminationGracePeriodSeconds", 30)
    if pod:
        out.setdefault("enableServiceLinks", True)
        out.setdefault("priority", 0)
        out.setdefault("preemptionPolicy", "PreemptLowerPriority")
        account = out.get("serviceAccountName") or out.get("serviceAccount") or "default"
        out["serviceAccountName"] = account
        out["serviceAccount"] = account
    return out


# --- DaemonSet -----------------------------------------------------------------------------------------


def resource_version(seq: int) -> str:
    return str(seq)


def daemonset(ds: DaemonSetState) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": ds.name,
        "namespace": ds.namespace,
        "uid": api_uid(ds.uid),
        "resourceVersion": resource_version(max(ds.applied_seq, ds.last_decision_seq)),
        "generation": ds.generation,
        "creationTimestamp": rfc3339(ds.created_at),
    }
    annotations = {
        **ds.annotations,
        TEMPLATE_GENERATION_ANNOTATION: str(ds.template_generation or ds.generation),
    }
    _put_maps(metadata, labels=ds.labels, annotations=annotations)
    if ds.deleted_at is not None:
        metadata["deletionTimestamp"] = rfc3339(ds.deleted_at)
        metadata["deletionGracePeriodSeconds"] = 0
        if ds.deleting:
            metadata["finalizers"] = ["foregroundDeletion"]
    spec: dict[str, Any] = _to_builtins(ds.spec)
    spec["revisionHistoryLimit"] = ds.spec.revision_history_limit
    strategy = spec.setdefault("updateStrategy", {})
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = strategy.setdefault("rollingUpdate", {})
        rolling.setdefault("maxUnavailable", 1)
        rolling.setdefault("maxSurge", 0)
    template = spec["template"]
    template_meta = template.get("metadata") or {}
    template["metadata"] = {k: v for k, v in template_meta.items() if v or k not in ("labels", "annotations")}
    template["spec"] = pod_spec_defaults(template.get("spec") or {})
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": metadata,
        "spec": spec,
        "status": daemonset_status(ds),
    }


def daemonset_status(ds: DaemonSetState) -> dict[str, Any]:
    """apps/v1 DaemonSetStatus: the four counts always, the others only when not zero (omitempty)."""
    st = ds.status
    out: dict[str, Any] = {
        "currentNumberScheduled": st.current_number_scheduled,
        "desiredNumberScheduled": st.desired_number_scheduled,
        "numberMisscheduled": st.number_misscheduled,
        "numberReady": st.number_ready,
    }
    optional = {
        "observedGeneration": st.observed_generation,
        "updatedNumberScheduled": st.updated_number_scheduled,
        "numberAvailable": st.number_available,
        "numberUnavailable": st.number_unavailable,
        "collisionCount": st.collision_count or ds.collision_count,
    }
    out.update({k: v for k, v in optional.items() if v})
    if st.conditions:
        out["conditions"] = [
            {k: _iso(v) for k, v in _to_builtins(c).items()} for c in st.conditions
        ]  # fmt: skip
    return out


# --- Pod -----------------------------------------------------------------------------------------------


def pod_template(state: ClusterState, pod: PodState) -> PodTemplate | None:
    """The template a pod was created from: its owner's revision with the pod's hash."""
    found = owner_revision(state, pod.owner_uid, pod.revision_hash, pod.namespace)
    return found[1].template if found is not None else None


def _daemon_spec(template: PodTemplate | None) -> dict[str, Any]:
    """The template's spec as the DaemonSet controller sends it, defaulted: its tolerations added, the
    required node affinity term for ``_on_node`` to fill in (``nodeName`` and the term's values are all
    that differ between the pods of one revision)."""
    spec: dict[str, Any] = dict(template.spec) if template is not None else {}
    try:
        raw = spec.get("tolerations") or []
        user = msgspec.convert(raw, tuple[Toleration, ...], str_keys=True)
    except msgspec.ValidationError:
        user = ()
    tolerations = with_daemon_tolerations(user, bool(spec.get("hostNetwork", False)))
    spec["tolerations"] = [_to_builtins(t) for t in tolerations]
    if not spec.get("containers"):
        spec["containers"] = []
    return pod_spec_defaults(spec, pod=True)


def _on_node(base: dict[str, Any], node: str) -> dict[str, Any]:
    """A pod's spec: the revision's (shared, never changed) bound to ``node`` by ``nodeName`` and one
    required ``matchFields metadata.name In [node]`` term."""
    spec = dict(base)
    affinity = dict(spec.get("affinity") or {})
    affinity["nodeAffinity"] = {
        **(affinity.get("nodeAffinity") or {}),
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {"matchFields": [{"key": NODE_NAME_FIELD, "operator": "In", "values": [node]}]}
            ]
        },
    }
    spec["affinity"] = affinity
    spec["nodeName"] = node
    return spec


def qos_class(spec: dict[str, Any]) -> str:
    """``Guaranteed`` when every container limits cpu and memory and requests what it limits,
    ``BestEffort`` when none requests or limits anything, ``Burstable`` otherwise."""
    containers = [
        c for k in ("containers", "initContainers") for c in spec.get(k) or [] if isinstance(c, dict)
    ]
    asked = [c.get("resources") or {} for c in containers]
    if not any((r.get("requests") or r.get("limits")) for r in asked):
        return "BestEffort"
    for r in asked:
        limits, requests = r.get("limits") or {}, r.get("requests") or {}
        if not all(k in limits for k in ("cpu", "memory")):
            return "Burstable"
        if any(requests.get(k, limits[k]) != limits[k] for k in limits):
            return "Burstable"
    return "Guaranteed"


def _condition(kind: str, ok: bool, since: str | None, reason: str = "", message: str = "") -> dict[str, Any]:
    c: dict[str, Any] = {
        "type": kind,
        "status": "True" if ok else "False",
        "lastProbeTime": None,
        "lastTransitionTime": since,
    }
    if not ok and reason:
        c["reason"] = reason
    if not ok and message:
        c["message"] = message
    return c


def _pod_status(pod: PodState, spec: dict[str, Any]) -> dict[str, Any]:
    created = rfc3339(pod.created_at)
    ready_since = rfc3339(pod.ready_since) if pod.ready_since is not None else created
    names = [str(c.get("name", "")) for c in spec.get("containers") or [] if isinstance(c, dict)]
    started = pod.phase != "Pending"
    done = pod.terminal
    if done:
        reason, message = "PodCompleted", ""
    else:
        reason, message = "ContainersNotReady", f"containers with unready status: [{' '.join(names)}]"
    conditions = [
        _condition("PodReadyToStartContainers", started and not done, created),
        _condition("Initialized", True, created),
        _condition("Ready", pod.ready, ready_since, reason, message),
        _condition("ContainersReady", pod.ready, ready_since, reason, message),
        _condition("PodScheduled", True, created),
    ]
    statuses = []
    for c in spec.get("containers") or []:
        if not isinstance(c, dict):
            continue
        if pod.phase == "Running":
            state: dict[str, Any] = {"running": {"startedAt": created}}
        elif done:
            failed = pod.phase == "Failed"
            state = {
                "terminated": {
                    "exitCode": 1 if failed else 0,
                    "reason": "Error" if failed else "Completed",
                    "startedAt": created,
                    "finishedAt": created,
                }
            }
        else:
            state = {"waiting": {"reason": "ContainerCreating"}}
        statuses.append(
            {
                "name": c.get("name", ""),
                "image": c.get("image", ""),
                "imageID": "",
                "lastState": {},
                "ready": pod.ready,
                "restartCount": 0,
                "started": pod.phase == "Running",
                "state": state,
            }
        )
    status: dict[str, Any] = {"phase": pod.phase, "conditions": conditions}
    if statuses:
        status["containerStatuses"] = statuses
    status["qosClass"] = qos_class(spec)
    status["startTime"] = created
    return status


class Objects:
    """Objects of one state. The pods of one revision share its defaulted spec, built once (a listing of
    10,000 pods builds a handful), so the objects must be read, never changed."""

    def __init__(self, state: ClusterState) -> None:
        self.state = state
        self._specs: dict[tuple[str, str, str], tuple[PodTemplate | None, dict[str, Any]]] = {}

    def daemonset(self, ds: DaemonSetState) -> dict[str, Any]:
        return daemonset(ds)

    def node(self, n: NodeState) -> dict[str, Any]:
        return node(n)

    def pod(self, p: PodState) -> dict[str, Any]:
        key = (p.owner_uid, p.revision_hash, p.namespace if not p.owner_uid else "")
        found = self._specs.get(key)
        if found is None:
            template = pod_template(self.state, p)
            found = self._specs[key] = (template, _daemon_spec(template))
        template, base = found
        return _pod(p, template, _on_node(base, p.node))


def pod(state: ClusterState, p: PodState) -> dict[str, Any]:
    return Objects(state).pod(p)


def _pod(p: PodState, template: PodTemplate | None, spec: dict[str, Any]) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": p.name,
        "namespace": p.namespace,
        "uid": api_uid(p.uid),
        "resourceVersion": resource_version(p.created_seq),
        "creationTimestamp": rfc3339(p.created_at),
    }
    labels = {**p.labels, REVISION_HASH_LABEL: p.revision_hash} if p.revision_hash else p.labels
    annotations = template.metadata.annotations if template is not None else {}
    _put_maps(metadata, labels=labels, annotations=annotations)
    if p.owner_uid:
        metadata["generateName"] = f"{p.owner_name}-"
        metadata["ownerReferences"] = [
            {
                "apiVersion": "apps/v1",
                "kind": "DaemonSet",
                "name": p.owner_name,
                "uid": api_uid(p.owner_uid),
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    if p.deletion_timestamp is not None:
        metadata["deletionTimestamp"] = rfc3339(p.deletion_timestamp)
        metadata["deletionGracePeriodSeconds"] = spec.get("terminationGracePeriodSeconds", 30)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": spec,
        "status": _pod_status(p, spec),
    }


# --- Node ----------------------------------------------------------------------------------------------

#: the kubelet's pressure conditions, in its order, with the reason and message it gives when False
_PRESSURE = (
    ("MemoryPressure", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
    ("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    ("PIDPressure", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
)


def node_ready(node: NodeState) -> str:
    """The Ready condition's status as ``get nodes`` reads it: a node reported without one is Ready."""
    ready = node.conditions.get("Ready")
    return "True" if ready is None else ready.status


def _node_conditions(node: NodeState) -> list[dict[str, Any]]:
    created = rfc3339(node.created_at)
    out = []
    for kind, reason, message in _PRESSURE:
        reported = node.conditions.get(kind)
        out.append(
            {
                "type": kind,
                "status": reported.status if reported else "False",
                "lastHeartbeatTime": created,
                "lastTransitionTime": _iso(reported.last_transition_time if reported else None) or created,
                "reason": (reported.reason if reported else "") or reason,
                "message": (reported.message if reported else "") or message,
            }
        )
    ready = node.conditions.get("Ready")
    status = node_ready(node)
    default_reason, default_message = {
        "True": ("KubeletReady", "kubelet is posting ready status"),
        "False": ("KubeletNotReady", "kubelet is not ready"),
    }.get(status, ("NodeStatusUnknown", "Kubelet stopped posting node status."))
    out.append(
        {
            "type": "Ready",
            "status": status,
            "lastHeartbeatTime": created,
            "lastTransitionTime": _iso(ready.last_transition_time if ready else None) or created,
            "reason": (ready.reason if ready else "") or default_reason,
            "message": (ready.message if ready else "") or default_message,
        }
    )
    known = {kind for kind, _, _ in _PRESSURE} | {"Ready"}
    for kind, c in node.conditions.items():
        if kind not in known:
            extra = _to_builtins(c)
            extra.setdefault("lastHeartbeatTime", created)
            extra.setdefault("lastTransitionTime", created)
            out.append(extra)
    return out


def node(n: NodeState) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": n.name,
        "uid": api_uid(node_uid(n.name, n.created_at)),
        "resourceVersion": resource_version(n.updated_seq),
        "creationTimestamp": rfc3339(n.created_at),
    }
    _put_maps(metadata, labels=n.labels)
    spec: dict[str, Any] = {}
    if n.taints:
        spec["taints"] = [_to_builtins(t) for t in n.taints]
    if n.unschedulable:
        spec["unschedulable"] = True
    status: dict[str, Any] = {}
    if n.capacity:
        status["allocatable"] = dict(n.capacity)
        status["capacity"] = dict(n.capacity)
    status["conditions"] = _node_conditions(n)
    return {"apiVersion": "v1", "kind": "Node", "metadata": metadata, "spec": spec, "status": status}


def as_list(items: list[dict[str, Any]]) -> dict[str, Any]:
    """What ``kubectl get`` prints for several objects: a v1 List (its resourceVersion left empty, as
    kubectl leaves it)."""
    return {"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}}
