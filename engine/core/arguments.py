"""kubectl's argument syntax: resource types, label and taint edits, label selectors, durations, object
references, points in the log, cascade policies.

Pure, so every accepted and refused spelling is pinned by table tests without a server; the CLI only
hands the strings over. Each refusal is an ``InvalidInput`` naming the argument (or flag) it came from,
printed by the CLI as ``error: <field>: <reason>`` exactly as before these parsers were gathered here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Literal

from engine.core import names
from engine.core.tolerations import TAINT_EFFECTS
from events.errors import InvalidInput
from events.k8s import LabelSelector, LabelSelectorRequirement, Taint

Kind = Literal["daemonsets", "pods", "nodes"]
Cascade = Literal["Background", "Foreground", "Orphan"]

#: every spelling of a resource type kubectl accepts for the three kinds we serve
KINDS: dict[str, Kind] = {
    "ds": "daemonsets",
    "daemonset": "daemonsets",
    "daemonsets": "daemonsets",
    "daemonset.apps": "daemonsets",
    "daemonsets.apps": "daemonsets",
    "po": "pods",
    "pod": "pods",
    "pods": "pods",
    "no": "nodes",
    "node": "nodes",
    "nodes": "nodes",
}

#: ``--cascade`` values: kubectl's current words and its older booleans
CASCADE: dict[str, Cascade] = {
    "background": "Background",
    "true": "Background",
    "foreground": "Foreground",
    "orphan": "Orphan",
    "false": "Orphan",
}

_DURATION_SCALE = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def kind_of(text: str) -> Kind:
    kind = KINDS.get(text.lower())
    if kind is None:
        raise InvalidInput(
            f'the server doesn\'t have a resource type "{text}" (use daemonsets, pods or nodes)', "TYPE"
        )
    return kind


def parse_label_args(args: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """``key=value`` to set, ``key-`` to remove (``dsctl label``); keys and values are checked with the
    API server's rules, so a label the server would refuse never reaches the log."""
    set_: dict[str, str] = {}
    remove: list[str] = []
    for a in args:
        if a.endswith("-") and "=" not in a:
            remove.append(a[:-1])
        elif "=" in a:
            k, _, v = a.partition("=")
            if not k:
                raise InvalidInput(f"invalid label spec {a!r}: empty key", a)
            set_[k] = v
        else:
            raise InvalidInput(f"invalid label spec {a!r}: use key=value to set, key- to remove", a)
    for k, v in set_.items():
        problems = names.qualified_name(k) + names.label_value(v)
        if problems:
            raise InvalidInput(f"invalid label {k}={v}: {'; '.join(problems)}", k)
    return set_, remove


def parse_taint_args(args: Sequence[str]) -> tuple[list[Taint], list[tuple[str, str]]]:
    """``key[=value]:Effect`` to add, ``key[:Effect]-`` to remove (``dsctl taint``). Removals are (key,
    effect) pairs, an empty effect meaning every effect of that key, as kubectl's."""
    add: list[Taint] = []
    remove: list[tuple[str, str]] = []
    effects = ", ".join(TAINT_EFFECTS)
    for a in args:
        if a.endswith("-"):
            key, _, effect = a[:-1].partition(":")
            key = key.split("=", 1)[0]
            if effect and effect not in TAINT_EFFECTS:
                raise InvalidInput(f"invalid taint effect {effect!r} in {a!r} (use {effects})", a)
            remove.append((key, effect))
            continue
        kv, sep, effect = a.partition(":")
        if not sep or effect not in TAINT_EFFECTS:
            raise InvalidInput(
                f"invalid taint spec {a!r}: use key=value:Effect or key:Effect- ({effects})", a
            )
        key, _, value = kv.partition("=")
        if not key:
            raise InvalidInput(f"invalid taint spec {a!r}: empty key", a)
        add.append(Taint(key=key, value=value, effect=effect))
    return add, remove


def parse_duration(text: str, flag: str = "--timeout") -> float:
    """kubectl durations: ``30s``, ``5m``, ``1h``, ``1m30s``, ``500ms``, or plain seconds; ``0`` means
    forever to the commands that wait."""
    value = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", value)
    if not parts or "".join(n + u for n, u in parts) != value:
        raise InvalidInput(f"invalid duration {text!r} (e.g. 30s, 5m, 1h30m)", flag)
    return sum(float(n) * _DURATION_SCALE[u] for n, u in parts)


