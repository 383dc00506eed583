"""apps/v1 DaemonSet validation (``ValidateDaemonSet``, ``ValidateDaemonSetSpec``, the pod template and
its scheduling fields), reading the defaulted raw object and building its normalised form.

Each ``check_*`` takes the raw part and its path, records problems on the ``Checker``, and returns the
normalised part (strings coerced, see ``validation``) to decode into ``events.k8s`` types once valid.
The pod template is checked where the engine interprets it (scheduling fields, restart policy,
containers' names and images); other pod fields are carried as they are.
"""

from __future__ import annotations

from typing import Any

import msgspec

from engine.core import names
from engine.core.affinity import FIELD_SELECTOR_OPERATORS, NODE_NAME_FIELD, NODE_SELECTOR_OPERATORS
from engine.core.scaling import BadIntOrPercent, parse_int_or_percent
from engine.core.selectors import SELECTOR_OPERATORS, matches
from engine.core.tolerations import TAINT_EFFECTS, TOLERATION_OPERATORS
from engine.core.validation import Checker, join
from events.k8s import LabelSelector

UPDATE_STRATEGIES = ("RollingUpdate", "OnDelete")
#: OpenKruise ``rollingUpdate.rollingUpdateType`` values with a meaning here (docs/rollout-control.md)
KRUISE_ROLLING_TYPES = ("Standard", "Surging")


def check_name(c: Checker, value: str, path: str, *, label: bool = False) -> None:
    for problem in names.dns1123_label(value) if label else names.dns1123_subdomain(value):
        c.invalid(path, value, problem)


def check_labels(c: Checker, raw: Any, path: str) -> dict[str, str]:
    labels = c.string_map(raw, path)
    for key, value in labels.items():
        for problem in names.qualified_name(key):
            c.invalid(path, key, problem)
        for problem in names.label_value(value):
            c.invalid(join(path, key), value, problem)
    return labels


def check_annotations(c: Checker, raw: Any, path: str) -> dict[str, str]:
    annotations = c.string_map(raw, path)
    for key in annotations:
        for problem in names.qualified_name(key):
            c.invalid(path, key, problem)
    return annotations


def check_metadata(c: Checker, raw: Any) -> dict[str, Any]:
    metadata = c.mapping(raw, "metadata", required=True)
    name = c.string(metadata.get("name"), "metadata.name", required=True)
    if name:
        check_name(c, name, "metadata.name")
    namespace = c.string(metadata.get("namespace"), "metadata.namespace") or "default"
    check_name(c, namespace, "metadata.namespace", label=True)
    return {
        "name": name,
        "namespace": namespace,
        "labels": check_labels(c, metadata.get("labels"), "metadata.labels"),
        "annotations": check_annotations(c, metadata.get("annotations"), "metadata.annotations"),
    }


def check_selector(c: Checker, raw: Any, path: str) -> dict[str, Any] | None:
    if raw is None:
        return None
    selector = c.mapping(raw, path)
    out: dict[str, Any] = {
        "matchLabels": check_labels(c, selector.get("matchLabels"), join(path, "matchLabels"))
    }
    expressions = []
    for i, item in enumerate(c.sequence(selector.get("matchExpressions"), join(path, "matchExpressions"))):
        p = join(join(path, "matchExpressions"), i)
        expr = c.mapping(item, p)
        key = c.string(expr.get("key"), join(p, "key"), required=True)
        for problem in names.qualified_name(key) if key else []:
            c.invalid(join(p, "key"), key, problem)
        operator = c.string(expr.get("operator"), join(p, "operator"), required=True)
        values = c.string_list(expr.get("values"), join(p, "values"))
        if operator and operator not in SELECTOR_OPERATORS:
            c.unsupported(join(p, "operator"), operator, SELECTOR_OPERATORS)
        elif operator in ("In", "NotIn") and not values:
            c.add(join(p, "values"), "Required value: must be specified when `operator` is 'In' or 'NotIn'")
        elif operator in ("Exists", "DoesNotExist") and values:
            c.forbidden(
                join(p, "values"), "may not be specified when `operator` is 'Exists' or 'DoesNotExist'"
            )
        for j, value in enumerate(values):
            for problem in names.label_value(value):
                c.invalid(join(join(p, "values"), j), value, problem)
        expressions.append({"key": key, "operator": operator, "values": values})
    out["matchExpressions"] = expressions
    return out


