"""Every figure peftbook draws: each function returns a matplotlib ``Figure`` (made without pyplot).

No function here touches pyplot's global state or the backend: Jupyter displays a returned Figure,
``save_figure`` writes one to a file, and a notebook's own ``plt.show()`` keeps working after any
of them. Memory plots take ``MemoryReport`` objects (``track_memory``, ``simulate_memory``) or their
``to_dict()`` form, so results loaded from JSON plot the same way; benchmark plots take the rows of
``peftbook.results.summarize``.
"""
from __future__ import annotations

import io

from matplotlib.figure import Figure

from peftbook.spectrum import cumulative_energy

CATEGORY_COLORS = {"weights": "#4c72b0", "gradients": "#dd8452", "optimizer": "#55a868",
                   "activations": "#c44e52", "other": "#8c8c8c"}


class ShownFigure(Figure):
    """A Figure that Jupyter shows as a PNG wherever it is displayed (returned from a cell or passed
    to ``display``), whether or not the notebook has set up matplotlib's inline backend yet."""

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", dpi=100)
        return buffer.getvalue()


def new_figure(figsize=(7, 4)) -> ShownFigure:
    """A Figure without pyplot: no global state, no backend switched, and Jupyter displays it."""
    return ShownFigure(figsize=figsize, layout="constrained")


def save_figure(fig, path, dpi: int = 110):
    """Write ``fig`` to ``path`` (PNG by its suffix) and return the path."""
    fig.savefig(path, dpi=dpi)
    return path


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
    fig = new_figure()
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
    fig = new_figure()
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
    fig = new_figure((5, 5))
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


