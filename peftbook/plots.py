"""Figures for the notebooks; each function draws one figure and returns it (matplotlib).

Memory plots take ``MemoryReport`` objects (``track_memory``, ``simulate_memory``) or their
``to_dict()`` form, so results loaded from JSON plot the same way.
"""
from __future__ import annotations

CATEGORY_COLORS = {"weights": "#4c72b0", "gradients": "#dd8452", "optimizer": "#55a868",
                   "activations": "#c44e52", "other": "#8c8c8c"}


def _figure(figsize=(7, 4)):
    # a Figure without pyplot: no global state, and Jupyter still displays a returned Figure
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")


def _as_dict(report) -> dict:
    return report if isinstance(report, dict) else report.to_dict(timeline=True)


def _unit(max_bytes: float) -> tuple[str, float]:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if max_bytes >= scale:
            return unit, scale
    return "B", 1.0


def plot_memory_by_category(reports: dict, title: str = "Peak memory of one training step"):
    """Stacked bars, one per label (e.g. method): the peak split into weights, gradients, ..."""
    data = {label: _as_dict(r) for label, r in reports.items()}
    unit, scale = _unit(max(d["peak_bytes"] for d in data.values()))
    fig = _figure()
    ax = fig.add_subplot()
    labels = list(data)
    bottom = [0.0] * len(labels)
    for category, color in CATEGORY_COLORS.items():
        heights = [data[label]["by_category"].get(category, 0) / scale for label in labels]
        ax.bar(labels, heights, bottom=bottom, color=color, label=category)
        bottom = [b + h for b, h in zip(bottom, heights)]
    ax.set_ylabel(f"peak memory ({unit})")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize="small")
    ax.tick_params(axis="x", labelrotation=20)
    return fig


def plot_memory_timeline(report, title: str = "Memory over one training step"):
    """Live bytes after each allocation/free, with the phases marked and the peak circled."""
    data = _as_dict(report)
    timeline = data.get("timeline") or []
    if not timeline:
        raise ValueError("this report has no timeline (reports from simulate_by_depth or to_dict() without "
                         "timeline=True carry none); use track_memory or simulate_memory")
    unit, scale = _unit(max(timeline))
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot([v / scale for v in timeline], color="#4c72b0", linewidth=1)
    peak_index = data.get("peak_index", max(range(len(timeline)), key=timeline.__getitem__))
    ax.plot([peak_index], [timeline[peak_index] / scale], "o", color="#c44e52", label="peak")
    for index, label in data.get("markers", []):
        ax.axvline(index, color="#8c8c8c", linestyle=":", linewidth=1)
        ax.annotate(label, (index, max(timeline) / scale), rotation=90, va="top", ha="right", fontsize="small")
    ax.set_xlabel("allocation / free events")
    ax.set_ylabel(f"live memory ({unit})")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize="small")
    return fig


def plot_simulated_vs_measured(rows, title: str = "Simulated vs measured peak"):
    """Scatter of (measured, simulated) peaks with the y = x line; ``rows``: (label, simulated, measured)."""
    rows = list(rows)
    if not rows:
        raise ValueError("no (label, simulated_bytes, measured_bytes) rows to plot")
    unit, scale = _unit(max(max(s, m) for _, s, m in rows))
    fig = _figure((5, 5))
    ax = fig.add_subplot()
    top = max(max(s, m) for _, s, m in rows) / scale * 1.05
    ax.plot([0, top], [0, top], color="#8c8c8c", linestyle="--", linewidth=1, label="simulated = measured")
    for label, simulated, measured in rows:
        ax.plot(measured / scale, simulated / scale, "o")
        ax.annotate(label, (measured / scale, simulated / scale), fontsize="x-small",
                    xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(f"measured ({unit})")
    ax.set_ylabel(f"simulated ({unit})")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize="small")
    return fig
