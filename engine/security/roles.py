"""The roles on the bus and the subjects each may publish and subscribe to.

Why subject permissions: with no authorisation anyone who reaches the server can publish a command on
``dse.cmd.<node>``, append a decision or a ``leader.elected``, overwrite the engine's lease key or
delete ``DSE_EVENTS`` (each was done against the unsecured setup). NATS checks every PUB and SUB
against the user's allow lists, and JetStream is driven by requests on ``$JS.API.*``, KV writes are
publishes on ``$KV.<bucket>.<key>`` and object store writes on ``$O.<bucket>.*``, so one allow list
per role says what it may do to the log.
Everything not listed is denied (the server logs a "Publish Violation" or "Subscription Violation"
naming the user and subject; ``tests/security`` runs each real process under its role and finds none).

The subjects are derived from the code, not from documentation:

- reading a stream (``engine/store/ordered.py``, nats-py's KV ``keys()`` and object ``get``) creates an
  ephemeral push consumer (``CONSUMER.CREATE.<stream>``, the one-token form, which the server refuses
  to make durable), answers flow control on ``$JS.FC.<stream>.>``, looks it up (``CONSUMER.INFO``) and
  deletes it when done (``CONSUMER.DELETE``); point reads are ``STREAM.MSG.GET`` or ``DIRECT.GET``
  (whose last-by-subject form carries the subject after the stream name);
- every process checks the streams it needs with ``STREAM.INFO`` (``engine/store/setup.py``);
- the engine alone creates and updates stream definitions (``setup.ensure``); no role but admin may
  delete or purge a stream, except the engine purging old snapshot chunks (nats-py's object ``put``);
- replies come to a per-role inbox prefix (``_INBOX_<role>``, set on the connection), so no role can
  subscribe to another role's replies; publishers keep the standard ``_INBOX`` so that any NATS client
  works unchanged (they can see only other publishers' replies);
- the ingest service answers requests with ``allow_responses`` (only to the reply subject of a request
  it received, once), and registers with nats-micro (``$SRV.PING|INFO|STATS[.dsctl-ingest[.<id>]]``);
  so does the engine's query service (``dse.query.<verb>``, ``dsctl-query``), whose answers come in parts;
- ``dsctl logs`` asks a node's executor on ``dse.logs.<node>`` and gives a reply subject under
  ``dse.logs.<node>.<reader>`` (``engine/executor/pod_logs.py``): the executor (a fleet: every node) may
  subscribe to the requests and publish the answers of its own node and nothing else, the admin and the
  auditor may ask and read the answers, no other role. Not ``allow_responses``: an executor receives
  messages whose reply subject belongs to another role (the engine's JetStream publishes of the
  commands it reads), and ``allow_responses`` would let it answer those. An auditor can read every
  reader's answers, which says nothing it could not ask for itself.

**What the permissions cannot narrow.** A batched direct get on ``DSE_COMMANDS`` names the subject in
its payload, so an executor may *read* any node's commands (it cannot publish or carry them out: its
wake-up subscription and reports are its node's only). A push consumer's deliver subject is in the
payload too, and nats-server does not check it against the creator's permissions: a role that may read
a stream can have the server copy that stream's messages onto a subject someone listens to (measured
in ``tests/security``; docs/deploy.md, "Roles and credentials", says what it allows and what not).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from enum import StrEnum

import msgspec

from engine.store.definitions import CHECKPOINT_BUCKET, LEADER_BUCKET, SNAPSHOTS_BUCKET
from engine.store.lease import FLEET_KEY, LEASE_KEY, NODE_LEASE_BUCKET
from engine.store.setup import all_definitions
from events.ingest_wire import SERVICE_NAME
from events.subjects import (
    COMMAND_TREE,
    COMMANDS_STREAM,
    DECISION_TREE,
    EVENTS_STREAM,
    INGEST_BATCH_SUBJECT,
    INGEST_EVENT_SUBJECT,
    PREFIX,
    REJECTED_STREAM,
    command_subject,
    logs_reply,
    logs_request,
    pod_reports,
    token,
)

API = "$JS.API"
#: the standard reply prefix of every NATS client (what a publisher in any language uses)
STANDARD_INBOX = "_INBOX"
LEADER_STREAM = f"KV_{LEADER_BUCKET}"
NODE_LEASE_STREAM = f"KV_{NODE_LEASE_BUCKET}"
CHECKPOINT_STREAM = f"KV_{CHECKPOINT_BUCKET}"
SNAPSHOT_STREAM = f"OBJ_{SNAPSHOTS_BUCKET}"


class Role(StrEnum):
    ADMIN = "admin"
    ENGINE = "engine"
    EXECUTOR = "executor"
    FLEET = "fleet"
    INGEST = "ingest"
    PUBLISHER = "publisher"
    AUDITOR = "auditor"


#: what each role is for, in the words docs/deploy.md and ``dsctl admin credentials`` use
PURPOSE: dict[Role, str] = {
    Role.ADMIN: "everything (the operator, the CLI's writes: apply, label, delete pod, admin streams)",
    Role.ENGINE: "decisions and leader markers, commands, the leader lease, snapshots, stream set-up",
    Role.EXECUTOR: "one node: its commands, its pod reports and logs, its node lease and checkpoint",
    Role.FLEET: "a simulated fleet: every node's commands, pod reports and logs",
    Role.INGEST: "the ingest service: node and DaemonSet facts, rejected input, answering publishers",
    Role.PUBLISHER: "other services: the ingest request subjects only",
    Role.AUDITOR: "read-only: stream info, reads, direct gets, reading consumers, pod logs",
}


class Identity(msgspec.Struct, frozen=True):
    """One set of credentials: a role, and for an executor the node it serves."""

    role: Role
    node: str | None = None

    def __post_init__(self) -> None:
        if (self.role is Role.EXECUTOR) != (self.node is not None):
            raise ValueError("an executor's credentials name its node, and only an executor's do")
        if self.node is not None and not _valid_node(self.node):
            raise ValueError(f"{self.node!r} is not a node name (lowercase letters, digits, '-', '.')")

    @property
    def name(self) -> str:
        """The file name stem and the name in logs: ``engine``, ``executor-node7``."""
        return f"{self.role.value}-{self.node}" if self.node is not None else self.role.value

    @classmethod
    def parse(cls, name: str) -> Identity:
        if name.startswith(f"{Role.EXECUTOR.value}-"):
            return cls(Role.EXECUTOR, name[len(Role.EXECUTOR.value) + 1 :])
        try:
            return cls(Role(name))
        except ValueError:
            roles = ", ".join(r.value for r in Role if r is not Role.EXECUTOR)
            raise ValueError(f"{name!r} is not a role ({roles}, or executor-<node>)") from None

    def __str__(self) -> str:
        return self.name


def _valid_node(name: str) -> bool:
    # DNS-1123 subdomain, as the log's names are (events validate them); no wildcard can slip into a
    # permission through a node name
    return (
        0 < len(name) <= 253
        and name[0].isalnum()
        and name[-1].isalnum()
        and all(c.islower() or c.isdigit() or c in "-." for c in name)
    )


class Permissions(msgspec.Struct, frozen=True, kw_only=True):
    """What one NATS user may do: allow lists (everything else denied) and how many messages it may
    send to the reply subject of each request it received (``allow_responses``; 0: none)."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    responses: int = 0


