"""Every figure peftbook draws: each function returns a matplotlib ``Figure`` (made without pyplot).

No function here touches pyplot's global state or the backend: Jupyter displays a returned Figure,
``save_figure`` writes one to a file, and a notebook's own ``plt.show()`` keeps working after any
of them. Memory plots take ``MemoryReport`` objects (``track_memory``, ``simulate_memory``) or their
``to_dict()`` form, so results loaded from JSON plot the same way; benchmark plots take the rows of
``peftbook.results.summarize``; the notebooks' own figures take the lists and dicts they compute.

One look for all of them: ``STYLE`` (fonts, grid, spines) is in force while a figure is made
(``new_figure``, ``styled``), a method has one colour in every figure (``METHOD_COLORS``), legends
sit outside the data, axes that count things have integer ticks, log axes print few plain labels,
and score axes (accuracy, ...) stay inside [0, 1] (``score_axis``). ``overlapping_texts`` checks
a figure for labels drawn on top of each other or off the figure; the tests run it on every plot.
"""
from __future__ import annotations

import functools
import io
import math
import re
import statistics
import textwrap

import numpy as np
import torch
from cycler import cycler
from matplotlib import rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, MaxNLocator, NullFormatter
from matplotlib.transforms import offset_copy

from peftbook.spectrum import cumulative_energy

# Okabe-Ito colours (safe for colour-blind readers); few-shot, which trains nothing, in grey
METHOD_COLORS = {"few_shot": "#7f7f7f", "prompt_tuning": "#56b4e9", "prefix_tuning": "#0072b2",
                 "llama_adapter": "#009e73", "lora": "#e69f00", "qlora": "#d55e00", "full": "#cc79a7"}
CATEGORY_COLORS = {"weights": "#4c72b0", "gradients": "#dd8452", "optimizer": "#55a868",
                   "activations": "#c44e52", "other": "#8c8c8c"}
_CYCLE = ["#0072b2", "#e69f00", "#009e73", "#d55e00", "#cc79a7", "#56b4e9", "#7f7f7f", "#000000"]  # other lines
SCORE_METRICS = ("accuracy", "slot_accuracy", "rougeL", "exact_match", "f1")  # scores in [0, 1]; BLEU is 0-100
STYLE = {"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "xtick.labelsize": 9, "ytick.labelsize": 9,
         "legend.fontsize": 9, "legend.frameon": False, "figure.titlesize": 12,
         "axes.grid": True, "grid.color": "#e0e0e0", "grid.linewidth": 0.6, "axes.axisbelow": True,
         "axes.spines.top": False, "axes.spines.right": False, "axes.prop_cycle": cycler(color=_CYCLE),
         "lines.linewidth": 1.6, "lines.markersize": 5, "errorbar.capsize": 3,
         "figure.facecolor": "white", "savefig.facecolor": "white"}
_ALIASES = {"prompt": "prompt_tuning", "prefix": "prefix_tuning", "adapter": "llama_adapter"}


class ShownFigure(Figure):
    """A Figure that Jupyter shows as a PNG wherever it is displayed (returned from a cell or passed
    to ``display``), whether or not the notebook has set up matplotlib's inline backend yet."""

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", dpi=100)
        return buffer.getvalue()

    def add_subplot(self, *args, **kwargs):  # every Axes takes STYLE (grid, spines, tick sizes, colours)
        with rc_context(STYLE):
            return super().add_subplot(*args, **kwargs)

    def add_axes(self, *args, **kwargs):
        with rc_context(STYLE):
            return super().add_axes(*args, **kwargs)


def new_figure(figsize=(7, 4)) -> ShownFigure:
    """A Figure without pyplot: no global state, no backend switched, and Jupyter displays it.

    Its axes take ``STYLE``; an Agg canvas of its own lets ``overlapping_texts`` and the label
    placement measure texts."""
    with rc_context(STYLE):
        fig = ShownFigure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def styled(function):
    """Run a plotting function under ``STYLE``, so the titles, labels and legends it makes take it too."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with rc_context(STYLE):
            return function(*args, **kwargs)
    return wrapper


def save_figure(fig, path, dpi: int = 110):
    """Write ``fig`` to ``path`` (PNG by its suffix) and return the path."""
    fig.savefig(path, dpi=dpi)
    return path


# -- shared pieces: colours, axes, legends, labels ---------------------------------------------------
def method_color(label: str, default: str | None = None) -> str | None:
    """The colour of the method a label names ("LoRA r=8", "prompt tuning n=20", "full\\nestimate"), else
    ``default``."""
    key = re.sub(r"[\s\-]+", "_", str(label).strip().lower())
    for name in sorted([*METHOD_COLORS, *_ALIASES], key=len, reverse=True):
        if key == name or (key.startswith(name) and not key[len(name)].isalnum()):
            return METHOD_COLORS[_ALIASES.get(name, name)]
    return default


def _colors(labels) -> dict:
    """A colour per label: the methods' own when every label names a different method, else the cycle."""
    labels = list(labels)
    own = [method_color(label) for label in labels]
    if all(own) and len(set(own)) == len(own):
        return dict(zip(labels, own))
    return {label: _CYCLE[i % len(_CYCLE)] for i, label in enumerate(labels)}


def score_axis(ax, metric: str, label: str | None = None):
    """Label the y axis (``label``, default ``metric``); for a score in [0, 1] (``SCORE_METRICS``) keep its
    limits inside [0, 1] and draw markers on the edge unclipped. Call it after the data is drawn."""
    ax.set_ylabel(label or metric)
    if metric in SCORE_METRICS:
        low, high = ax.get_ylim()
        low, high = max(0.0, low), min(1.0, high)
        if high - low < 0.05:  # every score the same (e.g. all at the ceiling): show a readable stretch
            low, high = max(0.0, min(low, high - 0.05)), min(1.0, max(high, low + 0.05))
        ax.set_ylim(low, high)
        for line in ax.lines:
            if line.get_marker() not in (None, "None", "", " "):
                line.set_clip_on(False)
    return ax


