"""Notebook 05's real-model figure: seeds, means and 95% intervals, on a log rank axis or by setting."""
import pytest
from matplotlib.figure import Figure

from peftbook import plots


@pytest.mark.unit
@pytest.mark.parametrize("positions, references, seeds", [
    ([1, 8, 64], {"untrained (zero-shot)": 0.623, "8-shot, mean of seeds": 0.55, "never says moderate (ceiling)": 0.667}, 3),
    (None, {"untrained (zero-shot)": 0.623}, 3),
    (None, None, 1),  # one seed: dots and means, no interval bars
], ids=["ranks", "settings", "one-seed"])
def test_seed_intervals_draw_without_overlaps(positions, references, seeds):
    settings = {label: [0.6 + 0.02 * i + 0.01 * s for s in range(seeds)]
                for i, label in enumerate(["r=1", "r=8", "r=64"] if positions else ["LoRA r=8", "full fine-tuning"])}
    fig = plots.plot_seed_intervals(settings, "accuracy", positions=positions, references=references,
                                    xlabel="LoRA rank r (log)" if positions else None, title="LoRA on smollm2-135m")
    assert isinstance(fig, Figure)
    fig.canvas.draw()
    assert plots.overlapping_texts(fig) == []
