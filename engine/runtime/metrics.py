"""Engine metrics, exposed in the Prometheus text format (0.0.4) on ``--metrics-port``.

Plain counters, gauges and histograms in one Struct: the engine is one process and one event loop, so
no locks and no client library are needed; ``render`` writes the exposition format by hand, in the
shape ``promtool check metrics`` accepts (every family declared with ``# HELP`` and ``# TYPE``,
counters ending in ``_total``, units in the names). The names, labels and meanings are listed in
docs/deploy.md, "Metrics and logs".

Three kinds of numbers:

- **Counted and timed by the engine** as it works (the fields below, and the histograms).
- **Per DaemonSet, read at scrape time** from the engine's live projection (``state``), modelled on
  kube-state-metrics' ``kube_daemonset_status_*``: the status the last recorded decision computed, so
  a dashboard built for a Kubernetes cluster reads the same numbers here. Nothing is kept between
  scrapes, so a deleted DaemonSet's series simply stop.
- **The process's own**, read from ``/proc/self`` at scrape time (what the Prometheus client
  libraries export as ``process_*``); absent where there is no ``/proc``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
from collections.abc import Callable, Iterable, Sequence

import msgspec

from projections.model import ClusterState

#: seconds for a store round trip (an append, commands stored): a loopback append is about 1 ms, a
#: three-server cluster a few, an election or an outage seconds
ROUND_TRIP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: seconds to compute one reconcile: tens of microseconds for a node, 30 ms for a full one at 5,000 nodes
RECONCILE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class Histogram(msgspec.Struct, kw_only=True):
    """One histogram series: cumulative only when rendered, so ``observe`` is one bisect-free loop."""

    buckets: tuple[float, ...]
    counts: list[int] = msgspec.field(default_factory=list)
    sum: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        if not self.counts:
            self.counts = [0] * len(self.buckets)
        for i, upper in enumerate(self.buckets):
            if value <= upper:
                self.counts[i] += 1
                break
        self.sum += value
        self.count += 1

    def samples(self, name: str, labels: Sequence[tuple[str, str]] = ()) -> list[str]:
        out = []
        cumulative = 0
        counts = self.counts or [0] * len(self.buckets)
        for upper, n in zip(self.buckets, counts, strict=True):
            cumulative += n
            out.append(_sample(f"{name}_bucket", [*labels, ("le", _number(upper))], cumulative))
        out.append(_sample(f"{name}_bucket", [*labels, ("le", "+Inf")], self.count))
        out.append(_sample(f"{name}_sum", labels, self.sum))
        out.append(_sample(f"{name}_count", labels, self.count))
        return out


def _round_trips() -> Histogram:
    return Histogram(buckets=ROUND_TRIP_BUCKETS)


def _reconciles() -> dict[str, Histogram]:
    return {lane: Histogram(buckets=RECONCILE_BUCKETS) for lane in ("nodes", "full")}


class Metrics(msgspec.Struct, kw_only=True):
    reconciles: int = 0
    decisions: int = 0
    commands: int = 0
    events_folded: int = 0
    appends: int = 0
    #: seconds per fenced append of a decision (its ``_sum`` is the former ``dsctl_append_seconds_sum``)
    append_seconds: Histogram = msgspec.field(default_factory=_round_trips)
    #: seconds computing one reconcile (before the append), by lane: ``nodes`` (node-scoped) or ``full``
    reconcile_seconds: dict[str, Histogram] = msgspec.field(default_factory=_reconciles)
    #: seconds from a decision stored (the relay is offered it) to its commands stored on DSE_COMMANDS
    relay_seconds: Histogram = msgspec.field(default_factory=_round_trips)
    #: gauges, set by whoever owns the number
    commands_in_flight: int = 0
    projection_lag: int = 0
    is_leader: int = 0
    #: decisions folded whose commands the relay has not stored yet
    relay_pending: int = 0
    #: seconds the relay has been failing to store commands (0 when healthy)
    relay_failing_seconds: float = 0.0
    #: records on the decision tree, and writes of the leader lease, that no engine made (each refused,
    #: none acted on; docs/design.md, "Tamper evidence")
    tamper_records: int = 0
    #: 1 once the event stream was found deleted, replaced, rewound or with a gap: reconciling stopped
    log_integrity_failed: int = 0
    #: the engine's live projection, read at scrape time for the per-DaemonSet gauges (None: none yet)
    state: Callable[[], ClusterState] | None = None
    #: where the process metrics are read from (a test points it elsewhere)
    proc: str = "/proc/self"

    @property
    def append_seconds_sum(self) -> float:
        """Total seconds spent appending (what ``dsctl_append_seconds_sum`` always meant)."""
        return self.append_seconds.sum

    def render(self) -> str:
        out: list[str] = []
        scalars: list[tuple[str, str, str, float]] = [
            ("dsctl_reconciles_total", "counter", "Reconciles run", self.reconciles),
            ("dsctl_decisions_total", "counter", "Decisions recorded", self.decisions),
            ("dsctl_commands_total", "counter", "Commands published", self.commands),
            ("dsctl_events_folded_total", "counter", "Events folded into the projection", self.events_folded),
            ("dsctl_appends_total", "counter", "Events appended by the engine", self.appends),
            (
                "dsctl_commands_in_flight",
                "gauge",
                "Commands sent and not yet answered",
                self.commands_in_flight,
            ),
            ("dsctl_projection_lag", "gauge", "Stream sequences not yet folded", self.projection_lag),
            ("dsctl_is_leader", "gauge", "1 while this engine holds the leader lease", self.is_leader),
            ("dsctl_relay_pending", "gauge", "Decisions whose commands are not sent yet", self.relay_pending),
            (
                "dsctl_relay_failing_seconds",
                "gauge",
                "Seconds the command relay has been failing to send (0 when healthy)",
                self.relay_failing_seconds,
            ),
            (
                "dsctl_tamper_records_total",
                "counter",
                "Decision-tree records and leader-lease writes no engine made (refused, not acted on)",
                self.tamper_records,
            ),
            (
                "dsctl_log_integrity_failed",
                "gauge",
                "1 once the event stream was deleted, replaced, rewound or had a gap: not reconciling",
                self.log_integrity_failed,
            ),
        ]
        for name, kind, help_text, value in scalars:
            out.append(_family(name, kind, help_text, [_sample(name, (), value)]))
        out.append(
            _family(
                "dsctl_append_seconds",
                "histogram",
                "Seconds per fenced append of a decision to the event log",
                self.append_seconds.samples("dsctl_append_seconds"),
            )
        )
        out.append(
            _family(
                "dsctl_reconcile_seconds",
                "histogram",
                "Seconds computing one reconcile, by lane (nodes: node-scoped, full: the whole DaemonSet)",
                [
                    line
                    for lane, hist in sorted(self.reconcile_seconds.items())
                    for line in hist.samples("dsctl_reconcile_seconds", [("lane", lane)])
                ],
            )
        )
        out.append(
            _family(
                "dsctl_relay_seconds",
                "histogram",
                "Seconds from a decision stored to its commands stored on DSE_COMMANDS",
                self.relay_seconds.samples("dsctl_relay_seconds"),
            )
        )
        out.extend(self._daemonsets())
        out.extend(self._process())
        return "".join(out)

    def _daemonsets(self) -> list[str]:
        state = self.state() if self.state is not None else None
        daemonsets = sorted(state.daemonsets.values(), key=lambda d: d.key) if state is not None else []
        out = []
        for field, help_text in DAEMONSET_STATUS:
            name = f"dsctl_daemonset_status_{field}"
            samples = [
                _sample(
                    name, [("namespace", ds.namespace), ("daemonset", ds.name)], getattr(ds.status, field)
                )
                for ds in daemonsets
            ]
            out.append(_family(name, "gauge", help_text, samples))
        name = "dsctl_daemonset_metadata_generation"
        samples = [
            _sample(name, [("namespace", ds.namespace), ("daemonset", ds.name)], ds.generation)
            for ds in daemonsets
        ]
        out.append(_family(name, "gauge", "The DaemonSet's generation (metadata.generation)", samples))
        return out

    def _process(self) -> list[str]:
        """``process_*`` as the Prometheus client libraries export them, from ``/proc``; each one that
        cannot be read is left out (another system, a restricted ``/proc``)."""
        out = []
        for name, kind, help_text, read in (
            (
                "process_cpu_seconds_total",
                "counter",
                "User and system CPU time spent in seconds",
                _cpu_seconds,
            ),
            ("process_resident_memory_bytes", "gauge", "Resident memory size in bytes", _resident_bytes),
            ("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes", _virtual_bytes),
            ("process_open_fds", "gauge", "Number of open file descriptors", _open_fds),
            ("process_max_fds", "gauge", "Maximum number of open file descriptors", _max_fds),
            (
                "process_start_time_seconds",
                "gauge",
                "Start time of the process since unix epoch in seconds",
                _start_time,
            ),
        ):
            try:
                value = read(self.proc)
            except (OSError, ValueError, IndexError):
                continue
            out.append(_family(name, kind, help_text, [_sample(name, (), value)]))
        return out


#: the per-DaemonSet gauges: kube-state-metrics' ``kube_daemonset_status_<field>``, named
#: ``dsctl_daemonset_status_<field>``
DAEMONSET_STATUS = (
    ("desired_number_scheduled", "Nodes that should be running the daemon pod"),
    ("current_number_scheduled", "Nodes running at least one daemon pod and that are supposed to"),
    ("number_ready", "Nodes that should be running the daemon pod and have one or more running and ready"),
    (
        "number_available",
        "Nodes that should be running the daemon pod and have one available (ready for minReadySeconds)",
    ),
    ("number_unavailable", "Nodes that should be running the daemon pod and have none available"),
    ("updated_number_scheduled", "Nodes running the updated daemon pod"),
    ("number_misscheduled", "Nodes running a daemon pod that are not supposed to"),
    ("observed_generation", "The generation the DaemonSet status was last computed for"),
)


def _family(name: str, kind: str, help_text: str, samples: Iterable[str]) -> str:
    return f"# HELP {name} {_escape_help(help_text)}\n# TYPE {name} {kind}\n" + "".join(samples)


def _sample(name: str, labels: Sequence[tuple[str, str]], value: float) -> str:
    if labels:
        inner = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels)
        return f"{name}{{{inner}}} {_number(value)}\n"
    return f"{name} {_number(value)}\n"


def _number(value: float) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


# --- /proc (Linux) ------------------------------------------------------------------------------------


def _stat_fields(proc: str) -> list[str]:
    """``/proc/<pid>/stat`` after the command name (which may hold spaces and parentheses)."""
    with open(f"{proc}/stat") as f:
        text = f.read()
    return text[text.rindex(")") + 2 :].split()


def _ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def _cpu_seconds(proc: str) -> float:
    fields = _stat_fields(proc)
    # fields[0] is field 3 (state): utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / _ticks()


def _status_kib(proc: str, key: str) -> int:
    with open(f"{proc}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise ValueError(f"{key} not in {proc}/status")


def _resident_bytes(proc: str) -> int:
    return _status_kib(proc, "VmRSS")


def _virtual_bytes(proc: str) -> int:
    return _status_kib(proc, "VmSize")


def _open_fds(proc: str) -> int:
    return len(os.listdir(f"{proc}/fd"))


def _max_fds(proc: str) -> int:
    with open(f"{proc}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                soft = line.split()[3]
                return -1 if soft == "unlimited" else int(soft)
    raise ValueError(f"no open-file limit in {proc}/limits")


def _start_time(proc: str) -> float:
    # field 22: start time in ticks after boot; the boot time is btime in /proc/stat
    started = int(_stat_fields(proc)[19]) / _ticks()
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("btime "):
                return int(line.split()[1]) + started
    raise ValueError("no btime in /proc/stat")


async def serve(metrics: Metrics, host: str, port: int) -> asyncio.Server:
    """A minimal HTTP endpoint: any GET returns the metrics."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            body = metrics.render().encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, host, port)