def clipped_errors(means, spreads, low: float = 0.0, high: float = 1.0) -> list[list[float]]:
    """``yerr`` for ``errorbar``: mean ± spread cut at ``low`` and ``high`` (a score cannot pass 1)."""
    spreads = [s or 0.0 for s in spreads]
    return [[min(s, m - low) for m, s in zip(means, spreads)], [min(s, high - m) for m, s in zip(means, spreads)]]


def _count_axis(axis):
    """Integer ticks: an axis that counts things (steps, layers, shots) never shows 1.5."""
    axis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))


def _short_count(value: float) -> str:
    """3584 -> '3.58k', 3279104 -> '3.28M', 16 -> '16'."""
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:g}"


def _log_axis(axis, values=None, base: float = 10, formatter=_short_count):
    """A few plain labels on a log-scaled axis: at ``values`` (thinned where they would touch) when given, else
    at the powers of ``base`` (and 2x, 5x when the axis spans under two of them); none on minor ticks."""
    axis.set_minor_formatter(NullFormatter())
    axis.set_major_formatter(FuncFormatter(lambda v, _: formatter(v)))
    positions = sorted({float(v) for v in values or [] if v > 0})
    if positions:
        kept = []
        span = math.log(positions[-1] / positions[0]) if len(positions) > 1 else 1.0
        for v in positions:  # a tick closer than 8% of the span to the last kept one would touch it
            if not kept or math.log(v / kept[-1]) >= 0.08 * span:
                kept.append(v)
        axis.set_major_locator(FixedLocator(kept))
        axis.set_minor_locator(FixedLocator([]))
        return
    low, high = sorted(axis.axes.get_xlim() if axis is axis.axes.xaxis else axis.axes.get_ylim())
    decades = math.log(high / low, base) if low > 0 else 3
    axis.set_major_locator(LogLocator(base=base, subs=(1.0,) if decades >= 2 else (1.0, 2.0, 5.0), numticks=7))


def _set_log(ax, which: str, values=None, base: float = 10, formatter=_short_count):
    (ax.set_xscale if which == "x" else ax.set_yscale)("log", base=base)
    _log_axis(ax.xaxis if which == "x" else ax.yaxis, values, base, formatter)


def _category_ticks(ax, labels, positions=None):
    """Category names under the x axis, turned 30° when they would not fit side by side."""
    positions = list(range(len(labels))) if positions is None else positions
    width_in = ax.get_position().width * ax.figure.get_figwidth()
    widest = max((max(len(line) for line in str(label).split("\n")) for label in labels), default=0)
    turn = len(labels) * (widest + 2) * 0.075 > width_in  # ~0.075 in per character at 9 pt
    ax.set_xticks(positions, labels, rotation=30 if turn else 0, ha="right" if turn else "center",
                  rotation_mode="anchor" if turn else "default")
    ax.grid(False, axis="x")


def _title(ax, text: str | None):
    """A title wrapped to about the width of its axes (12 characters per inch at 11 pt)."""
    if text:
        spec = ax.get_subplotspec()
        share = len(spec.colspan) / spec.get_gridspec().ncols if spec else ax.get_position().width
        ax.set_title("\n".join(textwrap.wrap(text, max(28, int(share * ax.figure.get_figwidth() * 0.85 * 12)))))


def _renderer(fig):
    """Draw ``fig`` (its layout included) and return the renderer, to measure texts in display units."""
    if not hasattr(fig.canvas, "get_renderer"):
        FigureCanvasAgg(fig)
    fig.canvas.draw()
    return fig.canvas.get_renderer()


def _legend_outside(ax, where: str = "right", **kwargs):
    """The axes' legend outside its data: to the right, or under the x axis's labels (``where="below"``)."""
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return None
    if where == "right":
        return ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, **kwargs)
    fig = ax.figure
    renderer = _renderer(fig)
    below = (ax.bbox.y0 - ax.xaxis.get_tightbbox(renderer).y0) * 72 / fig.dpi + 4  # points under the axes
    return ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), borderaxespad=0,
                     bbox_transform=offset_copy(ax.transAxes, fig=fig, y=-below, units="points"),
                     ncols=min(len(handles), kwargs.pop("ncols", 2)), **kwargs)


def _obstacles(ax) -> np.ndarray:
    """Boxes (x0, y0, x1, y1, weight) in display units around what is drawn in ``ax``: markers weigh 10,
    points sampled along lines and error bars weigh 3."""
    boxes = []

    def along(xy, half, weight):
        for (x0, y0), (x1, y1) in zip(xy[:-1], xy[1:]):
            n = max(1, int(math.hypot(x1 - x0, y1 - y0) / 4))
            for t in np.linspace(0, 1, n + 1):
                x, y = x0 + t * (x1 - x0), y0 + t * (y1 - y0)
                boxes.append((x - half, y - half, x + half, y + half, weight))

    for line in ax.lines:
        xy = line.get_transform().transform(line.get_xydata())
        xy = xy[np.isfinite(xy).all(axis=1)]
        if line.get_marker() not in (None, "None", "", " "):
            half = line.get_markersize() * ax.figure.dpi / 72 / 2 + 1
            boxes += [(x - half, y - half, x + half, y + half, 10) for x, y in xy]
        if line.get_linestyle() not in ("None", "", " ") and len(xy) < 200:
            along(xy, 1.5, 3)
    for collection in ax.collections:
        if hasattr(collection, "get_segments"):  # error bars
            for segment in collection.get_segments():
                along(collection.get_transform().transform(np.asarray(segment)), 1.5, 3)
    return np.array(boxes).reshape(-1, 5)