def check_node_requirements(c: Checker, raw: Any, path: str, *, fields: bool) -> list[dict[str, Any]]:
    out = []
    for i, item in enumerate(c.sequence(raw, path)):
        p = join(path, i)
        req = c.mapping(item, p)
        key = c.string(req.get("key"), join(p, "key"), required=True)
        operator = c.string(req.get("operator"), join(p, "operator"), required=True)
        values = c.string_list(req.get("values"), join(p, "values"))
        if fields:
            if key and key != NODE_NAME_FIELD:
                c.unsupported(join(p, "key"), key, (NODE_NAME_FIELD,))
            if operator and operator not in FIELD_SELECTOR_OPERATORS:
                c.unsupported(join(p, "operator"), operator, FIELD_SELECTOR_OPERATORS)
            if len(values) != 1:
                c.add(join(p, "values"), "Required value: must be only one value")
        else:
            if key:
                for problem in names.qualified_name(key):
                    c.invalid(join(p, "key"), key, problem)
            _check_node_operator(c, operator, values, p)
        out.append({"key": key, "operator": operator, "values": values})
    return out


def _check_node_operator(c: Checker, operator: str, values: list[str], p: str) -> None:
    if not operator:
        return
    if operator not in NODE_SELECTOR_OPERATORS:
        c.unsupported(join(p, "operator"), operator, NODE_SELECTOR_OPERATORS)
    elif operator in ("In", "NotIn") and not values:
        c.add(join(p, "values"), "Required value: must be specified when `operator` is 'In' or 'NotIn'")
    elif operator in ("Exists", "DoesNotExist") and values:
        c.forbidden(join(p, "values"), "may not be specified when `operator` is 'Exists' or 'DoesNotExist'")
    elif operator in ("Gt", "Lt"):
        if len(values) != 1:
            c.add(
                join(p, "values"),
                "Required value: must be specified single value when `operator` is 'Lt' or 'Gt'",
            )
        elif not values[0].lstrip("-").isdigit():
            c.invalid(join(p, "values"), values[0], "must be an integer when `operator` is 'Lt' or 'Gt'")


def check_node_selector_term(c: Checker, raw: Any, path: str) -> dict[str, Any]:
    term = c.mapping(raw, path)
    return {
        "matchExpressions": check_node_requirements(
            c, term.get("matchExpressions"), join(path, "matchExpressions"), fields=False
        ),
        "matchFields": check_node_requirements(
            c, term.get("matchFields"), join(path, "matchFields"), fields=True
        ),
    }


def check_affinity(c: Checker, raw: Any, path: str) -> dict[str, Any]:
    affinity = dict(c.mapping(raw, path))
    node_affinity = c.mapping(affinity.get("nodeAffinity"), join(path, "nodeAffinity"))
    if not node_affinity:
        return affinity
    na_path = join(path, "nodeAffinity")
    out = dict(node_affinity)
    required_path = join(na_path, "requiredDuringSchedulingIgnoredDuringExecution")
    required = node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution")
    if required is not None:
        selector = c.mapping(required, required_path)
        terms_path = join(required_path, "nodeSelectorTerms")
        raw_terms = c.sequence(selector.get("nodeSelectorTerms"), terms_path)
        if not raw_terms:
            c.add(terms_path, "Required value: must have at least one node selector term")
        out["requiredDuringSchedulingIgnoredDuringExecution"] = {
            "nodeSelectorTerms": [
                check_node_selector_term(c, t, join(terms_path, i)) for i, t in enumerate(raw_terms)
            ]
        }
    preferred_path = join(na_path, "preferredDuringSchedulingIgnoredDuringExecution")
    for i, item in enumerate(
        c.sequence(node_affinity.get("preferredDuringSchedulingIgnoredDuringExecution"), preferred_path)
    ):
        p = join(preferred_path, i)
        entry = c.mapping(item, p)
        weight = c.integer(entry.get("weight"), join(p, "weight"), minimum=1)
        if weight is not None and weight > 100:
            c.invalid(join(p, "weight"), weight, "must be in the range 1-100")
        check_node_selector_term(c, entry.get("preference"), join(p, "preference"))
    affinity["nodeAffinity"] = out
    return affinity