# -- training ---------------------------------------------------------------------------------------
def smooth(values: list[float], window: int) -> list[float]:
    """Trailing moving average over ``window`` values (the first ones average what exists)."""
    window = max(1, int(window))
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_losses(curves: dict, ax=None, window: int | None = None, ylabel: str = "training loss",
                title: str | None = None, **line_kwargs):
    """One line per ``{label: losses}``: the raw loss faint, its moving average on top.

    Draws on ``ax`` when given (a panel of a larger figure), else on a new figure; returns the figure.
    """
    if ax is None:
        ax = new_figure((6, 3)).add_subplot()
    for label, losses in curves.items():
        steps = range(1, len(losses) + 1)
        window = window or max(1, len(losses) // 15)
        (line,) = ax.plot(steps, smooth(losses, window), label=label, **line_kwargs)
        if window > 1:
            ax.plot(steps, losses, color=line.get_color(), alpha=0.2, linewidth=0.8)
    ax.set(xlabel="step", ylabel=ylabel)
    if title:
        ax.set_title(title)
    if len(curves) > 1:
        ax.legend(fontsize=8)
    return ax.figure


# -- the benchmark ----------------------------------------------------------------------------------
def plot_metric_vs_params(rows: list[dict]):
    """Quality against trainable parameters (log x; few-shot, which trains nothing, drawn at 1)."""
    fig = new_figure((6, 4))
    ax = fig.add_subplot()
    for row in rows:
        x = max(row["trainable_params"], 1)
        ax.errorbar(x, row["value"], yerr=row["std"], fmt="o", capsize=3)
        ax.annotate(row["method"], (x, row["value"]), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (log; few-shot at 1)")
    ax.set_ylabel(f"test {rows[0]['metric']}")
    ax.set_title("quality vs trainable parameters")
    return fig


def plot_bars(rows: list[dict], key: str, label: str, merged_key: str | None = None):
    """One bar per method of ``row[key]``; with ``merged_key``, extra bars for the merged LoRA latency."""
    fig = new_figure((7, 4))
    ax = fig.add_subplot()
    names = [r["method"] for r in rows]
    ax.bar(names, [r[key] or 0 for r in rows], label="as trained")
    if merged_key and any(r.get(merged_key) for r in rows):
        ax.bar([r["method"] + " (merged)" for r in rows if r.get(merged_key)],
               [r[merged_key] for r in rows if r.get(merged_key)], label="LoRA merged")
        ax.legend(fontsize=8)
    ax.set_ylabel(label)
    ax.set_title(label)
    ax.tick_params(axis="x", rotation=30)
    return fig


def plot_bench(rows: list[dict]) -> dict:
    """The benchmark's four figures by file stem: quality vs parameters, peak memory, step time, latency."""
    memory = {r["method"]: {"peak_bytes": r["peak_memory_bytes"] or 0, "by_category": r["memory_by_category"] or {}}
              for r in rows}
    return {"metric_vs_params": plot_metric_vs_params(rows),
            "peak_memory": plot_memory_by_category(memory, "peak memory by category (few-shot: inference)"),
            "step_time": plot_bars(rows, "step_time_s", "seconds per training step"),
            "latency": plot_bars(rows, "latency_s", "seconds per example (batch 1)", "latency_merged_s")}


def plot_seed_scores(scores: dict, metric: str, title: str = "test score per seed"):
    """One column per method of ``{method: [score per seed]}``: a dot per seed, the mean ± sd as a bar."""
    import statistics

    fig = new_figure((7, 4))
    ax = fig.add_subplot()
    for x, (method, values) in enumerate(scores.items()):
        mean = statistics.fmean(values)
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        ax.errorbar(x, mean, yerr=sd, fmt="_", markersize=18, capsize=6, color="black", zorder=3)
        ax.scatter([x + 0.08 * (i - (len(values) - 1) / 2) for i in range(len(values))], values, alpha=0.7, zorder=2)
    ax.set_xticks(range(len(scores)), list(scores), rotation=30)
    ax.set_ylabel(f"test {metric}")
    ax.set_title(title)
    return fig


def plot_loss_bands(curves: dict, title: str, window: int | None = None):
    """For each ``{label: [losses per seed]}``: the mean over seeds (smoothed) and a band of ± one sd."""
    import statistics

    fig = new_figure((6, 3))
    ax = fig.add_subplot()
    for label, runs in curves.items():
        steps = min(len(r) for r in runs)
        window = window or max(1, steps // 15)
        smoothed = [smooth(r[:steps], window) for r in runs]
        mean = [statistics.fmean(v) for v in zip(*smoothed)]
        sd = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in zip(*smoothed)]
        (line,) = ax.plot(range(1, steps + 1), mean, label=f"{label} ({len(runs)} seeds)")
        ax.fill_between(range(1, steps + 1), [m - s for m, s in zip(mean, sd)], [m + s for m, s in zip(mean, sd)],
                        color=line.get_color(), alpha=0.2)
    ax.set(xlabel="step", ylabel="training loss (mean ± sd over seeds)", title=title)
    ax.legend(fontsize=8)
    return fig


def plot_choice_order(grid: dict, metric: str):
    """Few-shot scores per k: one column of dots per choice of demonstrations, its orders stacked."""
    fig = new_figure((7, 4))
    ax = fig.add_subplot()
    ks = sorted(grid, key=int)
    for i, k in enumerate(ks):
        for c, orders in enumerate(grid[k]):
            x = i + 0.15 * (c - (len(grid[k]) - 1) / 2)
            ax.plot([x] * len(orders), orders, "o-", alpha=0.7, color=f"C{c}",
                    label=f"choice {c + 1}" if i == 0 else None)
    ax.set_xticks(range(len(ks)), [f"k={k}" for k in ks])
    ax.set_ylabel(f"test {metric}")
    ax.set_title("few-shot: each column a choice of examples, its dots their orders")
    ax.legend(fontsize=8)
    return fig


def plot_spectra(spectra: dict, random_values=None, rank: int | None = None, limit: int = 6):
    """Cumulative share of energy in the top-r singular directions, per matrix of ``{name: singular values}``
    (at most ``limit`` drawn), against a random matrix's (``random_values``); a line at ``rank``."""
    fig = new_figure((6, 3.5))
    ax = fig.add_subplot()

    for name, values in list(spectra.items())[:limit]:
        ax.plot(range(1, len(values) + 1), cumulative_energy(values).tolist(), label=name, linewidth=1)
    if random_values is not None:
        ax.plot(range(1, len(random_values) + 1), cumulative_energy(random_values).tolist(), "k--",
                label="random matrix")
    if rank:
        ax.axvline(rank, color="grey", linestyle=":", label=f"r = {rank}")
    ax.set(xlabel="top r singular directions", ylabel="share of the change's energy", xscale="log",
           title="how low-rank is the weight change of full fine-tuning?")
    ax.legend(fontsize=7)
    return fig


def plot_examples_curve(curves: dict, metric: str, title: str = "test score vs labelled training examples"):
    """One line per method of ``{method: {examples: score}}`` (log x): how each learns from k examples."""
    fig = new_figure((6.5, 4))
    ax = fig.add_subplot()
    for method, points in curves.items():
        ks = sorted(points)
        ax.plot(ks, [points[k] for k in ks], "o-", label=method)
    ax.set_xscale("log", base=2)
    ax.set(xlabel="labelled training examples k (log)", ylabel=f"test {metric}", title=title)
    ax.legend(fontsize=8)
    return fig
