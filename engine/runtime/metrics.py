"""Engine counters, exposed in the Prometheus text format on ``--metrics-port``.

Plain counters and gauges in one Struct: the engine is one process and one event loop, so no locks and
no client library are needed; ``render`` writes the exposition format by hand.
"""

from __future__ import annotations

import asyncio
import contextlib

import msgspec


class Metrics(msgspec.Struct, kw_only=True):
    reconciles: int = 0
    decisions: int = 0
    commands: int = 0
    events_folded: int = 0
    appends: int = 0
    append_seconds_sum: float = 0.0
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

    def render(self) -> str:
        rows = [
            ("dsctl_reconciles_total", "counter", "Reconciles run", self.reconciles),
            ("dsctl_decisions_total", "counter", "Decisions recorded", self.decisions),
            ("dsctl_commands_total", "counter", "Commands published", self.commands),
            ("dsctl_events_folded_total", "counter", "Events folded into the projection", self.events_folded),
            ("dsctl_appends_total", "counter", "Events appended by the engine", self.appends),
            ("dsctl_append_seconds_sum", "counter", "Time spent appending", self.append_seconds_sum),
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
        out = []
        for name, kind, help_text, value in rows:
            out.append(f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n{name} {value}\n")
        return "".join(out)


async def serve(metrics: Metrics, host: str, port: int) -> asyncio.Server:
    """A minimal HTTP endpoint: any GET returns the metrics."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            body = metrics.render().encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
                + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, host, port)
