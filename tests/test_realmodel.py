"""peftbook.realmodel: the seeds-and-intervals machinery of the notebooks' real-model parts (run on the
tiny base here: the real model's runs are the notebooks' own)."""
from __future__ import annotations

import pytest

from peftbook import realmodel
from peftbook.errors import ConfigError
from peftbook.tasks import load_task, with_train_examples


@pytest.mark.unit
@pytest.mark.parametrize("value", ["tiny", 3, None, "/no/such/model"])
def test_bad_real_model_is_refused_naming_the_choices(value):
    with pytest.raises(ConfigError, match="REAL_MODEL"):
        realmodel.check_real_model("REAL_MODEL", value)


@pytest.mark.unit
def test_none_skips_with_one_line():
    realmodel.check_real_model("REAL_MODEL", "none")
    assert "skipped" in realmodel.available("none")


@pytest.mark.unit
@pytest.mark.parametrize("seeds", [[], [0, 0], [0.5], "0", [True]])
def test_bad_seeds_are_refused(seeds):
    with pytest.raises(ConfigError, match="REAL_SEEDS"):
        realmodel.check_seeds("REAL_SEEDS", seeds)


@pytest.mark.unit
def test_interval_text_says_when_there_is_no_interval():
    assert realmodel.interval_text([0.5]) == "0.500 (1 seed, no interval)"
    assert realmodel.interval_text([0.8, 0.9, 0.85]).endswith("(3 seeds)")


@pytest.mark.unit
def test_per_class_accuracy_counts_within_each_true_label():
    task = load_task("sentiment3")
    examples = task.examples("test")[:30]
    predictions = [e.label for e in examples]
    predictions[0] = next(label for label in task.labels if label != examples[0].label)
    scores = realmodel.per_class(task, examples, predictions)
    assert set(scores) == set(task.labels)
    wrong = examples[0].label
    assert scores[wrong] == pytest.approx(1 - 1 / sum(e.label == wrong for e in examples))


def test_seed_runs_and_baselines_pair_by_seed():
    task = with_train_examples(load_task("sentiment3"), 32)
    runs = realmodel.seed_runs("tiny", "lora", [0, 1], task=task, steps=2, eval_examples=6, progress=False)
    assert runs["seeds"] == [0, 1] and len(runs["test"]) == len(runs["validation"]) == len(runs["losses"]) == 2
    assert runs["n_test"] == 6 and runs["trainable"] > 0 and set(runs["per_class"][0]) == set(task.labels)
    base = realmodel.baselines("tiny", task, [0, 1], eval_examples=6, shots=2, progress=False)
    assert len(base["few_shot"]["values"]) == 2 and 0 <= base["zero_shot"]["value"] <= 1
    assert realmodel.versus(runs["test"], base["zero_shot"]["value"]).test == "paired t"
    assert realmodel.versus(runs["test"], [0.5, 0.6, 0.7]).test == "Welch t"


def test_seed_runs_hands_the_model_being_trained_to_callbacks():
    seen = []

    def gates(seed, step, result, model):
        seen.append((seed, step, sum(name.endswith("adaption_gate") for name, _ in model.named_parameters())))

    realmodel.seed_runs("tiny", "llama_adapter", [0, 1], task=load_task("sentiment3"), steps=2, eval_examples=2,
                        config={"adapter_layers": 2}, callbacks=[gates], progress=False)
    assert seen == [(0, 1, 2), (0, 2, 2), (1, 1, 2), (1, 2, 2)]  # every step of every seed, both adapted layers
