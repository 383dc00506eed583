"""A generated corpus of malformed ingest requests: valid requests of every kind a publisher may send,
each broken on purpose in one of the ways issue 12's fuzzing found (and the others a hostile or careless
publisher would try), so that every request of the corpus must be refused.

Why a seeded generator and not hypothesis: the fuzz test sends ten thousand requests through a real
server within a minute, so it wants them made up front, cheaply, and the same on every run (a failure
names its case by index and family, and the same seed makes it again); every family is built to be
invalid whatever the random choices, so the test can demand a refusal for each one.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable
from typing import Any

import msgspec

from events.ingest_wire import EXECUTOR_ONLY, MAX_BATCH, MAX_DEPTH
from events.subjects import INGEST_BATCH_SUBJECT, INGEST_EVENT_SUBJECT
from tests.ingest.samples import daemonset_applied


class Case(msgspec.Struct, frozen=True):
    family: str
    subject: str
    data: bytes


def _dump(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode()


# --- valid requests to break ---------------------------------------------------------------------------

_DAEMONSET = daemonset_applied()


def _bases() -> list[dict[str, Any]]:
    return [
        {
            "type": "node.registered",
            "id": "cmdb-node-7-v1",
            "source": "cmdb",
            "data": {
                "name": "node-7",
                "labels": {"topology.kubernetes.io/zone": "eu-1a", "gpu": "true"},
                "taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}],
                "conditions": [{"type": "Ready", "status": "True"}],
                "capacity": {"cpu": "4", "memory": "16Gi"},
            },
        },
        {"type": "node.labels_changed", "data": {"name": "node-7.example.com", "labels": {"zone": "b"}}},
        {
            "type": "node.taints_changed",
            "data": {"name": "node-7", "taints": [{"key": "k", "value": "v", "effect": "NoExecute"}]},
        },
        {
            "type": "node.condition_changed",
            "causation_id": "c-1",
            "data": {"name": "node-7", "condition": {"type": "Ready", "status": "False", "reason": "Down"}},
        },
        {"type": "node.cordoned", "correlation_id": "r-1", "data": {"name": "node-7"}},
        {"type": "node.uncordoned", "data": {"name": "node-7"}},
        {"type": "node.removed", "occurred_at": "2026-03-01T12:00:00Z", "data": {"name": "node-7"}},
        copy.deepcopy(_DAEMONSET),
        {"type": "daemonset.deleted", "data": {"namespace": "kube-system", "name": "agent", "uid": "u-1"}},
    ]


BASES = _bases()

# --- what breaks a value of each kind, appended to it -------------------------------------------------

_CONTROL = ["\n", "\r", "\r\n", "\x00", "\t", "\x7f", "\x1b", "\x0b"]
#: breaks a DNS name, a label key or a label value wherever it is appended
_NAME_POISON = [*_CONTROL, " ", "_", "é", "*", ">", ".", "-", "\u2028", "/", "A" + "_"]
_ID_POISON = [*_CONTROL, " ", "é", "\u00a0", "x" * 129]
_QUANTITIES = [
    "NaN",
    "-4",
    "-1Gi",
    "Infinity",
    "inf",
    "1Zi",
    "4\n",
    " 4",
    "",
    "1e",
    "0x10",
    "1,000",
    "--1",
    "4 ",
]


def _name_sites(request: dict[str, Any]) -> list[tuple[list[Any], str]]:
    """(path to a string, kind) for every checked string of a request."""
    data = request["data"]
    sites: list[tuple[list[Any], str]] = []
    for key in ("name", "namespace"):
        if key in data:
            sites.append((["data", key], "name"))
    for key in data.get("labels", {}):
        sites.append((["data", "labels", key], "label_value"))
        sites.append((["data", "labels", {"key": key}], "label_key"))
    for i, _ in enumerate(data.get("taints", [])):
        sites.append((["data", "taints", i, "key"], "label_key"))
        sites.append((["data", "taints", i, "value"], "label_value"))
    for key in data.get("capacity", {}):
        sites.append((["data", "capacity", key], "quantity"))
    sites.append((["id"], "id"))
    sites.append((["source"], "text"))
    sites.append((["correlation_id"], "text"))
    if request["type"] == "daemonset.applied":
        sites.append((["data", "spec", "template", "metadata", "labels", "app"], "label_value"))
        sites.append((["data", "spec", "template", "spec", "containers", 0, "name"], "name"))
    return sites


def _get(obj: Any, path: list[Any]) -> Any:
    for step in path:
        obj = obj[step]
    return obj


def _set(obj: Any, path: list[Any], value: Any) -> None:
    *head, last = path
    parent = _get(obj, head)
    if isinstance(last, dict):  # rename a mapping key
        parent[value] = parent.pop(last["key"])
    else:
        parent[last] = value


def poisoned_value(rng: random.Random) -> dict[str, Any]:
    """One to three checked strings with something appended that their rule refuses."""
    request = copy.deepcopy(rng.choice(BASES))
    sites = _name_sites(request)
    for path, kind in rng.sample(sites, rng.randint(1, min(3, len(sites)))):
        if kind == "quantity":
            _set(request, path, rng.choice(_QUANTITIES))
            continue
        current = (
            path[-1]["key"]
            if isinstance(path[-1], dict)
            else _get(request, path)
            if _has(request, path)
            else "x"
        )
        if kind == "id":
            poison = rng.choice(_ID_POISON)
        elif kind == "text":
            poison = rng.choice(_CONTROL)
        else:
            poison = rng.choice(_NAME_POISON)
        value = str(current or "x") + poison
        if isinstance(path[-1], dict) and value in _get(request, path[:-1]):
            continue
        _set(request, path, value)
    if request == _original(request):  # nothing applied (a rename that collided): break the name instead
        request["data"]["name" if "name" in request["data"] else "uid"] = "Bad_Name\n"
    return request


def _has(obj: Any, path: list[Any]) -> bool:
    try:
        _get(obj, path)
        return True
    except (KeyError, IndexError, TypeError):
        return False


def _original(request: dict[str, Any]) -> dict[str, Any] | None:
    return next((b for b in BASES if b == request), None)


_WRONG = [7, -1, 1.5, None, True, [], {}, [1], {"a": 1}, "x"]


def wrong_type(rng: random.Random) -> dict[str, Any]:
    """A field of the wrong JSON type, or a number out of its range."""
    request = copy.deepcopy(rng.choice(BASES))
    data = request["data"]
    choice = rng.randrange(8)
    if choice == 0:
        request["type"] = rng.choice([1, None, [], {}, True])
    elif choice == 1:
        request["data"] = rng.choice([[], "x", 1, None, True, [{"name": "n"}]])
    elif choice == 2:
        request["schema_version"] = rng.choice(["1", 1.5, -1, 0, 99, 2**70, [], {}])
    elif choice == 3:
        request["occurred_at"] = rng.choice(
            ["yesterday", 0, "2026-01-01T00:00:00", "2026-13-01T00:00:00Z", "", [], "2026-03-01 12:00"]
        )
    elif choice == 4 and request["type"] == "daemonset.applied":
        data["generation"] = rng.choice([0, -1, "1", 1.5, None, 2**63, 2**70])
    elif choice == 5 and "labels" in data:
        data["labels"] = rng.choice(["zone=a", [1], {"k": 1}, {"k": None, "j": [1]}, 7])
    elif choice == 6 and "taints" in data:
        data["taints"] = rng.choice([{}, "x", [{"key": "k"}], [{"key": "k", "effect": "Never"}], [1]])
    else:
        key = "name" if "name" in data else "uid"
        data[key] = rng.choice([v for v in _WRONG if not isinstance(v, str)])
    return request


def executor_or_engine_type(rng: random.Random) -> dict[str, Any]:
    """A type only an executor or the engine writes, or one that does not exist."""
    others = [
        "decision.recorded",
        "leader.elected",
        "node.exploded",
        "",
        "NODE.REGISTERED",
        "node.registered\n",
    ]
    tag = rng.choice([*sorted(EXECUTOR_ONLY), *others, "pod", "pod.", "pods.ready"])
    data: dict[str, Any] = {"namespace": "kube-system", "name": "agent-x", "node": "node-7"}
    if tag == "pod.created":
        data["uid"] = "u-1"
    elif tag == "leader.elected":
        data = {"holder": "intruder", "epoch": rng.randint(1, 10**9)}
    elif tag == "pod.failed":
        data["exit_code"] = rng.choice([-1, 0, 137])
    return {"type": tag, "data": data, "source": "kubelet-bridge"}


_UNKNOWN = ["colour", "corelation_id", "a b", "é", "", "$", "\n", "data ", "Type", "x" * 300]


def unknown_field(rng: random.Random) -> dict[str, Any]:
    request = copy.deepcopy(rng.choice(BASES))
    name = rng.choice(_UNKNOWN)
    if rng.random() < 0.5 or name in request["data"]:
        request[name] = rng.choice(_WRONG)
    else:
        request["data"][name] = rng.choice(_WRONG)
    return request


def missing_required(rng: random.Random) -> dict[str, Any]:
    request = copy.deepcopy(rng.choice(BASES))
    data = request["data"]
    options: list[Callable[[], Any]] = [lambda: request.pop("type"), lambda: request.pop("data")]
    if "name" in data:
        options.append(lambda: data.pop("name"))
    if "uid" in data:
        options.append(lambda: data.update(uid=""))
    if data.get("taints"):
        options.append(lambda: data["taints"][0].pop("effect"))
    if "condition" in data:
        options.append(lambda: data["condition"].pop(rng.choice(["type", "status"])))
    rng.choice(options)()
    return request


def bad_name(rng: random.Random) -> dict[str, Any]:
    """Names, labels and taints that break Kubernetes' rules without an odd character."""
    request = copy.deepcopy(rng.choice(BASES[:3]))
    data = request["data"]
    choice = rng.randrange(6)
    if choice == 0:
        data["name"] = rng.choice(["Node-7", "-edge", "edge-", "a..b", "x" * 254, "", "a_b", ".a"])
    elif choice == 1:
        data["labels"] = {rng.choice(["a/b/c", "/k", "k/", "-k", "x" * 64, "é"]): "v"}
    elif choice == 2:
        data["labels"] = {"k": rng.choice(["x" * 64, "-v", "v-", "a b", "é", "v."])}
    elif choice == 3:
        data["taints"] = [
            {"key": "k", "effect": "NoSchedule"},
            {"key": "k", "value": "w", "effect": "NoSchedule"},
        ]
    elif choice == 4:
        data["taints"] = [{"key": "k", "effect": rng.choice(["Never", "noschedule", "", "NoSchedule "])}]
    else:
        data["conditions"] = [{"type": rng.choice(["Ready", ""]), "status": rng.choice(["yes", "true", ""])}]
    return request