def parse_ds_ref(text: str) -> str:
    """``ds/NAME`` (any spelling of the DaemonSet type) -> NAME: what ``rollout`` accepts."""
    kind, sep, name = text.partition("/")
    if not sep:
        raise InvalidInput(f"expected daemonset/NAME or ds/NAME, got {text!r}", "RESOURCE")
    if kind_of(kind) != "daemonsets":
        raise InvalidInput(f"rollout works on daemonsets only, not {kind!r}", "RESOURCE")
    if not name:
        raise InvalidInput("a name is required", "RESOURCE")
    return name


def parse_namespaced(ref: str, default_namespace: str = "default") -> tuple[str, str]:
    """``NAMESPACE/NAME``, or a bare ``NAME`` in ``default_namespace`` (``--ds`` of explain and audit)."""
    namespace, sep, name = ref.partition("/")
    return (namespace, name) if sep else (default_namespace, ref)


def parse_at(text: str, flag: str = "--at") -> int | datetime:
    """A point in the log: a stream sequence (``1234``) or an RFC 3339 time (``2026-11-22T09:00:00Z``;
    one without a zone is taken as UTC, the log's clock)."""
    value = text.strip()
    if value.isdigit():
        return int(value)
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(
            f"{text!r} is neither a stream sequence nor an RFC 3339 time (e.g. 2026-11-22T09:00:00Z)", flag
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def parse_time(text: str, flag: str) -> datetime:
    """An RFC 3339 time only (``--until``, ``--now``): a sequence number is refused."""
    when = parse_at(text, flag)
    if isinstance(when, int):
        raise InvalidInput(f"{text!r} is not an RFC 3339 time", flag)
    return when


def parse_since(text: str, now: datetime) -> datetime:
    """``--since``: a duration back from ``now`` (``10m``) or an RFC 3339 time; ``now`` is passed in so
    the answer is a function of its arguments."""
    try:
        return now - timedelta(seconds=parse_duration(text))
    except InvalidInput:
        pass
    problem = InvalidInput(f"{text!r} is neither a duration (10m, 1h30m) nor an RFC 3339 time", "--since")
    try:
        when = parse_at(text, "--since")
    except InvalidInput:
        raise problem from None
    if isinstance(when, int):
        raise problem
    return when


def parse_cascade(text: str) -> Cascade:
    policy = CASCADE.get(text.lower())
    if policy is None:
        raise InvalidInput(
            f"invalid cascade value {text!r} (use background, foreground or orphan)", "--cascade"
        )
    return policy


def parse_label_selector(text: str, flag: str = "--selector") -> LabelSelector:
    """kubectl's ``-l``: ``a=b,c!=d,e in (x,y),f notin (z),g,!h`` -> a LabelSelector."""
    reqs: list[LabelSelectorRequirement] = []
    for raw in _split_requirements(text):
        part = raw.strip()
        if not part:
            raise InvalidInput(f"empty requirement in selector {text!r}", flag)
        reqs.append(_requirement(part, flag))
    for r in reqs:
        if not r.key or " " in r.key:
            raise InvalidInput(f"invalid label key in selector {text!r}", flag)
    return LabelSelector(match_expressions=tuple(reqs))


def _split_requirements(text: str) -> list[str]:
    """Split on the commas outside parentheses (those inside separate an ``in`` list's values)."""
    parts: list[str] = []
    depth, current = 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return parts


def _requirement(part: str, flag: str) -> LabelSelectorRequirement:
    lowered = part.replace("\t", " ")
    for op_text, op in ((" notin ", "NotIn"), (" in ", "In")):
        if op_text in lowered:
            key, _, rest = lowered.partition(op_text)
            rest = rest.strip()
            if not (rest.startswith("(") and rest.endswith(")")):
                raise InvalidInput(f"values of {part!r} must be in parentheses", flag)
            values = tuple(v.strip() for v in rest[1:-1].split(",") if v.strip())
            return LabelSelectorRequirement(key=key.strip(), operator=op, values=values)
    if "!=" in part:
        key, _, value = part.partition("!=")
        return LabelSelectorRequirement(key=key.strip(), operator="NotIn", values=(value.strip(),))
    if "=" in part:
        key, _, value = part.partition("==") if "==" in part else part.partition("=")
        return LabelSelectorRequirement(key=key.strip(), operator="In", values=(value.strip(),))
    if part.startswith("!"):
        return LabelSelectorRequirement(key=part[1:].strip(), operator="DoesNotExist")
    return LabelSelectorRequirement(key=part, operator="Exists")
