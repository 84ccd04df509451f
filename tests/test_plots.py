"""Figures: every public ``plot_*`` drawn from small realistic inputs, then checked as a reader would look.

No text on top of another or off the figure (``plots.overlapping_texts``), score axes inside [0, 1],
legends off the data, integer ticks on axes that count things. The inputs copy the shapes and values
of the notebooks' recorded metrics (``outputs/*/``): few seeds, scores 0.4-1.0, the tiny model's bytes.
"""
from __future__ import annotations

import inspect
import math
import random

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from peftbook import plots
from peftbook.methods import ALL_METHODS

# 07's quality against trainable parameters: (method, params, mean, sd); prefix tuning and LLaMA-Adapter
# sit at the same x a hair apart, LoRA and QLoRA share an x
CROWDED = [("few_shot", 0, 0.593, 0.015), ("prompt_tuning", 5120, 0.586, 0.018),
           ("prefix_tuning", 10240, 0.624, 0.019), ("llama_adapter", 10256, 0.616, 0.043),
           ("lora", 28672, 0.646, 0.022), ("qlora", 28672, 0.724, 0.107), ("full", 3279104, 0.761, 0.032)]
METHODS = [method for method, *_ in CROWDED]
COUNT_LABELS = ("step", "shots k", "adapted layers", "allocation / free events", "pretraining step",
                "prompt length n", "labelled training examples k", "trainable parameters", "direction i", "top r")
BY_CATEGORY = {"few_shot": (13116672, 0, 0, 3741024), "prompt_tuning": (13137152, 0, 40964, 71043920),
               "prefix_tuning": (13157632, 0, 81924, 50721680), "llama_adapter": (13157696, 0, 82080, 51097744),
               "lora": (13231360, 0, 229440, 57492880), "qlora": (3671824, 0, 229440, 57492880),
               "full": (13116672, 13116672, 26232984, 65953360)}  # weights, gradients, optimizer, activations


def _losses(steps=200, start=5.7, end=0.2, seed=0):
    rng = random.Random(seed)
    return [end + (start - end) * math.exp(-5 * i / steps) * (1 + 0.25 * rng.uniform(-1, 1)) for i in range(steps)]


def _bench_rows():
    rows = []
    for method, params, value, sd in CROWDED:
        by_category = dict(zip(("weights", "gradients", "optimizer", "activations"), BY_CATEGORY[method]), other=0)
        rows.append({"method": method, "metric": "accuracy", "value": value, "std": sd, "seeds": 3,
                     "trainable_params": params, "total_params": 3279104 + params,
                     "peak_memory_bytes": sum(by_category.values()), "memory_by_category": by_category,
                     "step_time_s": None if method == "few_shot" else 0.05 + 0.005 * len(method),
                     "latency_s": 0.004 + 0.0003 * len(method),
                     "latency_merged_s": 0.0041 if method in ("lora", "qlora") else None})
    return rows


def _report(scale=1.0):
    """A memory report's dict: activations pile up in forward and go in backward; the weights stay."""
    rng = random.Random(0)
    timeline = [int(scale * (40e6 + (1.9e5 * i if i <= 280 else 5.3e7 - 6e4 * (i - 280)) * (i < 1080)
                             + 1.2e6 * rng.random())) for i in range(1120)]
    return {"peak_bytes": max(timeline), "peak_index": 280, "timeline": timeline,
            "markers": [(0, "forward"), (280, "backward"), (930, "optimizer"), (1010, "zero_grad")],
            "by_category": {"weights": 13116672, "gradients": 0, "optimizer": 229440 * scale,
                            "activations": 57492880 * scale, "other": 4096}}


