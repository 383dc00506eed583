"""``dsctl bench --plot DIR``: PNG charts of the figures a reader would rather look at than read.

Charts are drawn from the rows' ``series`` (``Row.series``, also in ``-o json``), so a saved report
draws the same charts later (``python -m engine.bench --plot DIR --from-json FILE``):

- ``convergence.png``: pods Ready over time for each convergence run, against the reports-only bound
  (the pod reports published alone, at the rate the baseline measured) — series kind ``convergence``:
  ``{"pods": N, "t_s": [seconds], "ready": [pods Ready by then], "bound_s": baseline seconds}``
  (``common.ready_curve``);
- ``latency.png``: the distribution (histogram and CDF) of the latency scenario's samples — kind
  ``latency``: ``{"samples_ms": [...], "first_ms": [...]}``;
- ``soak.png``: the soak's engine RSS, projection lag and decision latency per sample, and
  ``soak-latency.png``: the distribution of every decision latency it matched — kind ``soak``
  (engine/bench/soak.py).

matplotlib (the ``bench`` extra) draws with the Agg backend: no display needed. See docs/benchmarks.md.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

Series = dict[str, Any]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, directory: str, name: str) -> str:
    path = os.path.join(directory, name)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def convergence_chart(items: list[tuple[dict[str, Any], Series]], directory: str) -> list[str]:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for row, series in items:
        pods = int(series["pods"])
        times = [float(t) for t in series["t_s"]]
        counts = [int(c) for c in series["ready"]]
        if not times:
            continue
        (line,) = ax.step([0.0, *times], [0, *counts], where="post", label=f"{pods:,} pods: engine")
        bound = float(series.get("bound_s") or 0.0)
        if bound > 0:
            ax.plot(
                [0.0, bound],
                [0, pods],
                linestyle="--",
                color=line.get_color(),
                label=f"{pods:,} pods: reports alone ({bound:.1f} s)",
            )
        if row.get("value") is not None:
            ax.annotate(
                f"{float(row['value']):.1f} s",
                (times[-1], counts[-1]),
                textcoords="offset points",
                xytext=(4, -12),
                fontsize=8,
            )
    ax.set_xlabel("seconds since the DaemonSets were applied")
    ax.set_ylabel("pods Ready")
    ax.set_title("Convergence: pods Ready over time vs the reports-only bound")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return [_save(fig, directory, "convergence.png")]


def _distribution(ax_hist: Any, ax_cdf: Any, samples: list[float], label: str, *, log: bool = False) -> None:
    ordered = sorted(samples)
    count = min(50, max(5, len(ordered) // 3))
    bins: Any = count
    if log:
        low, high = max(ordered[0], 0.01), max(ordered[-1], 0.02)
        bins = [low * (high / low) ** (i / count) for i in range(count + 1)]
    ax_hist.hist(ordered, bins=bins, alpha=0.6, label=label)
    n = len(ordered)
    ax_cdf.plot(ordered, [(i + 1) / n for i in range(n)], label=label)


def latency_chart(items: list[tuple[dict[str, Any], Series]], directory: str) -> list[str]:
    plt = _pyplot()
    fig, (hist, cdf) = plt.subplots(1, 2, figsize=(10, 4))
    for _, series in items:
        every = [float(x) for x in series.get("samples_ms", [])]
        first = [float(x) for x in series.get("first_ms", [])]
        if every:
            _distribution(hist, cdf, every, "all create commands")
        if first:
            _distribution(hist, cdf, first, "first create command")
    for ax in (hist, cdf):
        ax.set_xlabel("ms from node.registered appended")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    hist.set_ylabel("samples")
    cdf.set_ylabel("fraction of samples")
    cdf.axvline(50, color="grey", linestyle=":", linewidth=1)
    fig.suptitle("Reaction latency at steady state (target p99 <= 50 ms)")
    return [_save(fig, directory, "latency.png")]


def soak_chart(items: list[tuple[dict[str, Any], Series]], directory: str) -> list[str]:
    plt = _pyplot()
    _, series = items[-1]
    samples: list[dict[str, Any]] = series["samples"]
    minutes = [float(s["t_s"]) / 60 for s in samples]
    fig, (rss, lag, latency) = plt.subplots(3, 1, figsize=(8, 8), sharex=True)
    rss.plot(minutes, [s["engine_rss_mb"] for s in samples], marker="o", label="engine + fleet executor")
    rss.plot(minutes, [s["server_rss_mb"] for s in samples], marker=".", label="nats-server")
    rss.set_ylabel("RSS (MB)")
    rss.set_ylim(bottom=0)
    lag.plot(minutes, [s["lag_max"] for s in samples], marker="o", label="max over the interval")
    lag.plot(minutes, [s["lag_mean"] for s in samples], marker=".", label="mean (polled every 2 s)")
    lag.set_ylabel("projection lag (events)")
    lag.set_ylim(bottom=0)
    for key, label in (("latency_p50_ms", "p50"), ("latency_p99_ms", "p99")):
        points = [(m, s[key]) for m, s in zip(minutes, samples, strict=True) if s.get(key) is not None]
        if points:
            latency.plot(*zip(*points, strict=True), marker="o", label=label)
    latency.set_yscale("log")
    latency.set_ylabel("decision latency (ms)")
    latency.set_xlabel("minutes of churn")
    plan = series.get("plan", {})
    fig.suptitle(
        f"Soak: {plan.get('nodes', '?')} nodes x {plan.get('daemonsets', '?')} DS + 1, a node op every "
        f"{plan.get('churn_every', '?')} s, a rollout every {plan.get('rollout_every', '?')} s"
    )
    for ax in (rss, lag, latency):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    paths = [_save(fig, directory, "soak.png")]
    every = [float(x) for s in samples for x in s.get("latencies_ms", [])]
    if every:
        fig, (hist, cdf) = plt.subplots(1, 2, figsize=(10, 4))
        _distribution(hist, cdf, every, f"{len(every):,} decisions", log=True)
        hist.set_yscale("log")
        for ax in (hist, cdf):
            ax.set_xscale("log")
            ax.set_xlabel("ms from the event appended to its decision received")
            ax.grid(alpha=0.3)
        hist.set_ylabel("decisions")
        cdf.set_ylabel("fraction of decisions")
        fig.suptitle("Soak: decision latency distribution")
        paths.append(_save(fig, directory, "soak-latency.png"))
    return paths


CHARTS: dict[str, Callable[[list[tuple[dict[str, Any], Series]], str], list[str]]] = {
    "convergence": convergence_chart,
    "latency": latency_chart,
    "soak": soak_chart,
}


def write_plots(rows: list[dict[str, Any]], directory: str) -> list[str]:
    """Every chart the rows (as ``Row.as_json`` gives them) have data for, written into ``directory``
    (created); the paths written."""
    by_kind: dict[str, list[tuple[dict[str, Any], Series]]] = {}
    for row in rows:
        series = row.get("series")
        if isinstance(series, dict) and series.get("kind") in CHARTS:
            by_kind.setdefault(str(series["kind"]), []).append((row, series))
    if not by_kind:
        return []
    os.makedirs(directory, exist_ok=True)
    paths: list[str] = []
    for kind, items in by_kind.items():
        paths.extend(CHARTS[kind](items, directory))
    return paths