#: the query service answers in parts of at most max_payload each (engine/query/protocol.py): a listing
#: of tens of thousands of pods is tens of parts; this bounds one request's answer to 1,000
QUERY_PARTS = 1000


# --- building blocks -------------------------------------------------------------------------------


def stream_info(*streams: str) -> list[str]:
    return [f"{API}.STREAM.INFO.{s}" for s in streams]


def point_reads(stream: str) -> list[str]:
    """Reading single messages: by sequence or last-by-subject, from the leader or any replica."""
    return [f"{API}.STREAM.MSG.GET.{stream}", f"{API}.DIRECT.GET.{stream}", f"{API}.DIRECT.GET.{stream}.>"]


def consumer_reads(stream: str) -> list[str]:
    """Reading a range with an ephemeral ordered push consumer, and cleaning it up."""
    return [
        f"{API}.CONSUMER.CREATE.{stream}",
        f"{API}.CONSUMER.INFO.{stream}.*",
        f"{API}.CONSUMER.DELETE.{stream}.*",
        f"$JS.FC.{stream}.>",
    ]


def reads(*streams: str) -> list[str]:
    out: list[str] = []
    for s in streams:
        out += [*stream_info(s), *point_reads(s), *consumer_reads(s)]
    return out


def kv_key(bucket: str, key: str) -> str:
    """The subject of one key: writes (put, create, update, delete) are publishes on it."""
    return f"$KV.{bucket}.{key}"