def _label_points(ax, xs, ys, labels, colors=None, fontsize: float = 8):
    """Write each label next to its point, inside the axes, where it covers no other label, point or
    error bar as far as it can; a label placed further away gets a thin leader line to its point."""
    fig = ax.figure
    renderer = _renderer(fig)
    points_per_px = 72 / fig.dpi
    frame = ax.bbox
    obstacles = _obstacles(ax)
    anchors = ax.transData.transform(np.column_stack([xs, ys]))
    placed = []
    # the most crowded points choose first
    crowd = [sum(np.hypot(*(a - b)) < 60 for b in anchors) for a in anchors]
    for i in sorted(range(len(labels)), key=lambda i: -crowd[i]):
        probe = Text(text=labels[i], fontsize=fontsize)
        probe.set_figure(fig)
        width, height = probe.get_window_extent(renderer).size
        best = None
        for radius in (5, 12, 20, 30, 42):
            for angle in (30, -30, 150, -150, 0, 180, 90, -90):
                dx, dy = radius * math.cos(math.radians(angle)), radius * math.sin(math.radians(angle))
                ha = "left" if dx > 0.5 else "right" if dx < -0.5 else "center"
                va = "bottom" if dy > 0.5 else "top" if dy < -0.5 else "center"
                x = anchors[i][0] + dx / points_per_px - {"left": 0, "right": width, "center": width / 2}[ha]
                y = anchors[i][1] + dy / points_per_px - {"bottom": 0, "top": height, "center": height / 2}[va]
                box = (x, y, x + width, y + height)
                outside = box[0] < frame.x0 or box[1] < frame.y0 or box[2] > frame.x1 or box[3] > frame.y1
                hits = ((obstacles[:, 0] < box[2]) & (obstacles[:, 2] > box[0]) & (obstacles[:, 1] < box[3])
                        & (obstacles[:, 3] > box[1]))
                on_labels = sum(b[0] < box[2] and b[2] > box[0] and b[1] < box[3] and b[3] > box[1] for b in placed)
                cost = 1000 * outside + 100 * on_labels + obstacles[hits, 4].sum() + radius / 10
                if best is None or cost < best[0]:
                    best = (cost, box, dx, dy, ha, va, radius)
        _, box, dx, dy, ha, va, radius = best
        placed.append(box)
        color = (colors or {}).get(labels[i], "0.2")
        ax.annotate(labels[i], (xs[i], ys[i]), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va,
                    fontsize=fontsize, color=color, annotation_clip=False,
                    arrowprops=dict(arrowstyle="-", color="0.5", lw=0.6, shrinkA=1, shrinkB=3) if radius > 12 else None)


# -- the checker ------------------------------------------------------------------------------------
def _drawn_tick_labels(axis) -> list:
    """The tick labels a draw shows: ticks inside the view interval, visible, with text."""
    transform = axis.get_transform()
    low, high = sorted(transform.transform(np.asarray(axis.get_view_interval(), dtype=float)))
    tolerance = 1e-9 * max(abs(high - low), 1e-12)
    shown = []
    for ticks, locations in ((axis.get_major_ticks(len(axis.get_majorticklocs())), axis.get_majorticklocs()),
                             (axis.get_minor_ticks(len(axis.get_minorticklocs())), axis.get_minorticklocs())):
        for tick, location in zip(ticks, locations):
            position = transform.transform(np.array([location], dtype=float))[0]
            if tick.get_visible() and low - tolerance <= position <= high + tolerance:
                shown += [label for label in (tick.label1, tick.label2) if label.get_visible() and label.get_text()]
    return shown


def _visible_texts(fig) -> list:
    axes = list(fig.axes)
    for ax in list(axes):
        axes += [child for child in ax.child_axes if child not in axes]
    tick_labels, shown = set(), []
    for ax in axes:
        for axis in (ax.xaxis, ax.yaxis):
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                tick_labels.update((tick.label1, tick.label2))
            shown += _drawn_tick_labels(axis)
    for text in fig.findobj(Text):
        if text in tick_labels or not text.get_visible() or not text.get_text().strip():
            continue
        parent = getattr(text, "axes", None)
        if parent is not None and not parent.get_visible():
            continue
        shown.append(text)
    return shown


