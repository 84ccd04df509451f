"""Small matplotlib helpers shared by the course notebooks: loss curves (memory plots: ``peftbook.plots``).

Each function draws on ``ax`` (a new figure when ``None``) and returns the axes, so a notebook can
add a title or a second panel and then call ``plt.show()``.
"""
from __future__ import annotations


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

