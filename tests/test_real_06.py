"""Notebook 06's real-model figures, checked as tests/test_plots.py checks every figure (that file's
FIGURES should list them too: see the branch's report)."""
from __future__ import annotations

import pytest
from matplotlib.figure import Figure

from peftbook import plots

FIGURES = {
    "interval_scores": lambda: plots.plot_interval_scores(
        {"8-shot": [0.52, 0.58, 0.55], "LoRA, 16-bit base": [0.81, 0.86, 0.84], "QLoRA, NF4 base": [0.80, 0.88, 0.83]},
        "accuracy", references={"untrained (zero-shot)": 0.623}, title="smollm2-135m on sentiment3: test accuracy"),
    "interval_scores_one_seed": lambda: plots.plot_interval_scores({"LoRA": [0.99], "QLoRA": [1.0]}, "accuracy"),
    "bytes_by_part": lambda: plots.plot_bytes_by_part(
        {"16-bit": {"embeddings": 56.6e6, "output head": 0, "linear layers": 212.3e6, "norms": 69e3, "buffers": 128},
         "NF4 + double quantization": {"embeddings": 56.6e6, "output head": 0, "linear layers": 53.1e6,
                                       "quantization constants": 1.7e6, "norms": 69e3, "buffers": 128}}),
}


@pytest.mark.unit
@pytest.mark.parametrize("name", sorted(FIGURES))
def test_real_figures_read_cleanly(name):
    fig = FIGURES[name]()
    assert isinstance(fig, Figure)
    fig.canvas.draw()
    assert plots.overlapping_texts(fig) == []
    for ax in fig.axes:
        if ax.get_ylabel().split(" ")[-1] in plots.SCORE_METRICS:
            low, high = ax.get_ylim()
            assert 0 <= low < high <= 1