def _corners(text, renderer) -> np.ndarray:
    """The four corners (display units) of a text's box, turned with the text."""
    box = Text.get_window_extent(text, renderer)  # without an annotation's arrow
    angle = text.get_rotation() % 180
    if angle % 90 == 0:
        return np.array([[box.x0, box.y0], [box.x1, box.y0], [box.x1, box.y1], [box.x0, box.y1]])
    probe = Text(text=text.get_text(), fontproperties=text.get_fontproperties(), linespacing=text.get_linespacing())
    probe.set_figure(text.get_figure(root=True))
    width, height = probe.get_window_extent(renderer).size
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    half = np.array([[-width, -height], [width, -height], [width, height], [-width, height]]) / 2
    return half @ np.array([[c, s], [-s, c]]) + [(box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2]


def _overlap(a: np.ndarray, b: np.ndarray, tolerance: float = 1.0) -> bool:
    """Separating-axis test of two convex quadrilaterals: do they share more than ``tolerance`` pixels?"""
    for polygon in (a, b):
        for k in range(4):
            edge = polygon[(k + 1) % 4] - polygon[k]
            normal = np.array([-edge[1], edge[0]]) / (np.hypot(*edge) or 1)
            pa, pb = a @ normal, b @ normal
            if min(pa.max(), pb.max()) - max(pa.min(), pb.min()) <= tolerance:
                return False
    return True


def overlapping_texts(fig) -> list[tuple[str, str]]:
    """Pairs of visible texts (tick labels, titles, axis labels, annotations, legend entries) drawn on top
    of each other, ``(text, "outside the figure")`` for a text that runs off the figure and
    ``(text, "outside its axes")`` for a note or point label that runs off the axes it was written in.

    Draws the figure first (layout included) and compares the texts' boxes, turned with rotated texts."""
    renderer = _renderer(fig)
    texts = _visible_texts(fig)
    corners = [_corners(t, renderer) for t in texts]
    in_axes = {text: ax.bbox for ax in fig.axes for text in ax.texts}  # notes and point labels written in an axes
    found = []
    for i, (text, box) in enumerate(zip(texts, corners)):
        for frame, where in ((fig.bbox, "outside the figure"), (in_axes.get(text), "outside its axes")):
            if frame is not None and (box[:, 0].min() < frame.x0 - 1 or box[:, 1].min() < frame.y0 - 1
                                      or box[:, 0].max() > frame.x1 + 1 or box[:, 1].max() > frame.y1 + 1):
                found.append((text.get_text(), where))
                break
        for other, other_box in zip(texts[i + 1:], corners[i + 1:]):
            if _overlap(box, other_box):
                found.append((text.get_text(), other.get_text()))
    return found


# -- memory -----------------------------------------------------------------------------------------
def _as_dict(report) -> dict:
    return report if isinstance(report, dict) else report.to_dict(timeline=True)


def _stacked_bars(ax, labels: list[str], series: dict, width: float) -> list[float]:
    """One bar per label, ``series`` ``{name: (heights per label, color)}`` stacked bottom first; returns the tops."""
    bottom = [0.0] * len(labels)
    for name, (heights, color) in series.items():
        ax.bar(range(len(labels)), heights, bottom=bottom, color=color, label=name, width=width)
        bottom = [b + h for b, h in zip(bottom, heights)]
    return bottom


def _stack_legend(ax):
    """The legend of stacked bars, outside on the right, its top entry the top of the stack."""
    handles, names = ax.get_legend_handles_labels()
    return ax.legend(handles[::-1], names[::-1], loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)


def _unit(max_bytes: float) -> tuple[str, float]:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if max_bytes >= scale:
            return unit, scale
    return "B", 1.0


@styled
def plot_memory_by_category(reports: dict, title: str = "Peak memory of one training step"):
    """Stacked bars, one per label (e.g. method): the peak split into weights, gradients, ..."""
    data = {label: _as_dict(r) for label, r in reports.items()}
    unit, scale = _unit(max(d["peak_bytes"] for d in data.values()))
    fig = new_figure((max(7.0, 2.6 + 0.75 * len(data)), 4))  # a bar's label (e.g. "lora\nsimulate") fits under it
    ax = fig.add_subplot()
    labels = list(data)
    _stacked_bars(ax, labels, {category: ([data[label]["by_category"].get(category, 0) / scale for label in labels], color)
                               for category, color in CATEGORY_COLORS.items()}, width=0.7)
    _category_ticks(ax, labels)
    ax.set_ylabel(f"peak memory ({unit})")
    _title(ax, title)
    _stack_legend(ax)
    return fig


@styled
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
    ax.plot([v / scale for v in timeline], color=CATEGORY_COLORS["weights"], linewidth=1)
    peak_index = data.get("peak_index", max(range(len(timeline)), key=timeline.__getitem__))
    ax.plot([peak_index], [timeline[peak_index] / scale], "o", color=CATEGORY_COLORS["activations"],
            label=f"peak: {timeline[peak_index] / scale:.1f} {unit}")
    ax.set_ylim(0, max(timeline) / scale * 1.05)  # from 0: the memory that never goes away is in sight
    ax.set_xlabel("allocation / free events")
    ax.set_ylabel(f"live memory ({unit})")
    _count_axis(ax.xaxis)
    _title(ax, title)
    _legend_outside(ax)
    markers = sorted(data.get("markers", []))
    if markers:  # phase names upright along their line, at the bottom (under the weights, never crossed)
        _renderer(fig)  # the final layout, to measure in display units
        line_px = 9 * 1.3 * fig.dpi / 72
        taken = []
        for index, label in markers:
            ax.axvline(index, color="#8c8c8c", linestyle=":", linewidth=1)
            x = ax.transData.transform((index, 0))[0]
            sides = {"right": (x - line_px, x), "left": (x, x + line_px)}  # ha="right": the text left of the line
            free = [side for side, (a, b) in sides.items() if all(b <= c or a >= d for c, d in taken)]
            side = (free or ["right"])[0]
            taken.append(sides[side])
            ax.text(index, 0.02, f" {label} ", transform=ax.get_xaxis_transform(), rotation=90, fontsize=9,
                    ha=side, va="bottom", color="0.3")
    return fig


@styled
def plot_simulated_vs_measured(rows, title: str = "Simulated vs measured peak"):
    """Scatter of (measured, simulated) peaks with the y = x line; ``rows``: (label, simulated, measured)."""
    rows = list(rows)
    if not rows:
        raise ValueError("no (label, simulated_bytes, measured_bytes) rows to plot")
    unit, scale = _unit(max(max(s, m) for _, s, m in rows))
    fig = new_figure((5.5, 5))
    ax = fig.add_subplot()
    top = max(max(s, m) for _, s, m in rows) / scale * 1.08
    ax.plot([0, top], [0, top], color="#8c8c8c", linestyle="--", linewidth=1, label="simulated = measured")
    colors = _colors([label for label, _, _ in rows])
    for label, simulated, measured in rows:
        ax.plot(measured / scale, simulated / scale, "o", color=colors[label])
    ax.set(xlim=(0, top), ylim=(0, top), xlabel=f"measured ({unit})", ylabel=f"simulated ({unit})")
    _title(ax, title)
    _legend_outside(ax, "below", ncols=1)
    _label_points(ax, [m / scale for _, _, m in rows], [s / scale for _, s, _ in rows], [r[0] for r in rows], colors)
    return fig


@styled
def plot_peak_by_size(sizes: list[str], peaks: dict, rule_of_thumb: list[float] | None = None,
                      gpu_bytes: float | None = 80e9, title: str | None = None):
    """Grouped bars, log y in GB: the peak of each method (``{method: [bytes per size]}``) for each model
    size, with the "16 GB per 1B parameters" rule (``rule_of_thumb``, bytes per size) and one GPU's memory."""
    fig = new_figure((8.5, 3.6))
    ax = fig.add_subplot()
    width = 0.8 / len(peaks)
    colors = _colors(peaks)
    for i, (method, values) in enumerate(peaks.items()):
        ax.bar([x + (i - (len(peaks) - 1) / 2) * width for x in range(len(sizes))], [v / 1e9 for v in values],
               width, label=method, color=colors[method])
    if rule_of_thumb:
        ax.hlines([v / 1e9 for v in rule_of_thumb], [x - 0.42 for x in range(len(sizes))],
                  [x + 0.42 for x in range(len(sizes))], color="black", linewidth=2, zorder=3,
                  label="16 GB per 1B rule")
    if gpu_bytes:
        ax.axhline(gpu_bytes / 1e9, linestyle=":", color="0.4", label=f"one {gpu_bytes / 1e9:g} GB GPU")
    _set_log(ax, "y", formatter=lambda v: f"{v:,.0f}" if v >= 1 else f"{v:g}")
    ax.set_ylabel("GB (simulated peak)")
    _category_ticks(ax, sizes)
    _title(ax, title)
    _legend_outside(ax)
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


@styled
def plot_losses(curves: dict, ax=None, window: int | None = None, ylabel: str = "training loss",
                title: str | None = None, colors: dict | None = None, legend: bool = True, **line_kwargs):
    """One line per ``{label: losses}``: the raw loss faint, its moving average on top.

    Draws on ``ax`` when given (a panel of a larger figure), else on a new figure; returns the figure.
    ``colors``: ``{label: colour}`` (default: each method's own, else the cycle); ``legend=False``
    leaves the legend to the caller.
    """
    if ax is None:
        ax = new_figure((7, 3.2)).add_subplot()
    colors = {**_colors(curves), **(colors or {})} if "color" not in line_kwargs else {}
    for label, losses in curves.items():
        steps = range(1, len(losses) + 1)
        window = window or max(1, len(losses) // 15)
        style = {"color": colors[label]} if label in colors else {}
        (line,) = ax.plot(steps, smooth(losses, window), label=label, **{**style, **line_kwargs})
        if window > 1:
            ax.plot(steps, losses, color=line.get_color(), alpha=0.2, linewidth=0.8)
    ax.set(xlabel="step", ylabel=ylabel)
    _count_axis(ax.xaxis)
    _title(ax, title)
    if len(curves) > 1 and legend:
        _legend_outside(ax)
    return ax.figure


@styled
def plot_loss_bands(curves: dict, title: str, window: int | None = None):
    """For each ``{label: [losses per seed]}``: the mean over seeds (smoothed) and a band of ± one sd."""
    fig = new_figure((7, 3.2))
    ax = fig.add_subplot()
    colors = _colors(curves)
    for label, runs in curves.items():
        steps = min(len(r) for r in runs)
        window = window or max(1, steps // 15)
        smoothed = [smooth(r[:steps], window) for r in runs]
        mean = [statistics.fmean(v) for v in zip(*smoothed)]
        sd = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in zip(*smoothed)]
        ax.plot(range(1, steps + 1), mean, label=f"{label} ({len(runs)} seeds)", color=colors[label])
        ax.fill_between(range(1, steps + 1), [m - s for m, s in zip(mean, sd)], [m + s for m, s in zip(mean, sd)],
                        color=colors[label], alpha=0.2)
    ax.set(xlabel="step", ylabel="training loss\n(mean ± sd over seeds)")
    _count_axis(ax.xaxis)
    _title(ax, title)
    _legend_outside(ax)
    return fig


@styled
def plot_gate_runs(curves: dict, window: int | None = None):
    """LLaMA-Adapter's gate experiment, ``{gate: [losses per seed]}``: each seed's loss (faint) and the
    mean (bold, smoothed; log y), and the spread of the seeds' losses at each step (sd, smoothed)."""
    fig = new_figure((10, 3.4))
    losses, spread = fig.subplots(1, 2)
    colors = _colors(curves)
    for gate, runs in curves.items():
        steps = range(1, min(len(r) for r in runs) + 1)
        window = window or max(1, len(steps) // 20)
        for run in runs:
            losses.plot(steps, run[:len(steps)], color=colors[gate], alpha=0.3, linewidth=0.8)
        at_step = list(zip(*(r[:len(steps)] for r in runs)))
        losses.plot(steps, smooth([statistics.fmean(s) for s in at_step], window), color=colors[gate],
                    label=f"{gate} gate")
        spread.plot(steps, smooth([statistics.stdev(s) if len(s) > 1 else 0.0 for s in at_step], window),
                    color=colors[gate])
    seeds = min(len(runs) for runs in curves.values())
    losses.set(xlabel="step", ylabel="training loss")
    _set_log(losses, "y", formatter=lambda v: f"{v:g}")
    spread.set(xlabel="step", ylabel="sd across seeds")
    for ax in (losses, spread):
        _count_axis(ax.xaxis)
    _title(losses, f"each seed (faint), mean of {seeds} (bold)")
    _title(spread, "spread of the curves across seeds (moving average)")
    fig.legend(loc="outside right upper")
    return fig


# -- few-shot ---------------------------------------------------------------------------------------
@styled
def plot_shot_curves(curves: dict, metric: str, title: str | None = None, spread: str = "draws"):
    """Score against the number of demonstrations k, one line per ``{label: rows}`` (rows of
    ``few_shot_curve``: shots, mean, std, values) through the means; ``spread="draws"`` marks every
    draw with an x, ``"std"`` draws mean ± sd bars (cut at 0 and 1)."""
    fig = new_figure((7, 3.4))
    ax = fig.add_subplot()
    colors = _colors(curves)
    for i, (label, rows) in enumerate(curves.items()):
        offset = 0.12 * (i - (len(curves) - 1) / 2) if spread == "draws" else 0.0
        xs = [r["shots"] + offset for r in rows]
        means = [r["mean"] for r in rows]
        if spread == "draws":
            ax.plot(xs, means, "o-", color=colors[label], label=f"{label} (mean)")
            for x, r in zip(xs, rows):  # every draw, not only the mean
                ax.plot([x] * len(r.get("values", [])), r.get("values", []), "x", color=colors[label], alpha=0.6)
        else:
            ax.errorbar(xs, means, yerr=clipped_errors(means, [r.get("std") for r in rows]), fmt="o-",
                        color=colors[label], label=label)
    ax.set_xticks(sorted({r["shots"] for rows in curves.values() for r in rows}))
    ax.set_xlabel("shots k")
    score_axis(ax, metric, f"test {metric}")
    _title(ax, title)
    if len(curves) > 1:
        _legend_outside(ax)
    return fig


def _draw_choice_order(ax, grid: dict, metric: str, legend_labels: bool = True):
    """One column per k of ``{k: [per choice of demonstrations: [score per order]]}``, the choices side by side."""
    ks = sorted(grid, key=int)
    for i, k in enumerate(ks):
        for c, orders in enumerate(grid[k]):
            x = i + 0.12 * (c - (len(grid[k]) - 1) / 2)
            ax.plot([x] * len(orders), orders, "o-", alpha=0.7, color=_CYCLE[c % len(_CYCLE)],
                    label=f"choice {c + 1}" if i == 0 and legend_labels else None)
    ax.set_xticks(range(len(ks)), [f"k={k}" for k in ks])
    ax.grid(False, axis="x")
    score_axis(ax, metric, f"test {metric}")


@styled
def plot_choice_order(grid: dict, metric: str):
    """Few-shot scores per k: one column of dots per choice of demonstrations, its orders stacked."""
    fig = new_figure((7, 4))
    ax = fig.add_subplot()
    _draw_choice_order(ax, grid, metric)
    _title(ax, "few-shot: each column a choice of examples, its dots their orders")
    _legend_outside(ax)
    return fig


@styled
def plot_order_spread(grid: dict, spreads: dict, noise: list[float], metric: str):
    """Which examples or their order: ``grid`` as in ``plot_choice_order``; beside it, per k, the spread
    over choices and over orders (``{k: {"choices", "orders"}}``) against the scoring noise at that k."""
    fig = new_figure((10, 3.4))
    left, right = fig.subplots(1, 2)
    _draw_choice_order(left, grid, metric, legend_labels=False)
    _title(left, "one column per draw of examples; its dots: orders")
    ks = range(len(spreads))
    right.bar([x - 0.2 for x in ks], [s["choices"] for s in spreads.values()], 0.4, label="spread over choices")
    right.bar([x + 0.2 for x in ks], [s["orders"] for s in spreads.values()], 0.4, label="spread over orders")
    right.hlines(noise, [x - 0.45 for x in ks], [x + 0.45 for x in ks], color="0.4", linewidth=2,
                 label="scoring noise at that k", zorder=3)
    right.set_xticks(list(ks), [f"k={k}" for k in spreads])
    right.grid(False, axis="x")
    right.set_ylabel(f"range of test {metric}")
    _legend_outside(right)
    return fig


@styled
def plot_prompt_cost(cost: list[dict]):
    """What k demonstrations cost, ``[{"shots", "tokens", "latency_s"}]``: tokens per prompt and ms per forward."""
    fig = new_figure((10, 3))
    tokens, latency = fig.subplots(1, 2)
    shots = [c["shots"] for c in cost]
    color = METHOD_COLORS["few_shot"]
    tokens.plot(shots, [c["tokens"] for c in cost], "o-", color=color)
    latency.plot(shots, [1000 * c["latency_s"] for c in cost], "o-", color=color)
    tokens.set_ylabel("tokens per prompt")
    latency.set_ylabel("ms per forward (batch 1)")
    for ax in (tokens, latency):
        ax.set_xlabel("shots k")
        ax.set_xticks(sorted(set(shots)))
        ax.set_ylim(bottom=0)
    return fig


# -- LoRA and QLoRA ---------------------------------------------------------------------------------
@styled
def plot_forward_times(times: dict, title: str | None = None):
    """One box per model of ``{name: [ms per forward]}`` (e.g. base, LoRA, LoRA merged)."""
    fig = new_figure((6.5, 3.2))
    ax = fig.add_subplot()
    boxes = ax.boxplot(list(times.values()), patch_artist=True, widths=0.5, medianprops=dict(color="black"))
    for box, name in zip(boxes["boxes"], times):
        box.set(facecolor=method_color(name, "#bbbbbb"), alpha=0.6)
    _category_ticks(ax, list(times), positions=list(range(1, len(times) + 1)))
    ax.set_ylabel("ms per forward (batch 1)")
    _title(ax, title)
    return fig


def _energy(values) -> list[float]:
    return cumulative_energy(torch.as_tensor(values)).tolist()


@styled
def plot_weight_change_spectra(spectra: dict, random: dict, rank: int):
    """The singular values of weight changes ``{label: values}`` (solid) against a random matrix of the same
    shape each (``{label: values}``, dotted, same colour): σ_i / σ_1, and the cumulative share of the energy
    with a line at ``rank``."""
    fig = new_figure((10, 3.6))
    normalized, cumulative = fig.subplots(1, 2)
    for index, (label, values) in enumerate(spectra.items()):
        color = _CYCLE[index % len(_CYCLE)]
        for series, style, name in ((values, "-", label), (random.get(label), ":", None)):
            if series is None:
                continue
            series = [float(v) for v in series]
            positions = range(1, len(series) + 1)
            normalized.plot(positions, [v / series[0] for v in series], style, color=color, label=name)
            cumulative.plot(positions, _energy(series), style, color=color)
    cumulative.axvline(rank, color="0.4", linestyle="--", linewidth=1, label=f"r = {rank}")
    _set_log(normalized, "x", formatter=lambda v: f"{v:g}")
    _set_log(normalized, "y", formatter=lambda v: f"{v:g}")
    _set_log(cumulative, "x", formatter=lambda v: f"{v:g}")
    normalized.set(xlabel="direction i", ylabel="σ_i / σ_1")
    cumulative.set(xlabel="top r directions", ylabel="share of the energy", ylim=(0, 1.03))
    _title(normalized, "singular values of ΔW (dotted: random)")
    _title(cumulative, "cumulative energy (dotted: random)")
    handles = normalized.get_legend_handles_labels()[0] + cumulative.get_legend_handles_labels()[0]
    fig.legend(handles, [h.get_label() for h in handles], loc="outside right upper")
    return fig


@styled
def plot_quant_levels(levels: dict):
    """The 16 levels of each 4-bit data type, ``{name: [levels]}``, as fractions of a block's absmax."""
    fig = new_figure((7, 0.9 + 0.5 * len(levels)))
    ax = fig.add_subplot()
    for row, (name, values) in enumerate(levels.items()):
        ax.plot(values, [row] * len(values), "|", markersize=16, markeredgewidth=1.6, color=_CYCLE[row % len(_CYCLE)])
    ax.set_yticks(range(len(levels)), list(levels))
    ax.set_ylim(-0.7, len(levels) - 0.3)
    ax.grid(False, axis="y")
    ax.set_xlabel("level (a fraction of the block's absmax)")
    return fig


@styled
def plot_quant_variants(variants: list[dict]):
    """4-bit storage per variant, ``[{"quant_type", "double_quant", "bytes_per_weight", "closed_form",
    "weight_error"}]``: bits per weight measured (bars) and by the closed form, and the relative weight error."""
    fig = new_figure((10, 3))
    bits, error = fig.subplots(1, 2)
    names = [f"{v['quant_type']}{' +DQ' if v['double_quant'] else ''}" for v in variants]
    color = METHOD_COLORS["qlora"]
    bars = bits.bar(range(len(names)), [8 * v["bytes_per_weight"] for v in variants], 0.6, color=color, alpha=0.8,
                    label="measured")
    bits.hlines([8 * v["closed_form"] for v in variants], [x - 0.38 for x in range(len(names))],
                [x + 0.38 for x in range(len(names))], color="black", linewidth=2, label="closed form", zorder=3)
    values = [8 * v[k] for v in variants for k in ("bytes_per_weight", "closed_form")]
    bits.set_ylim(0, max(values) * 1.2)  # bars start at 0: their heights compare; the labels give the decimals
    bits.bar_label(bars, fmt="%.2f", padding=3, fontsize=8)
    bits.set_ylabel("bits per weight")
    error.bar(range(len(names)), [v["weight_error"] for v in variants], 0.6, color=color, alpha=0.8)
    error.set_ylabel("relative weight error")
    for ax in (bits, error):
        _category_ticks(ax, names)
    _legend_outside(bits)
    return fig


# -- the tiny world ---------------------------------------------------------------------------------
@styled
def plot_pretraining(curve: list[dict]):
    """The tiny base's pretraining, rows ``{"step", "train_loss", "heldout_loss", "stage", "repeat_loss",
    "icl_accuracy"}``: the losses, induction (a repeated random sequence gets cheap) and in-context
    learning, with the start of each curriculum stage named on top."""
    fig = new_figure((15, 3.8))
    losses, induction, icl = fig.subplots(1, 3)
    steps = [row["step"] for row in curve]
    losses.plot(steps, [row["train_loss"] for row in curve], label="train (running mean, this stage's mix)")
    losses.plot(steps, [row["heldout_loss"] for row in curve], label="held-out world corpus")
    with_repeat = [row for row in curve if "repeat_loss" in row]
    for key, label in (("first", "30 random words"), ("repeat", "the same words again")):
        induction.plot([r["step"] for r in with_repeat], [r["repeat_loss"][key] for r in with_repeat], "o-",
                       label=label, markersize=4)
    for k in curve[-1].get("icl_accuracy", {}):
        icl.plot(steps, [row.get("icl_accuracy", {}).get(k, math.nan) for row in curve], "o-", label=f"{k}-shot",
                 markersize=4)
    boundaries = [(before["step"], row["stage"]) for before, row in zip(curve, curve[1:])
                  if row.get("stage", "world") != before.get("stage", "world")]
    for ax in (losses, induction, icl):
        ax.set_xlabel("pretraining step")
        for step, _ in boundaries:
            ax.axvline(step, color="0.6", linewidth=0.8, linestyle=":")
        if boundaries:  # each stage's name on top, over the steps it ran
            starts = [steps[0]] + [s for s, _ in boundaries]
            ends = [s for s, _ in boundaries] + [steps[-1]]
            names = [curve[0].get("stage", "world")] + [name for _, name in boundaries]
            top = ax.secondary_xaxis("top")
            top.set_xticks([(a + b) / 2 for a, b in zip(starts, ends)], names, fontsize=8, color="0.4")
            top.tick_params(length=0, pad=1)
            top.spines["top"].set_visible(False)
    losses.set_ylabel("loss (nats/token)")
    induction.set_ylabel("loss (nats/token)")
    score_axis(icl, "accuracy", "sentiment validation accuracy")
    _title(losses, "language modelling")
    _title(induction, "induction: the repeat gets cheap")
    _title(icl, "in-context learning emerging")
    for ax in (losses, induction, icl):
        _legend_outside(ax, "below")
    return fig


# -- the benchmark ----------------------------------------------------------------------------------
@styled
def plot_metric_vs_params(rows: list[dict]):
    """Quality against trainable parameters (log x; few-shot, which trains nothing, drawn at 1)."""
    fig = new_figure((7, 4.2))
    ax = fig.add_subplot()
    xs = [max(row["trainable_params"], 1) for row in rows]
    values = [row["value"] for row in rows]
    colors = {row["method"]: method_color(row["method"], "0.3") for row in rows}
    for x, row, (low, high) in zip(xs, rows, zip(*clipped_errors(values, [row.get("std") for row in rows]))):
        ax.errorbar(x, row["value"], yerr=[[low], [high]], fmt="o", color=colors[row["method"]])
    ax.set_xscale("log")
    ax.set_xlim(min(xs) / 2, max(xs) * 3)
    _set_log(ax, "x")
    ax.set_xlabel("trainable parameters (log; few-shot at 1)")
    score_axis(ax, rows[0]["metric"], f"test {rows[0]['metric']}")
    _title(ax, "quality vs trainable parameters (bars: ± sd over seeds)")
    _label_points(ax, xs, values, [row["method"] for row in rows], colors)
    return fig


@styled
def plot_bars(rows: list[dict], key: str, label: str, merged_key: str | None = None):
    """One bar per method of ``row[key]``; with ``merged_key``, a hatched bar beside it for the merged LoRA latency."""
    fig = new_figure((7, 4))
    ax = fig.add_subplot()
    names, heights, colors, hatches = [], [], [], []
    for row in rows:
        names.append(row["method"])
        heights.append(row[key] or 0)
        colors.append(method_color(row["method"], "0.5"))
        hatches.append(None)
        if merged_key and row.get(merged_key):
            names.append(f"{row['method']} (merged)")
            heights.append(row[merged_key])
            colors.append(method_color(row["method"], "0.5"))
            hatches.append("//")
    bars = ax.bar(range(len(names)), heights, 0.7, color=colors)
    for bar, hatch in zip(bars, hatches):
        if hatch:
            bar.set(hatch=hatch, edgecolor="white", alpha=0.8)
    _category_ticks(ax, names)
    ax.set_ylabel(label)
    _title(ax, label)
    return fig


def plot_bench(rows: list[dict]) -> dict:
    """The benchmark's four figures by file stem: quality vs parameters, peak memory, step time, latency."""
    memory = {r["method"]: {"peak_bytes": r["peak_memory_bytes"] or 0, "by_category": r["memory_by_category"] or {}}
              for r in rows}
    return {"metric_vs_params": plot_metric_vs_params(rows),
            "peak_memory": plot_memory_by_category(memory, "peak memory by category (few-shot: inference)"),
            "step_time": plot_bars(rows, "step_time_s", "seconds per training step"),
            "latency": plot_bars(rows, "latency_s", "seconds per example (batch 1)", "latency_merged_s")}


@styled
def plot_seed_scores(scores: dict, metric: str, title: str = "test score per seed"):
    """One column per method of ``{method: [score per seed]}``: a dot per seed, the mean ± sd as a bar."""
    fig = new_figure((7, 4))
    ax = fig.add_subplot()
    colors = _colors(scores)
    for x, (method, values) in enumerate(scores.items()):
        mean = statistics.fmean(values)
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        ax.errorbar(x, mean, yerr=clipped_errors([mean], [sd]), fmt="_", markersize=18, capsize=6, color="black",
                    zorder=3)
        ax.scatter([x + 0.08 * (i - (len(values) - 1) / 2) for i in range(len(values))], values, alpha=0.8,
                   color=colors[method], zorder=2)
    _category_ticks(ax, list(scores))
    score_axis(ax, metric, f"test {metric}")
    _title(ax, title)
    return fig


@styled
def plot_spectra(spectra: dict, random_values=None, rank: int | None = None, limit: int = 6):
    """Cumulative share of energy in the top-r singular directions, per matrix of ``{name: singular values}``
    (at most ``limit`` drawn), against a random matrix's (``random_values``); a line at ``rank``."""
    fig = new_figure((7.5, 3.6))
    ax = fig.add_subplot()
    for name, values in list(spectra.items())[:limit]:
        ax.plot(range(1, len(values) + 1), _energy(values), label=name, linewidth=1)
    if random_values is not None:
        ax.plot(range(1, len(random_values) + 1), _energy(random_values), "k--", label="random matrix")
    if rank:
        ax.axvline(rank, color="0.4", linestyle=":", label=f"r = {rank}")
    _set_log(ax, "x", formatter=lambda v: f"{v:g}")
    ax.set(xlabel="top r singular directions", ylabel="share of the change's energy", ylim=(0, 1.03))
    _title(ax, "how low-rank is the weight change of full fine-tuning?")
    _legend_outside(ax, fontsize=8)
    return fig


@styled
def plot_examples_curve(curves: dict, metric: str, title: str = "test score vs labelled training examples"):
    """One line per method of ``{method: {examples: score}}`` (log x): how each learns from k examples."""
    fig = new_figure((7, 4))
    ax = fig.add_subplot()
    colors = _colors(curves)
    for method, points in curves.items():
        ks = sorted(points, key=int)
        ax.plot([int(k) for k in ks], [points[k] for k in ks], "o-", label=method, color=colors[method])
    _set_log(ax, "x", [int(k) for points in curves.values() for k in points], base=2, formatter=lambda v: f"{v:g}")
    ax.set_xlabel("labelled training examples k (log)")
    score_axis(ax, metric, f"test {metric}")
    _title(ax, title)
    _legend_outside(ax)
    return fig


# ---- the real-model parts of the method notebooks
@styled
def plot_seed_intervals(settings: dict, metric: str, positions: list[float] | None = None,
                        references: dict | None = None, xlabel: str | None = None, title: str | None = None):
    """Per setting of ``{label: [score per seed]}``: a dot per seed and the mean with its 95% t-interval
    (``stats.t_interval``; no bar for one seed). ``positions``: numeric x values (log axis, e.g. ranks),
    else one column per label. ``references``: ``{label: score}`` drawn as dashed horizontal lines."""
    from peftbook import stats

    fig = new_figure((7.5, 3.8))
    ax = fig.add_subplot()
    xs = list(positions) if positions is not None else list(range(len(settings)))
    jitter = (lambda x, i, n: x * 1.06 ** (i - (n - 1) / 2)) if positions is not None else \
        (lambda x, i, n: x + 0.06 * (i - (n - 1) / 2))
    color = METHOD_COLORS["lora"]
    for x, (label, values) in zip(xs, settings.items()):
        interval = stats.t_interval(values)
        ax.scatter([jitter(x, i, len(values)) for i in range(len(values))], values, alpha=0.6,
                   color=method_color(label, color), zorder=2, s=18)
        low, high = interval.low, interval.high
        if low is not None and metric in SCORE_METRICS:  # a 2-seed interval can pass [0, 1]; a score cannot
            low, high = max(low, 0.0), min(high, 1.0)
        errors = None if low is None else [[interval.mean - low], [high - interval.mean]]
        ax.errorbar([x], [interval.mean], yerr=errors, fmt="o", capsize=5, color="black", markersize=5, zorder=3)
    for index, (label, value) in enumerate((references or {}).items()):
        ax.axhline(value, color=_CYCLE[(index + 3) % len(_CYCLE)], linestyle="--", linewidth=1, label=label)
    if positions is not None:
        _set_log(ax, "x", xs, base=2, formatter=lambda v: f"{v:g}")
        ax.set_xlabel(xlabel or "")
    else:
        _category_ticks(ax, list(settings))
    score_axis(ax, metric, f"test {metric}")
    _title(ax, title)
    if references:
        _legend_outside(ax)
    return fig


@styled
def plot_bytes_by_part(models: dict, title: str = "bytes of the frozen model, by part"):
    """Stacked bars, one per model of ``{label: {part: bytes}}``: what each part of the stored model takes."""
    unit, scale = "MiB", 2**20  # as the notebooks' byte tables count
    fig = new_figure((7, 4))
    ax = fig.add_subplot()
    labels = list(models)
    parts = list(dict.fromkeys(part for p in models.values() for part in p))
    bottom = _stacked_bars(ax, labels, {part: ([models[label].get(part, 0) / scale for label in labels],
                                               _CYCLE[i % len(_CYCLE)]) for i, part in enumerate(parts)}, width=0.6)
    ax.bar_label(ax.containers[-1], labels=[f"{b:.0f} {unit}" for b in bottom], padding=3, fontsize=8)
    ax.set_ylim(0, max(bottom) * 1.12)
    _category_ticks(ax, labels)
    ax.set_ylabel(f"stored bytes ({unit})")
    _title(ax, title)
    _stack_legend(ax)
    return fig