def bad_daemonset(rng: random.Random) -> dict[str, Any]:
    """A DaemonSet ``dsctl apply`` would refuse."""
    request = copy.deepcopy(_DAEMONSET)
    data = request["data"]
    spec = data["spec"]
    pod = spec["template"]["spec"]
    choice = rng.randrange(10)
    if choice == 0:
        spec["selector"] = {"matchLabels": {"app": "other"}}
    elif choice == 1:
        pod["restartPolicy"] = rng.choice(["Never", "OnFailure", "always", 1])  # "" defaults to Always
    elif choice == 2:
        spec[rng.choice(["minReadySeconds", "revisionHistoryLimit"])] = rng.choice([-1, -100, "3", 1.5])
    elif choice == 3:
        spec["updateStrategy"] = {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": rng.choice(["-1", "101%", "50%\n", "x", -1, "%", "1.5%"])},
        }
    elif choice == 4:
        pod["terminationGracePeriodSeconds"] = rng.choice([-1, "30", 1.5])
    elif choice == 5:
        pod["containers"][0]["name"] = rng.choice(["Agent", "agent\n", "", "a_b"])
    elif choice == 6:
        pod["containers"][0].pop("image")
    elif choice == 7:
        pod["tolerations"] = [
            {"key": "k", "operator": "Equal", "value": "v", "effect": rng.choice(["Never", "x"])}
        ]
    elif choice == 8:
        data["generation"] = rng.choice([0, -3])
    else:
        data[rng.choice(["template_hash", "uid"])] = ""
    return request


