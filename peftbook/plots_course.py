"""Small matplotlib helpers shared by the course notebooks: loss curves and memory by category.

Each function draws on ``ax`` (a new figure when ``None``) and returns the axes, so a notebook can
add a title or a second panel and then call ``plt.show()``.
"""
from __future__ import annotations

CATEGORY_ORDER = ("weights", "gradients", "optimizer", "activations", "other")


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


def plot_losses(curves: dict, ax=None, window: int | None = None, ylabel: str = "training loss", **line_kwargs):
    """One line per ``{label: losses}``; the raw loss faint, its moving average on top."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3))
    for label, losses in curves.items():
        steps = range(1, len(losses) + 1)
        window = window or max(1, len(losses) // 15)
        (line,) = ax.plot(steps, smooth(losses, window), label=label, **line_kwargs)
        if window > 1:
            ax.plot(steps, losses, color=line.get_color(), alpha=0.2, linewidth=0.8)
    ax.set(xlabel="step", ylabel=ylabel)
    if len(curves) > 1:
        ax.legend(fontsize=8)
    return ax


def plot_memory_categories(reports: dict, ax=None):
    """Stacked horizontal bars of ``{label: {"peak_bytes", "by_category"}}`` in MiB, one bar per label."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 0.8 + 0.6 * len(reports)))
    labels = list(reports)
    categories = [c for c in CATEGORY_ORDER if any(r["by_category"].get(c) for r in reports.values())]
    left = [0.0] * len(labels)
    for category in categories:
        widths = [reports[label]["by_category"].get(category, 0) / 2**20 for label in labels]
        ax.barh(labels, widths, left=left, label=category)
        left = [a + b for a, b in zip(left, widths)]
    ax.set(xlabel="MiB at the peak of a training step")
    ax.legend(fontsize=8, ncol=len(categories), loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    return ax
