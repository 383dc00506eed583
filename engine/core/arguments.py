"""kubectl's argument syntax: resource types, label and taint edits, label selectors, durations, object
references, points in the log, cascade policies.

Pure, so every accepted and refused spelling is pinned by table tests without a server; the CLI only
hands the strings over. Each refusal is an ``InvalidInput`` naming the argument (or flag) it came from,
printed by the CLI as ``error: <field>: <reason>`` exactly as before these parsers were gathered here.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Literal

import msgspec

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


# --- objects on the command line: TYPE NAME..., TYPE/NAME..., TYPE,TYPE -----------------------------


#: kubectl's ``all`` category, of the kinds served here, in its order (nodes are not in it)
ALL: tuple[Kind, ...] = ("pods", "daemonsets")


class Target(msgspec.Struct, frozen=True):
    """One resource type and the names asked of it, in the order given (none: every object)."""

    kind: Kind
    names: tuple[str, ...] = ()


def parse_targets(args: Sequence[str], verb: str, *, kinds: Sequence[Kind] = ()) -> list[Target]:
    """kubectl's object arguments: ``TYPE[,TYPE...] [NAME...]`` or ``TYPE/NAME...`` (the two forms not
    mixed, as kubectl refuses). Types keep the order they were first named in; ``kinds`` (when given)
    are the only types this verb works on."""
    if not args:
        raise InvalidInput(
            f"you must specify the type of resource to {verb} (daemonsets, pods or nodes), as TYPE NAME "
            "or TYPE/NAME",
            "TYPE",
        )
    grouped: dict[Kind, list[str]] = {}
    if any("/" in a for a in args):
        for a in args:
            type_, sep, name = a.partition("/")
            if not sep:
                raise InvalidInput(
                    f"there is no need to specify a resource type as a separate argument when passing "
                    f"arguments in resource/name form (e.g. 'dsctl {verb} resource/<name>' instead of "
                    f"'dsctl {verb} resource resource/<name>'): {a!r}",
                    "TYPE/NAME",
                )
            if not name or "/" in name or "," in type_:
                raise InvalidInput(f"{a!r} is not of the form TYPE/NAME", "TYPE/NAME")
            grouped.setdefault(kind_of(type_), []).append(name)
    else:
        types, *names = args
        for part in types.split(","):
            if not part:
                raise InvalidInput(f"empty resource type in {types!r}", "TYPE")
            for kind in ALL if part.lower() == "all" else (kind_of(part),):
                grouped.setdefault(kind, [])
        for name in names:
            if not name:
                raise InvalidInput("a name cannot be empty", "NAME")
        for kind in grouped:
            grouped[kind] = list(names)
    if kinds:
        for kind in grouped:
            if kind not in kinds:
                allowed = " or ".join(kinds)
                raise InvalidInput(f"{verb} works on {allowed} only, not {kind}", "TYPE")
    return [Target(kind, tuple(dict.fromkeys(names))) for kind, names in grouped.items()]


def parse_node_names(args: Sequence[str], verb: str) -> list[str]:
    """``cordon``/``uncordon``: ``NODE...`` or ``node/NODE...``."""
    if not args:
        raise InvalidInput(f"{verb} needs a node name (NODE or node/NODE)", "NODE")
    names = []
    for a in args:
        type_, sep, name = a.partition("/")
        if sep:
            if kind_of(type_) != "nodes":
                raise InvalidInput(f"{verb} works on nodes only, not {type_!r}", "NODE")
        else:
            name = a
        if not name:
            raise InvalidInput(f"{a!r} names no node", "NODE")
        names.append(name)
    return list(dict.fromkeys(names))


def split_edits(args: Sequence[str], verb: str) -> tuple[list[Target], list[str]]:
    """``label``/``taint``: the objects (``nodes n1 n2`` or ``node/n1``) and the edits after them. An
    edit has ``=`` or ``:`` in it or ends with ``-`` (no node name can: they are DNS subdomains)."""
    objects = [a for a in args if not _is_edit(a)]
    edits = [a for a in args if _is_edit(a)]
    targets = parse_targets(objects, verb, kinds=("nodes",))
    names = [n for t in targets for n in t.names]
    if not names:
        raise InvalidInput(f"{verb} needs a node name (nodes NAME or node/NAME)", "NAME")
    if not edits:
        form = "KEY=VALUE or KEY-" if verb == "label" else "KEY[=VALUE]:EFFECT or KEY[:EFFECT]-"
        read = ", ".join(repr(n) for n in names)
        raise InvalidInput(
            f"at least one {verb} update is required ({form}; {read} read as node names)", "NAME"
        )
    return targets, edits


def _is_edit(arg: str) -> bool:
    return "=" in arg or ":" in arg or arg.endswith("-")


def parse_rollout_args(args: Sequence[str], *, many: bool = False) -> tuple[list[str], str | None]:
    """``rollout ACTION``'s arguments -> (NAMES, VALUE): ``ds/NAME [VALUE]`` or ``daemonset NAME
    [VALUE]``; VALUE is ``partition``'s N or P%. With ``many`` (restart, pause, resume, as kubectl's)
    several DaemonSets: ``ds/a ds/b`` or ``daemonset a b``, and no VALUE."""
    if not args:
        raise InvalidInput("rollout needs a DaemonSet: ds/NAME or daemonset NAME", "RESOURCE")
    k = next((i for i, a in enumerate(args) if "/" not in a), len(args))
    if k:
        if any("/" in a for a in args[k:]):
            raise InvalidInput(f"unexpected arguments: {' '.join(args[k:])}", "RESOURCE")
        names, rest = [parse_ds_ref(r) for r in args[:k]], list(args[k:])
    else:
        if kind_of(args[0]) != "daemonsets":
            raise InvalidInput(f"rollout works on daemonsets only, not {args[0]!r}", "RESOURCE")
        if len(args) < 2:
            raise InvalidInput(f"{args[0]} needs a NAME (daemonset NAME or ds/NAME)", "RESOURCE")
        names, rest = (list(args[1:]), []) if many else ([args[1]], list(args[2:]))
    if len(names) > 1 and not many:
        raise InvalidInput("this rollout action takes one DaemonSet", "RESOURCE")
    if len(rest) > (0 if many else 1):
        raise InvalidInput(f"unexpected arguments: {' '.join(rest[0 if many else 1 :])}", "RESOURCE")
    return list(dict.fromkeys(names)), rest[0] if rest else None


# --- --dry-run ----------------------------------------------------------------------------------------

DryRun = Literal["none", "client", "server"]
#: what a bare ``--dry-run`` (no value) is read as; kubectl deprecated that form, meaning client
BARE_DRY_RUN = "client"


def parse_dry_run(text: str, allowed: Sequence[DryRun] = ("none", "client")) -> DryRun:
    """``--dry-run=none|client|server`` (as kubectl's; ``server`` only where the verb has it)."""
    value = text.strip().lower()
    for choice in allowed:
        if value == choice:
            return choice
    raise InvalidInput(f"invalid value {text!r}: must be {', '.join(repr(a) for a in allowed)}", "--dry-run")


# --- points in the log for --at --------------------------------------------------------------------------


def parse_point(text: str, now: datetime, flag: str = "--at") -> int | datetime:
    """What ``--at`` takes: a stream sequence (``1234``), a duration back from ``now`` (``5m``, as
    ``audit --since``), or an RFC 3339 time."""
    value = text.strip()
    if value.isdigit():
        return int(value)
    try:
        return now - timedelta(seconds=parse_duration(value, flag))
    except InvalidInput:
        pass
    try:
        return parse_at(value, flag)
    except InvalidInput:
        raise InvalidInput(
            f"{text!r} is neither a stream sequence, a duration (5m, 1h30m) nor an RFC 3339 time "
            "(e.g. 2026-11-22T09:00:00Z)",
            flag,
        ) from None


def check_point(
    point: int | datetime,
    *,
    first_seq: int,
    last_seq: int,
    first_time: datetime | None,
    now: datetime,
    flag: str = "--at",
) -> None:
    """A point the log can answer for: a sequence from the first to the last stored one, a time from
    the first event to now. Past either end is an error, never silently the present or the empty
    start."""
    if isinstance(point, int):
        if last_seq == 0:
            raise InvalidInput("the log is empty: there is no sequence to show", flag)
        if point > last_seq:
            raise InvalidInput(
                f"sequence {point} is past the end of the log (last sequence {last_seq})", flag
            )
        if point < first_seq:
            raise InvalidInput(f"sequence {point} is before the first in the log ({first_seq})", flag)
        return
    stamp = point.isoformat().replace("+00:00", "Z")
    if first_time is None:
        raise InvalidInput("the log is empty: there is no time to show", flag)
    if point < first_time:
        first = first_time.isoformat().replace("+00:00", "Z")
        raise InvalidInput(f"{stamp} is before the first event in the log ({first})", flag)
    if point > now:
        raise InvalidInput(f"{stamp} is in the future", flag)


# --- did you mean -------------------------------------------------------------------------------------


def did_you_mean(word: str, candidates: Sequence[str]) -> str | None:
    """The closest of ``candidates`` to a mistyped ``word`` (difflib's ratio, at least 0.6), or None.
    Flags are compared without their dashes, which every flag shares and which would make ``--bogus``
    look like ``--user``."""
    bare = {c.lstrip("-"): c for c in candidates}
    close = difflib.get_close_matches(word.lstrip("-"), list(bare), n=1, cutoff=0.6)
    return bare[close[0]] if close else None