def _few_shot_rows(means, draws=5, seed=0):
    """Rows of ``few_shot_curve``: k = 0 has one draw, the others ``draws``, scores inside [0, 1]."""
    rng = random.Random(seed)
    rows = []
    for shots, mean in zip((0, 1, 2, 4, 8), means):
        values = [mean] if shots == 0 else [min(1.0, max(0.0, mean + rng.uniform(-0.2, 0.2))) for _ in range(draws)]
        rows.append({"shots": shots, "mean": sum(values) / len(values), "values": values,
                     "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0})
    return rows


def _singular_values(n=64, decay=0.15, seed=0):
    generator = torch.Generator().manual_seed(seed)
    values = torch.exp(-decay * torch.arange(n)) + 0.01 * torch.rand(n, generator=generator)
    return torch.sort(values, descending=True)[0]


def _pretraining():
    stages = ["world"] * 7 + ["induction"] * 7 + ["polarity"] * 8 + ["formats"] * 8 + ["reviews"] * 8
    rows = []
    for i, stage in enumerate(stages):
        row = {"step": 200 * (i + 1), "stage": stage, "heldout_loss": 0.97 + 0.7 * math.exp(-i / 3),
               "train_loss": 1 + 1.2 * math.exp(-i / 3) + (2 if stage == "induction" and i < 10 else 0),
               "icl_accuracy": {k: min(1.0, 0.5 + 0.02 * i + 0.05 * (k != "0")) for k in ("0", "4", "8")}}
        if i >= 8:
            row["repeat_loss"] = {"first": 4.74, "repeat": 0.27 + 4 * math.exp(-(i - 8))}
        rows.append(row)
    return rows



def _spectra(decays):
    return {f"layer {i} {kind}": _singular_values(seed=i, decay=decay) for (i, kind), decay in decays.items()}


GATES = {g: [_losses(seed=s + 3 * (g == "random")) for s in range(3)] for g in ("zero", "random")}
MATRICES = {(0, "q_proj"): 0.2, (3, "q_proj"): 0.35, (0, "down_proj"): 0.1, (3, "down_proj"): 0.25}
FIGURES = {
    "bytes_by_part": lambda: plots.plot_bytes_by_part(
        {"16-bit": {"embeddings": 56.6e6, "output head": 0, "linear layers": 212.3e6, "norms": 69e3, "buffers": 128},
         "NF4 + double quantization": {"embeddings": 56.6e6, "output head": 0, "linear layers": 53.1e6,
                                       "quantization constants": 1.7e6, "norms": 69e3, "buffers": 128}}),
    "seed_intervals": lambda: plots.plot_seed_intervals(
        {"r=1": [0.6, 0.62, 0.65], "r=8": [0.7, 0.71, 0.69], "r=64": [0.72, 0.66, 0.7]}, "accuracy",
        positions=[1, 8, 64], references={"zero-shot": 0.623, "8-shot": 0.58}, xlabel="LoRA rank r (log)"),
    "seed_intervals_two_seeds": lambda: plots.plot_seed_intervals(  # t with 1 df: an interval far past [0, 1]
        {"init vocab": [0.25, 0.875], "MLP": [0.375, 0.5]}, "accuracy", references={"zero-shot": 0.623},
        title="prefix tuning on smollm2-135m, sentiment3, 2 steps"),
    "seed_intervals_settings": lambda: plots.plot_seed_intervals(
        {"init vocab": [0.843, 0.81, 0.713], "init random": [0.40, 0.403, 0.39], "MLP": [0.693]}, "accuracy",
        references={"zero-shot": 0.623}, title="prefix tuning on smollm2-135m, sentiment3, 20 steps"),
    "memory_by_category": lambda: plots.plot_memory_by_category(
        {f"{method}\n{view}": _report(scale) for method, scale in (("full", 1.3), ("lora", 1.0), ("qlora", 0.8))
         for view in ("estimate", "simulate", "measure")},
        title="one training step of tiny: estimate / simulate / measure"),
    "memory_timeline": lambda: plots.plot_memory_timeline(_report(), title="full: one training step of tiny"),
    "simulated_vs_measured": lambda: plots.plot_simulated_vs_measured(
        [("full", 93.7e6, 93.7e6), ("lora", 54.8e6, 54.8e6), ("qlora", 45.2e6, 45.3e6),
         ("prompt_tuning", 83.7e6, 84e6)]),
    "peak_by_size": lambda: plots.plot_peak_by_size(
        ["Llama 1B", "Llama 8B", "Llama 70B", "Llama 405B"],
        {"full": [12.2e9, 80e9, 700e9, 4100e9], "lora": [4e9, 19e9, 150e9, 850e9], "qlora": [2.4e9, 9e9, 52e9, 250e9]},
        [19.8e9, 128e9, 1120e9, 6480e9], title="one training step, batch 1 x 512 tokens, bf16"),
    "losses": lambda: plots.plot_losses({m: _losses(seed=i) for i, m in enumerate(METHODS[1:])},
                                        title="sentiment3: training loss, 200 steps (seed 0)"),
    "losses_one": lambda: plots.plot_losses({"LoRA r=8": _losses(600)}, title="LoRA on sentiment"),
    "losses_few_steps": lambda: plots.plot_losses({"prompt tuning n=20": _losses(3)}, title="a smoke run: 3 steps"),
    "loss_bands": lambda: plots.plot_loss_bands({f"{gate} gate": runs for gate, runs in GATES.items()},
                                                title="LLaMA-Adapter: zero-init vs random gate"),
    "gate_runs": lambda: plots.plot_gate_runs(GATES),
    "shot_curves": lambda: plots.plot_shot_curves(
        {"random": _few_shot_rows([0.62, 0.7, 0.74, 0.8, 0.83]),
         "balanced": _few_shot_rows([0.62, 0.72, 0.76, 0.81, 0.85], seed=1),
         "random + calibrated": _few_shot_rows([0.5, 0.66, 0.75, 0.82, 0.86], seed=2)},
        "accuracy", "selection and calibration (x: one draw each)"),
    "shot_curves_std": lambda: plots.plot_shot_curves(  # A's: mean ± sd at 1.0 must not pass 1
        {"sentiment": _few_shot_rows([0.625, 0.877, 0.95, 1.0, 1.0]),
         "sentiment_blue_red": _few_shot_rows([0.815, 0.5, 0.8, 0.9, 0.89], seed=3)},
        "accuracy", "few-shot sentiment of the final base (mean ± std over draws)", spread="std"),
    "choice_order": lambda: plots.plot_choice_order(
        {str(k): [[0.62 - 0.03 * k + 0.02 * c + 0.01 * o for o in range(1 if k == 1 else 3)] for c in range(4)]
         for k in (1, 2, 3, 4)}, "accuracy"),
    "order_spread": lambda: plots.plot_order_spread(
        {k: [[0.6 + 0.03 * c + 0.01 * o for o in range(1 if k == 1 else 3)] for c in range(5)] for k in (1, 2, 4)},
        {1: {"choices": 0.12, "orders": 0.0}, 2: {"choices": 0.1, "orders": 0.03},
         4: {"choices": 0.08, "orders": 0.05}},
        [0.068, 0.066, 0.064], "accuracy"),
    "prompt_cost": lambda: plots.plot_prompt_cost(
        [{"shots": k, "tokens": 28 + 27 * k, "latency_s": 0.004 + 0.0008 * k} for k in (0, 1, 2, 4, 8)]),
    "forward_times": lambda: plots.plot_forward_times(
        {name: [base + 0.05 * math.sin(i) for i in range(20)]
         for name, base in (("base", 3.7), ("lora", 4.1), ("lora merged", 3.8))}, "20 interleaved rounds of 50 calls"),
    "weight_change_spectra": lambda: plots.plot_weight_change_spectra(
        _spectra(MATRICES), _spectra({matrix: 0.01 for matrix in MATRICES}), 8),
    "quant_levels": lambda: plots.plot_quant_levels(
        {"fp4": sorted(s * v for s in (-1, 1) for v in (0, 0.0052, 0.167, 0.25, 0.333, 0.5, 0.667, 1.0)),
         "nf4": [-1, -0.696, -0.525, -0.395, -0.284, -0.185, -0.091, 0, 0.08, 0.161, 0.246, 0.338, 0.441, 0.563,
                 0.723, 1]}),
    "quant_variants": lambda: plots.plot_quant_variants(
        [{"quant_type": q, "double_quant": dq, "bytes_per_weight": 0.5 + (0.0165 if dq else 0.0283),
          "closed_form": 0.5 + (0.0159 if dq else 0.0312), "weight_error": 0.09 if q == "fp4" else 0.075}
         for q in ("fp4", "nf4") for dq in (True, False)]),
    "pretraining": lambda: plots.plot_pretraining(_pretraining()),
    "metric_vs_params": lambda: plots.plot_metric_vs_params(_bench_rows()),
    "metric_vs_params_smoke": lambda: plots.plot_metric_vs_params(  # one at the ceiling, one with sd past 1
        [{**row, "value": value, "std": sd} for row, value, sd in zip(_bench_rows()[4:6], (1.0, 0.95), (0.0, 0.2))]),
    "bars_latency": lambda: plots.plot_bars(_bench_rows(), "latency_s", "seconds per example (batch 1)",
                                            "latency_merged_s"),
    "seed_scores": lambda: plots.plot_seed_scores(
        {m: [min(1.0, v + d) for d in (-sd, 0, sd)] for m, _, v, sd in CROWDED}, "accuracy",
        "sentiment3, 64 training examples: test accuracy per seed"),
    "seed_scores_two": lambda: plots.plot_seed_scores(
        {"LoRA": [0.65, 0.62, 0.67], "full fine-tuning": [0.79, 0.76, 0.73]}, "accuracy",
        "sentiment3, 64 training examples: mean ± sd of 3 seeds"),
    "spectra": lambda: plots.plot_spectra(
        {f"layers.{i}.self_attn.q_proj.weight": _singular_values(seed=i) for i in range(8)},
        _singular_values(decay=0.01), 8),
    "examples_curve": lambda: plots.plot_examples_curve(
        {m: {16: v - 0.1, 64: v, 256: min(1.0, v + 0.2)} for m, _, v, _ in CROWDED}, "accuracy"),
    **{f"bench_{stem}": (lambda stem=stem: plots.plot_bench(_bench_rows())[stem])
       for stem in ("metric_vs_params", "peak_memory", "step_time", "latency")},
}


@pytest.mark.unit
def test_every_public_plot_function_is_drawn_here():
    public = {name for name, f in vars(plots).items() if name.startswith("plot_") and inspect.isfunction(f)}
    source = inspect.getsource(inspect.getmodule(test_every_public_plot_function_is_drawn_here))
    assert {name for name in public if f"plots.{name}(" not in source} == set(), "add them to FIGURES"


@pytest.fixture(scope="module", params=sorted(FIGURES))
def figure(request):
    fig = FIGURES[request.param]()
    assert isinstance(fig, Figure)
    fig.canvas.draw()
    return fig


@pytest.mark.unit
def test_no_text_overlaps_another_or_leaves_the_figure(figure):
    assert plots.overlapping_texts(figure) == []


@pytest.mark.unit
def test_score_axes_stay_inside_zero_one(figure):
    for ax in figure.axes:
        if ax.get_ylabel().split(" ")[-1] in plots.SCORE_METRICS:
            low, high = ax.get_ylim()
            assert 0 <= low < high <= 1, f"{ax.get_ylabel()!r} runs from {low} to {high}"
            for collection in ax.collections:  # error bars
                for segment in getattr(collection, "get_segments", list)():
                    assert all(-1e-9 <= y <= 1 + 1e-9 for _, y in segment), f"an error bar leaves [0, 1]: {segment}"


def _data_points(ax) -> np.ndarray:
    """Display coordinates of the points drawn in ``ax``: line vertices, scatter points, bar corners and centres."""
    points = [line.get_transform().transform(line.get_xydata()) for line in ax.lines if len(line.get_xydata())]
    points += [c.get_offset_transform().transform(c.get_offsets()) for c in ax.collections if len(c.get_offsets())]
    for patch in ax.patches:
        box = patch.get_window_extent()
        points.append(np.array([[box.x0, box.y1], [box.x1, box.y1], [(box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2]]))
    points = [p[np.isfinite(p).all(axis=1)] for p in points]
    return np.concatenate(points) if points else np.zeros((0, 2))


@pytest.mark.unit
def test_legends_cover_no_data(figure):
    legends = list(figure.legends) + [ax.get_legend() for ax in figure.axes if ax.get_legend()]
    for legend in legends:
        box = legend.get_window_extent()
        for ax in figure.axes:
            x, y = _data_points(ax).T
            shown = (x >= ax.bbox.x0) & (x <= ax.bbox.x1) & (y >= ax.bbox.y0) & (y <= ax.bbox.y1)
            covered = shown & (x > box.x0) & (x < box.x1) & (y > box.y0) & (y < box.y1)
            assert not covered.any(), f"{[t.get_text() for t in legend.get_texts()]} covers {ax.get_title()!r}"


@pytest.mark.unit
def test_count_axes_have_integer_ticks(figure):
    for ax in figure.axes:
        for axis, label in ((ax.xaxis, ax.get_xlabel()), (ax.yaxis, ax.get_ylabel())):
            if label.startswith(COUNT_LABELS):
                low, high = sorted(axis.get_view_interval())
                ticks = [t for t in axis.get_majorticklocs() if low <= t <= high]
                assert ticks and all(float(t).is_integer() for t in ticks), f"{label!r} ticks {ticks}"


@pytest.mark.unit
def test_a_method_has_one_colour_in_every_figure():
    assert plots.method_color("LoRA r=8") == plots.method_color("lora merged") == plots.METHOD_COLORS["lora"]
    assert plots.method_color("QLoRA nf4 r=8") == plots.METHOD_COLORS["qlora"]
    assert plots.method_color("LLaMA-Adapter, 4 layers") == plots.METHOD_COLORS["llama_adapter"]
    assert plots.method_color("full\nestimate") == plots.method_color("full fine-tuning") == plots.METHOD_COLORS["full"]
    assert plots.method_color("zero gate") is None and plots.method_color("loraX") is None
    assert set(plots.METHOD_COLORS) == set(ALL_METHODS), "a colour for every method of the registry"
    labels = {text.get_text(): text.get_color() for text in plots.plot_metric_vs_params(_bench_rows()).axes[0].texts}
    assert labels == {m: plots.METHOD_COLORS[m] for m in METHODS}


@pytest.mark.unit
def test_checker_finds_overlaps_and_texts_off_the_figure():
    ax = plots.new_figure((4, 3)).add_subplot()
    ax.text(0.5, 0.5, "one label")
    ax.text(0.52, 0.5, "another label")
    ax.text(1.6, 0.5, "far right")
    found = plots.overlapping_texts(ax.figure)
    assert ("one label", "another label") in found and ("far right", "outside the figure") in found
    turned = plots.new_figure((4, 3)).add_subplot()  # 30° labels side by side: their turned boxes do not touch
    turned.set_xticks(range(6), [f"method_{i}_name" for i in range(6)], rotation=30, ha="right", rotation_mode="anchor")
    assert plots.overlapping_texts(turned.figure) == []


@pytest.mark.unit
def test_score_axis_keeps_scores_inside_zero_one_and_leaves_other_metrics():
    ax = plots.new_figure().add_subplot()
    ax.errorbar([0, 1], [0.95, 1.0], yerr=plots.clipped_errors([0.95, 1.0], [0.1, 0.2]))
    plots.score_axis(ax, "accuracy")
    assert 0 <= ax.get_ylim()[0] and ax.get_ylim()[1] <= 1
    assert plots.clipped_errors([0.95, 0.05], [0.1, 0.1]) == [[0.1, 0.05], [pytest.approx(0.05), 0.1]]
    bleu = plots.new_figure().add_subplot()
    bleu.plot([0, 1], [20, 35])
    plots.score_axis(bleu, "bleu")
    assert bleu.get_ylim()[1] > 1