def check_tolerations(c: Checker, raw: Any, path: str) -> list[dict[str, Any]]:
    out = []
    for i, item in enumerate(c.sequence(raw, path)):
        p = join(path, i)
        tol = c.mapping(item, p)
        key = c.string(tol.get("key"), join(p, "key"))
        operator = c.string(tol.get("operator"), join(p, "operator"))
        value = c.string(tol.get("value"), join(p, "value"))
        effect = c.string(tol.get("effect"), join(p, "effect"))
        seconds = c.integer(tol.get("tolerationSeconds"), join(p, "tolerationSeconds"), minimum=None)
        if key:
            for problem in names.qualified_name(key):
                c.invalid(join(p, "key"), key, problem)
        elif operator != "Exists":
            c.invalid(
                join(p, "operator"),
                operator,
                'operator must be Exists when `key` is empty, which means "match all values and all keys"',
            )
        if operator not in TOLERATION_OPERATORS:
            c.unsupported(join(p, "operator"), operator, ("Equal", "Exists"))
        elif operator == "Exists" and value:
            c.invalid(join(p, "operator"), operator, "value must be empty when `operator` is 'Exists'")
        elif value:
            for problem in names.label_value(value):
                c.invalid(join(p, "value"), value, problem)
        if effect and effect not in TAINT_EFFECTS:
            c.unsupported(join(p, "effect"), effect, TAINT_EFFECTS)
        if seconds is not None and effect != "NoExecute":
            c.invalid(join(p, "effect"), effect, "effect must be 'NoExecute' when `tolerationSeconds` is set")
        entry: dict[str, Any] = {
            k: v for k, v in (("key", key), ("operator", operator), ("value", value), ("effect", effect)) if v
        }
        if seconds is not None:
            entry["tolerationSeconds"] = seconds
        out.append(entry)
    return out


def check_pod_spec(c: Checker, raw: Any, path: str) -> dict[str, Any]:
    spec = dict(c.mapping(raw, path, required=True))
    containers = c.sequence(spec.get("containers"), join(path, "containers"))
    if not containers and isinstance(spec.get("containers", []), list):
        c.required(join(path, "containers"))
    seen: set[str] = set()
    for i, item in enumerate(containers):
        p = join(join(path, "containers"), i)
        container = c.mapping(item, p)
        name = c.string(container.get("name"), join(p, "name"), required=True)
        if name:
            check_name(c, name, join(p, "name"), label=True)
            if name in seen:
                c.add(join(p, "name"), f'Duplicate value: "{name}"')
            seen.add(name)
        c.string(container.get("image"), join(p, "image"), required=True)
    policy = spec.get("restartPolicy")
    if policy != "Always":
        c.unsupported(join(path, "restartPolicy"), policy, ("Always",))
    if spec.get("activeDeadlineSeconds") is not None:
        c.forbidden(
            join(path, "activeDeadlineSeconds"), "activeDeadlineSeconds in DaemonSet is not Supported"
        )
    if "nodeSelector" in spec:
        spec["nodeSelector"] = check_labels(c, spec["nodeSelector"], join(path, "nodeSelector"))
    if "nodeName" in spec:
        node_name = c.string(spec["nodeName"], join(path, "nodeName"))
        if node_name:
            check_name(c, node_name, join(path, "nodeName"))
        spec["nodeName"] = node_name
    if "affinity" in spec:
        spec["affinity"] = check_affinity(c, spec["affinity"], join(path, "affinity"))
    if "tolerations" in spec:
        spec["tolerations"] = check_tolerations(c, spec["tolerations"], join(path, "tolerations"))
    if "hostNetwork" in spec:
        spec["hostNetwork"] = c.boolean(spec["hostNetwork"], join(path, "hostNetwork"))
    if "terminationGracePeriodSeconds" in spec:
        c.integer(spec["terminationGracePeriodSeconds"], join(path, "terminationGracePeriodSeconds"))
    return spec


