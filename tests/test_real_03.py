"""Notebook 03's real-model figure: means with 95% intervals over seeds, per-seed dots, reference lines."""
from __future__ import annotations

import pytest

from peftbook import plots


@pytest.mark.unit
@pytest.mark.parametrize("seeds", [1, 3])
def test_real_settings_figure_reads_cleanly(seeds):
    scores = {"init vocab": [0.843, 0.81, 0.713][:seeds], "init random": [0.40, 0.403, 0.39][:seeds],
              "MLP": [0.693, 0.66, 0.99][:seeds]}
    fig = plots.plot_real_settings(scores, {"zero-shot": 0.623, "8-shot (mean)": 0.55}, metric="accuracy",
                                   title="prefix tuning on smollm2-135m, sentiment3, 20 steps")
    fig.canvas.draw()
    assert plots.overlapping_texts(fig) == []
    low, high = fig.axes[0].get_ylim()
    assert 0.0 <= low and high <= 1.0  # an interval of three seeds may pass 1; the axis stays a score's