def nested(levels: int, kind: str) -> bytes:
    if kind == "array":
        return b"[" * levels + b"]" * levels
    if kind == "object":
        return b'{"a":' * levels + b"{}" + b"}" * levels
    return b"[" * levels  # never closed


def too_deep(rng: random.Random) -> bytes:
    """Arrays or objects nested past the limit, where a value may be anything (or at the top)."""
    levels = rng.choice([MAX_DEPTH + 1, MAX_DEPTH + 2, 100, 1000, 5000, 20_000, rng.randint(65, 3000)])
    deep = nested(levels, rng.choice(["array", "object", "open"]))
    where = rng.randrange(4)
    if where == 0:
        return deep
    if where == 1:
        return b'{"type": "node.registered", "data": {"name": "n", "capacity": ' + deep + b"}}"
    if where == 2:
        return b'{"type": "node.cordoned", "extra": ' + deep + b', "data": {"name": "n"}}'
    return b'{"type": "daemonset.applied", "data": ' + deep + b"}"


def broken_syntax(rng: random.Random) -> bytes:
    """Bytes that are not one JSON value: cut short, an invalid byte inside, garbage after, not UTF-8."""
    valid = _dump(rng.choice(BASES))
    choice = rng.randrange(7)
    if choice == 0:
        return valid[: rng.randrange(0, len(valid) - 1)]
    if choice == 1:
        at = rng.randrange(len(valid))
        return valid[:at] + bytes([rng.choice([0xFF, 0xFE, 0xC3, 0x00, 0x01, 0x1F, 0x80])]) + valid[at:]
    if choice == 2:
        return valid + rng.choice([b"x", b"}", b"{}", b",", b"\x00", b"]"])
    if choice == 3:
        return b"\xef\xbb\xbf" + valid
    if choice == 4:
        return bytes(rng.randrange(256) for _ in range(rng.randint(1, 200)))
    if choice == 5:
        return rng.choice([b"", b" ", b"null", b"1", b'"x"', b"true", b"{}", b'{"type": "node.cordoned"}'])
    return valid.replace(b'"', b"'", rng.randint(1, 4))