def check_template(c: Checker, raw: Any, path: str) -> dict[str, Any]:
    template = c.mapping(raw, path, required=True)
    meta_path = join(path, "metadata")
    metadata = c.mapping(template.get("metadata"), meta_path)
    out_meta: dict[str, Any] = {
        "labels": check_labels(c, metadata.get("labels"), join(meta_path, "labels")),
        "annotations": check_annotations(c, metadata.get("annotations"), join(meta_path, "annotations")),
    }
    if metadata.get("name"):
        out_meta["name"] = c.string(metadata["name"], join(meta_path, "name"))
    return {"metadata": out_meta, "spec": check_pod_spec(c, template.get("spec"), join(path, "spec"))}


def check_update_strategy(c: Checker, raw: Any, path: str) -> dict[str, Any]:
    strategy = c.mapping(raw, path)
    kind = c.string(strategy.get("type"), join(path, "type"))
    if kind not in UPDATE_STRATEGIES:
        c.unsupported(join(path, "type"), kind, UPDATE_STRATEGIES)
        return {"type": kind}
    if kind == "OnDelete":
        return {"type": kind}
    ru_path = join(path, "rollingUpdate")
    if strategy.get("rollingUpdate") is None:
        c.required(ru_path)
        return {"type": kind}
    rolling = c.mapping(strategy.get("rollingUpdate"), ru_path)
    unavailable = _int_or_percent(c, rolling.get("maxUnavailable"), join(ru_path, "maxUnavailable"))
    surge = _int_or_percent(c, rolling.get("maxSurge"), join(ru_path, "maxSurge"))
    if unavailable is not None and surge is not None:
        if unavailable[0] != 0 and surge[0] != 0:
            c.invalid(
                join(ru_path, "maxSurge"),
                rolling.get("maxSurge"),
                "may not be set when maxUnavailable is non-zero",
            )
        elif unavailable[0] == 0 and surge[0] == 0:
            c.add(join(ru_path, "maxUnavailable"), "Required value: cannot be 0 when maxSurge is 0")
    out: dict[str, Any] = {
        "maxUnavailable": rolling.get("maxUnavailable"),
        "maxSurge": rolling.get("maxSurge"),
    }
    out.update(check_rollout_controls(c, rolling, ru_path))
    return {"type": kind, "rollingUpdate": out}


def check_rollout_controls(c: Checker, rolling: dict[str, Any], path: str) -> dict[str, Any]:
    """``partition`` (int or percent), ``paused`` and ``selector`` (a node label selector) of
    docs/rollout-control.md; only the fields set are returned, so a plain apps/v1 spec is unchanged."""
    out: dict[str, Any] = {}
    kind = rolling.get("rollingUpdateType")
    if kind is not None and kind not in KRUISE_ROLLING_TYPES:
        # OpenKruise's field: how a node is updated, which maxSurge already says here; in-place
        # updates have no counterpart (an executor replaces pods, never patches them)
        c.unsupported(join(path, "rollingUpdateType"), kind, KRUISE_ROLLING_TYPES)
    partition = rolling.get("partition")
    if partition is not None and _int_or_percent(c, partition, join(path, "partition")) is not None:
        out["partition"] = partition
    if rolling.get("paused") is not None and c.boolean(rolling["paused"], join(path, "paused")):
        out["paused"] = True
    if rolling.get("selector") is not None:
        selector = check_selector(c, rolling["selector"], join(path, "selector"))
        if selector is not None:
            out["selector"] = selector
    return out


def check_rollout_guard(c: Checker, spec: dict[str, Any]) -> dict[str, Any]:
    """``progressDeadlineSeconds`` and ``rolloutGuard`` (docs/rollout-control.md), when set."""
    out: dict[str, Any] = {}
    deadline = spec.get("progressDeadlineSeconds")
    if deadline is not None:
        seconds = c.integer(deadline, "spec.progressDeadlineSeconds", minimum=1)
        if seconds is not None:
            out["progressDeadlineSeconds"] = seconds
    if spec.get("rolloutGuard") is not None:
        guard = c.mapping(spec["rolloutGuard"], "spec.rolloutGuard")
        entry: dict[str, Any] = {}
        threshold = guard.get("failureThreshold")
        if threshold is not None:
            parsed = _int_or_percent(c, threshold, "spec.rolloutGuard.failureThreshold")
            if parsed is not None and parsed[0] == 0:
                c.invalid("spec.rolloutGuard.failureThreshold", threshold, "must be greater than 0")
            entry["failureThreshold"] = threshold
        if guard.get("autoRevert") is not None:
            entry["autoRevert"] = c.boolean(guard["autoRevert"], "spec.rolloutGuard.autoRevert")
        out["rolloutGuard"] = entry
    return out