def inbox_prefix(identity: Identity) -> str:
    """The reply prefix a process of this identity uses: each role its own, so none can read another's
    replies; an executor's is per node. Publishers keep the standard one (see the module docstring)."""
    if identity.role is Role.PUBLISHER:
        return STANDARD_INBOX
    if identity.node is not None:
        return f"_INBOX_{identity.role.value}.{token(identity.node)}"
    return f"_INBOX_{identity.role.value}"


def defined_streams() -> list[str]:
    """Every stream, bucket and object store the engine's set-up creates (``setup.all_definitions``)."""
    return [d.name for d in all_definitions()]


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


MICRO_VERBS = ("PING", "INFO", "STATS")


#: the engine's query service (engine/query): its micro name and request subjects
QUERY_SERVICE = "dsctl-query"
QUERY_TREE = f"{PREFIX}.query.>"


def micro_discovery(service: str = SERVICE_NAME) -> list[str]:
    """nats-micro discovery of a service (the ingest service by default): every service, by name, by
    name and id."""
    out: list[str] = []
    for verb in MICRO_VERBS:
        out += [f"$SRV.{verb}", f"$SRV.{verb}.{service}", f"$SRV.{verb}.{service}.*"]
    return out


# --- the table -------------------------------------------------------------------------------------


def _engine(inbox: str, streams: Sequence[str]) -> Permissions:
    publish = [
        # set-up: create and update every definition, never delete (setup.ensure)
        *stream_info(*streams),
        *(f"{API}.STREAM.CREATE.{s}" for s in streams),
        *(f"{API}.STREAM.UPDATE.{s}" for s in streams),
        # the log: folding it, reading single events, appending decisions and leader markers only
        *reads(EVENTS_STREAM),
        DECISION_TREE,
        # commands: the relay publishes them and reads its resume position back; set-up removes the
        # durables older executors left on the stream (setup.remove_legacy_consumers)
        *stream_info(COMMANDS_STREAM),
        *point_reads(COMMANDS_STREAM),
        COMMAND_TREE,
        f"{API}.CONSUMER.NAMES.{COMMANDS_STREAM}",
        f"{API}.CONSUMER.DELETE.{COMMANDS_STREAM}.*",
        # the leader lease: one key
        *stream_info(LEADER_STREAM),
        *point_reads(LEADER_STREAM),
        kv_key(LEADER_BUCKET, LEASE_KEY),
        # snapshots: nats-py's object put publishes chunks and meta, then purges the old chunks
        *reads(SNAPSHOT_STREAM),
        f"$O.{SNAPSHOTS_BUCKET}.>",
        f"{API}.STREAM.PURGE.{SNAPSHOT_STREAM}",
        f"{API}.STREAM.NAMES",
    ]
    # the query service every engine runs: requests on dse.query.<verb>, answered in parts
    subscribe = [QUERY_TREE, *micro_discovery(QUERY_SERVICE), f"{inbox}.>"]
    return Permissions(publish=_unique(publish), subscribe=_unique(subscribe), responses=QUERY_PARTS)


def _executor_common() -> list[str]:
    return [
        # the streams it checks (setup.EXECUTOR_NEEDS) and binds to
        *stream_info(EVENTS_STREAM, COMMANDS_STREAM, NODE_LEASE_STREAM, CHECKPOINT_STREAM),
        # its start state: the newest snapshot and the log after it
        *reads(EVENTS_STREAM, SNAPSHOT_STREAM),
        f"{API}.STREAM.NAMES",
        # its commands: batched direct gets, the subject filter in the payload (module docstring), and
        # a message a lagging replica has not got yet, from the stream leader
        f"{API}.DIRECT.GET.{COMMANDS_STREAM}",
        f"{API}.STREAM.MSG.GET.{COMMANDS_STREAM}",
        # leases and checkpoints are read by key (a fleet's check for node executors too)
        *point_reads(NODE_LEASE_STREAM),
        *point_reads(CHECKPOINT_STREAM),
    ]