def _item(rng: random.Random) -> bytes:
    """One malformed request, of any family but the sized ones; never blank (a blank JSON line is
    skipped, which would leave a batch of good items only)."""
    while True:
        made = rng.choice(_ITEM_FAMILIES)(rng)
        data = made if isinstance(made, bytes) else _dump(made)
        if data.strip():
            return data


_CORDON = b'{"type":"node.cordoned","data":{"name":"a"}}'


def _good(rng: random.Random, n: int) -> bytes:
    request = copy.deepcopy(rng.choice(BASES))
    request.pop("id", None)
    request["data"]["name" if "name" in request["data"] else "uid"] = f"ok-{n}"
    return _dump(request)


def bad_batch(rng: random.Random) -> bytes:
    """A batch with at least one bad item among good ones (JSON lines or an array), or a batch that is
    wrong as a whole."""
    choice = rng.randrange(20)
    if choice < 2:
        return rng.choice(
            [b"[]", b"\n\n", b" ", b"[1, 2]", b"[[]]", b'["x"]', b"{", b"[" + b"{}," * 3 + b"]"]
        )
    if choice < 4:
        same = _dump({"type": "node.cordoned", "id": "same-id", "data": {"name": "a"}})
        return same + b"\n" + _good(rng, 1) + b"\n" + same.replace(b'"a"', b'"b"')
    if choice == 4:
        return b"\n".join([_CORDON] * (MAX_BATCH + rng.randint(1, 5)))
    items = [_good(rng, i) for i in range(rng.randint(0, 12))]
    for _ in range(rng.randint(1, 3)):
        items.insert(rng.randint(0, len(items)), _item(rng))
    if rng.random() < 0.5:
        return b"\n".join(items)
    return b"[" + b",".join(items) + b"]"


def too_large_when_stored(rng: random.Random, max_payload: int) -> bytes:
    """A request under the server's max_payload whose envelope, once completed, is over it."""
    short = rng.randint(100, 800)
    condition = {"type": "Ready", "status": "True", "message": ""}
    empty = _dump({"type": "node.condition_changed", "data": {"name": "n", "condition": condition}})
    fill = max_payload - short - len(empty)
    return empty.replace(b'"message": ""', b'"message": "' + b"m" * fill + b'"')


_ITEM_FAMILIES: list[Callable[[random.Random], dict[str, Any] | bytes]] = [
    poisoned_value,
    wrong_type,
    executor_or_engine_type,
    unknown_field,
    missing_required,
    bad_name,
    bad_daemonset,
    too_deep,
    broken_syntax,
]
#: family -> weight; every family is malformed whatever it draws
WEIGHTS: dict[Callable[[random.Random], dict[str, Any] | bytes], int] = {
    poisoned_value: 24,
    wrong_type: 10,
    executor_or_engine_type: 8,
    unknown_field: 7,
    missing_required: 5,
    bad_name: 6,
    bad_daemonset: 6,
    too_deep: 5,
    broken_syntax: 14,
    bad_batch: 15,
}


def corpus(count: int, *, seed: int, max_payload: int, oversized: int = 12) -> list[Case]:
    """``count`` malformed requests (``oversized`` of them near ``max_payload``), the same for a seed."""
    rng = random.Random(seed)
    families = list(WEIGHTS)
    weights = list(WEIGHTS.values())
    cases = [
        Case("too_large_when_stored", INGEST_EVENT_SUBJECT, too_large_when_stored(rng, max_payload))
        for _ in range(oversized)
    ]
    while len(cases) < count:
        family = rng.choices(families, weights)[0]
        made = family(rng)
        data = made if isinstance(made, bytes) else _dump(made)
        if family is bad_batch:
            subject = INGEST_BATCH_SUBJECT
        else:
            subject = INGEST_BATCH_SUBJECT if rng.random() < 0.15 else INGEST_EVENT_SUBJECT
        cases.append(Case(family.__name__, subject, data))
    return cases