def host_ports(pod_spec: dict[str, Any]) -> list[tuple[str, int]]:
    """``(path, hostPort)`` of every container port that binds a port on the node."""
    found = []
    for kind in ("initContainers", "containers"):
        containers = pod_spec.get(kind)
        for i, container in enumerate(containers if isinstance(containers, list) else []):
            ports = container.get("ports") if isinstance(container, dict) else None
            for j, port in enumerate(ports if isinstance(ports, list) else []):
                host = port.get("hostPort") if isinstance(port, dict) else None
                if isinstance(host, int) and not isinstance(host, bool) and host > 0:
                    found.append((f"spec.template.spec.{kind}[{i}].ports[{j}].hostPort", host))
    return found


def check_host_port_surge(c: Checker, spec: dict[str, Any], template: dict[str, Any]) -> None:
    """hostPort with maxSurge > 0 is refused (docs/rollout-control.md; kubernetes #106417): a surge
    starts the new pod beside the old one on the same node, and two pods cannot bind one host port,
    so the new pod could never start and the rollout would hang on every node."""
    strategy = spec.get("updateStrategy")
    if not isinstance(strategy, dict) or strategy.get("type") != "RollingUpdate":
        return
    rolling = strategy.get("rollingUpdate")
    surge = rolling.get("maxSurge") if isinstance(rolling, dict) else None
    try:
        number, _ = parse_int_or_percent(surge)
    except BadIntOrPercent:
        return
    if number <= 0:
        return
    for path, port in host_ports(template.get("spec", {})):
        c.invalid(
            "spec.updateStrategy.rollingUpdate.maxSurge",
            surge,
            f"may not be greater than 0 when {path} is set ({port}): a surge runs the new pod beside "
            "the old one on the same node, and two pods cannot bind one host port",
        )


def _int_or_percent(c: Checker, value: Any, path: str) -> tuple[int, bool] | None:
    try:
        number, percent = parse_int_or_percent(value)
    except BadIntOrPercent:
        c.invalid(
            path,
            value,
            "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%')"
            if isinstance(value, str)
            else "must be an integer or percentage (e.g. '5%')",
        )
        return None
    if number < 0:
        c.invalid(path, value, "must be greater than or equal to 0")
        return None
    if percent and number > 100:
        c.invalid(path, value, "must not be greater than 100%")
        return None
    return number, percent


def check_spec(c: Checker, raw: Any) -> dict[str, Any]:
    spec = c.mapping(raw, "spec", required=True)
    selector = check_selector(c, spec.get("selector"), "spec.selector")
    template = check_template(c, spec.get("template"), "spec.template")
    labels_path = "spec.template.metadata.labels"
    template_labels = template["metadata"]["labels"]
    if selector is None:
        c.required("spec.selector")
        c.invalid(labels_path, template_labels, "`selector` does not match template `labels` (no selector)")
    elif not selector["matchLabels"] and not selector["matchExpressions"]:
        c.invalid("spec.selector", selector, "empty selector is invalid for daemonset")
    elif not _selects(selector, template_labels):
        c.invalid(labels_path, template_labels, "`selector` does not match template `labels`")
    out: dict[str, Any] = {
        "template": template,
        "updateStrategy": check_update_strategy(c, spec.get("updateStrategy"), "spec.updateStrategy"),
    }
    if selector is not None:
        out["selector"] = selector
    out.update(check_rollout_guard(c, spec))
    check_host_port_surge(c, out, template)
    for field in ("minReadySeconds", "revisionHistoryLimit", "templateGeneration"):
        value = c.integer(spec.get(field), join("spec", field))
        if value is not None and field != "templateGeneration":
            out[field] = value
    return out


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    try:
        typed = msgspec.convert(selector, LabelSelector)
    except msgspec.ValidationError:
        return True  # the selector's own errors are reported on it
    return matches(typed, labels)