def executor_permissions(key: str, subject_token: str, inbox: str) -> Permissions:
    """One node's executor. ``key`` is the node as a KV key, ``subject_token`` as a subject token
    (``events.subjects.token``): concrete for a config-file user, templates for a JWT signing key."""
    publish = [
        *_executor_common(),
        kv_key(NODE_LEASE_BUCKET, key),
        kv_key(CHECKPOINT_BUCKET, key),
        pod_reports(subject_token),
        # answers to `dsctl logs` about its node's pods
        logs_reply(subject_token),
    ]
    subscribe = [command_subject(subject_token), f"{inbox}.>", logs_request(subject_token)]
    return Permissions(publish=_unique(publish), subscribe=_unique(subscribe))


def _fleet(inbox: str) -> Permissions:
    publish = [
        *_executor_common(),
        # which nodes have an executor of their own: kv.keys() reads the bucket with a consumer
        *consumer_reads(NODE_LEASE_STREAM),
        kv_key(NODE_LEASE_BUCKET, FLEET_KEY),
        kv_key(CHECKPOINT_BUCKET, FLEET_KEY),
        pod_reports(),
        logs_reply(),
    ]
    return Permissions(publish=_unique(publish), subscribe=(COMMAND_TREE, f"{inbox}.>", logs_request()))


def _ingest(inbox: str) -> Permissions:
    publish = [
        *stream_info(EVENTS_STREAM, REJECTED_STREAM),
        # facts from other services: nodes and DaemonSets; pod reports come from executors only,
        # decisions and leader markers from the engine only
        f"{PREFIX}.node.>",
        f"{PREFIX}.ds.>",
        f"{PREFIX}.rejected.>",
        # a batch holding ids already stored is answered as duplicates: the last two minutes of the
        # log are read to find them (engine/ingest/service.py)
        *consumer_reads(EVENTS_STREAM),
    ]
    subscribe = [INGEST_EVENT_SUBJECT, INGEST_BATCH_SUBJECT, *micro_discovery(), f"{inbox}.>"]
    return Permissions(publish=_unique(publish), subscribe=_unique(subscribe), responses=1)


def _publisher(inbox: str) -> Permissions:
    publish = [INGEST_EVENT_SUBJECT, INGEST_BATCH_SUBJECT, *micro_discovery()]
    return Permissions(publish=_unique(publish), subscribe=(f"{inbox}.>",))


def _auditor(inbox: str) -> Permissions:
    publish = [
        # the CLI's reads ask a running engine first (its query service), then read the log
        QUERY_TREE,
        *micro_discovery(QUERY_SERVICE),
        f"{API}.INFO",
        f"{API}.STREAM.NAMES",
        f"{API}.STREAM.LIST",
        f"{API}.STREAM.INFO.*",
        f"{API}.STREAM.MSG.GET.*",
        f"{API}.DIRECT.GET.>",
        f"{API}.CONSUMER.CREATE.*",
        f"{API}.CONSUMER.INFO.*.*",
        f"{API}.CONSUMER.DELETE.*.*",
        "$JS.FC.>",
        # `dsctl logs`: asks a node's executor, the answers come under the node's subject
        logs_request(),
    ]
    return Permissions(publish=_unique(publish), subscribe=(f"{inbox}.>", logs_reply()))


ADMIN = Permissions(publish=(">",), subscribe=(">",))


def permissions(identity: Identity, *, streams: Sequence[str] | None = None) -> Permissions:
    """The allow lists of ``identity`` (``streams``: the definitions the engine sets up; read from
    ``ops/streams`` when not given)."""
    inbox = inbox_prefix(identity)
    match identity.role:
        case Role.ADMIN:
            return ADMIN
        case Role.ENGINE:
            return _engine(inbox, defined_streams() if streams is None else streams)
        case Role.EXECUTOR:
            assert identity.node is not None
            return executor_permissions(identity.node, token(identity.node), inbox)
        case Role.FLEET:
            return _fleet(inbox)
        case Role.INGEST:
            return _ingest(inbox)
        case Role.PUBLISHER:
            return _publisher(inbox)
        case Role.AUDITOR:
            return _auditor(inbox)
    raise AssertionError(identity)
