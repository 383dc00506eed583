"""The live view of ``dsctl up``: DaemonSets converging, as ``kubectl get ds`` would show them.

On a terminal it redraws a table in place (rich ``Live``); otherwise (CI, a pipe) it prints one line per
change, so a log of ``dsctl up`` reads as a history of convergence.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import TextIO

from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from engine.cli.present import summarize
from engine.core.status import rollout_complete
from engine.store.event_store import StoredEvent
from events.types import DecisionRecorded, PodEvent
from projections.model import ClusterState, DaemonSetState


def _status_row(ds: DaemonSetState) -> tuple[str, ...]:
    st = ds.status
    return (
        ds.namespace,
        ds.name,
        str(st.desired_number_scheduled),
        str(st.current_number_scheduled),
        str(st.number_ready),
        str(st.updated_number_scheduled),
        str(st.number_available),
        str(st.number_misscheduled),
    )


def summary_lines(state: ClusterState) -> list[str]:
    lines = []
    for key in sorted(state.daemonsets):
        ds = state.daemonsets[key]
        st = ds.status
        done = "converged" if rollout_complete(ds, st) else "progressing"
        lines.append(
            f"{key}: desired={st.desired_number_scheduled} current={st.current_number_scheduled} "
            f"ready={st.number_ready} up-to-date={st.updated_number_scheduled} "
            f"available={st.number_available} misscheduled={st.number_misscheduled} ({done})"
        )
    return lines


class Activity:
    """The last few things that happened, one line each, for the live view (a projector listener)."""

    def __init__(self, size: int = 8) -> None:
        self.lines: deque[str] = deque(maxlen=size)

    def before(self, state: ClusterState, stored: StoredEvent) -> object:
        return None

    def after(self, state: ClusterState, stored: StoredEvent, ctx: object) -> None:
        event = stored.envelope.data
        if isinstance(event, PodEvent) and event.TAG not in _SHOWN_POD_EVENTS:
            return
        if isinstance(event, DecisionRecorded) and not event.commands:
            return
        stamp = stored.time.strftime("%H:%M:%S")
        self.lines.append(f"{stamp} #{stored.seq} {summarize(event)}"[:160])


_SHOWN_POD_EVENTS = {"pod.failed", "pod.succeeded", "pod.deleted", "pod.evicted"}


#: below this terminal width the count columns get kubectl's short names, to leave the names room
NARROW = 100
_LONG = ("DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE")
_SHORT = ("DES", "CUR", "RDY", "UPD", "AVL")


def render(
    state: ClusterState, header: str, activity: Activity | None = None, width: int | None = None
) -> Group:
    """The table never cuts a name: one NAMESPACE/NAME column, folded onto more lines only when even
    short count headers (below ``NARROW`` columns) leave it too little room; the feed's lines end in an
    ellipsis rather than wrapping mid-word."""
    table = Table(
        title="DaemonSets",
        title_justify="left",
        expand=False,
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    table.add_column("DAEMONSET", overflow="fold", min_width=9)
    for col in _SHORT if width is not None and width < NARROW else _LONG:
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("STATUS", no_wrap=True)
    for key in sorted(state.daemonsets):
        ds = state.daemonsets[key]
        row = _status_row(ds)
        mark = (
            Text("✓ done", style="green")
            if rollout_complete(ds, ds.status)
            else Text("… rolling", style="yellow")
        )
        if ds.status.number_misscheduled:
            mark.append(f" {ds.status.number_misscheduled} missched", style="red")
        table.add_row(f"{row[0]}/{row[1]}", *row[2:7], mark)
    ready_nodes = sum(1 for n in state.nodes.values() if not n.unschedulable)
    pods_ready = sum(1 for p in state.pods.values() if p.ready)
    footer = Text(
        f"nodes {len(state.nodes)} ({ready_nodes} schedulable) · pods {len(state.pods)} ({pods_ready} ready)"
        f" · commands in flight {len(state.in_flight)} · log seq {state.seq}",
        style="dim",
    )
    parts: list[Text | Table] = [Text(header), table, footer]
    if activity is not None and activity.lines:
        parts.append(Text("recent:", style="bold"))
        parts.extend(
            Text("  " + line, style="dim", no_wrap=True, overflow="ellipsis") for line in activity.lines
        )
    return Group(*parts)


async def live_view(
    get: Callable[[], ClusterState],
    header: str,
    *,
    out: TextIO | None = None,
    period: float = 0.5,
    activity: Activity | None = None,
) -> None:
    """Redraw until cancelled; ``get`` returns the current state."""
    stream = out or sys.stdout
    if stream.isatty():
        console = Console(file=stream)
        with Live(
            render(get(), header, activity, console.width),
            console=console,
            refresh_per_second=4,
            transient=False,
        ) as live:
            while True:
                await asyncio.sleep(period)
                live.update(render(get(), header, activity, console.width))
    else:
        last: list[str] = []
        started = time.monotonic()
        while True:
            lines = summary_lines(get())
            if lines != last:
                stamp = f"[{time.monotonic() - started:6.1f}s]"
                for line in lines:
                    print(stamp, line, file=stream, flush=True)
                last = lines
            await asyncio.sleep(period)
