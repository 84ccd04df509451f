"""realmodel.watching_models: a train callback of seed_runs reads the model being trained (notebook 04's gate trace)."""
import pytest

from peftbook import realmodel
from peftbook.tasks import load_task


@pytest.mark.unit
def test_watching_models_hands_the_trained_model_to_callbacks():
    seen = []

    def gates(seed, step, result):
        model = models[-1]
        seen.append((seed, step, sum(name.endswith("adaption_gate") for name, _ in model.named_parameters())))

    with realmodel.watching_models() as models:
        realmodel.seed_runs("tiny", "llama_adapter", [0, 1], task=load_task("sentiment3"), steps=2, eval_examples=2,
                            config={"adapter_layers": 2}, callbacks=[gates], progress=False)
    assert seen == [(0, 1, 2), (0, 2, 2), (1, 1, 2), (1, 2, 2)]  # every step of every seed, both adapted layers
    assert models == [] and realmodel.load_model is not None  # nothing kept once the block ends
    assert realmodel.load_model.__name__ == "load_model"  # the original is back
