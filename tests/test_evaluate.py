"""Evaluation: label log-likelihood classification, left-padded greedy generation, metrics, latency."""
from __future__ import annotations

import pytest
import torch

from conftest import save_tiny_model
from test_train import word_task


@pytest.fixture
def model_and_tokenizer(tmp_path):
    from peftbook import load_model

    save_tiny_model(tmp_path / "model", "llama")
    return load_model(str(tmp_path / "model"), device="cpu")


def unbatched_logprob(model, tokenizer, prompt: str, target: str) -> float:
    """log p(target | prompt) computed the plain way: one sequence, no padding."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    target_ids = tokenizer(target, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + target_ids])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(ids).logits[0], -1)
    return sum(logprobs[len(prompt_ids) - 1 + i, t].item() for i, t in enumerate(target_ids))


@pytest.mark.unit
def test_classification_picks_the_most_likely_label_and_scores_accuracy(tmp_path, model_and_tokenizer):
    from peftbook.evaluate import evaluate

    model, tokenizer = model_and_tokenizer
    task = word_task(tmp_path / "task", "classification")
    examples = task.examples("validation")[:10]
    expected = []
    for example in examples:
        scores = {label: unbatched_logprob(model, tokenizer, task.prompt(example), " " + label) for label in task.labels}
        expected.append(max(scores, key=scores.get))
    result = evaluate(model, tokenizer, task, "validation", max_examples=10, batch_size=3, latency_examples=2)
    assert result["predictions"] == expected
    assert result["metric"] == "accuracy" and result["n_examples"] == 10
    accuracy = sum(p == e.label for p, e in zip(expected, examples)) / 10
    assert result["value"] == pytest.approx(accuracy) and result["accuracy"] == pytest.approx(accuracy)
    assert result["latency_s"] > 0 and result["seconds_per_example"] > 0


@pytest.mark.unit
def test_batched_left_padded_generation_equals_one_by_one(tmp_path, model_and_tokenizer):
    from peftbook.evaluate import generate

    model, tokenizer = model_and_tokenizer
    task = word_task(tmp_path / "task", "generation")
    prompts = [task.prompt(e) for e in task.examples("validation")[:5]]
    prompts[1] = prompts[1] + " w40 w41 w42"  # different lengths, so padding matters
    batched = generate(model, tokenizer, prompts, max_new_tokens=6, batch_size=5)
    single = [generate(model, tokenizer, [p], max_new_tokens=6, batch_size=1)[0] for p in prompts]
    assert batched == single
    assert any(batched)


@pytest.mark.unit
def test_generation_reports_bleu_rouge_and_task_metric(tmp_path, model_and_tokenizer):
    from peftbook.evaluate import evaluate, text_metrics

    model, tokenizer = model_and_tokenizer
    task = word_task(tmp_path / "task", "generation")
    result = evaluate(model, tokenizer, task, "test", max_examples=4, max_new_tokens=4, latency_examples=1)
    assert {"bleu", "rougeL", task.metric, "latency_s"} <= set(result)
    assert len(result["predictions"]) == 4
    perfect = text_metrics(["w5 w6 w7 w8", "w9 w10 w11 w12"], ["w5 w6 w7 w8", "w9 w10 w11 w12"])
    assert perfect["bleu"] == pytest.approx(100.0) and perfect["rougeL"] == pytest.approx(1.0)
    wrong = text_metrics(["w20 w21 w22 w23"], ["w5 w6 w7 w8"])
    assert wrong["bleu"] < 1 and wrong["rougeL"] == 0


@pytest.mark.unit
def test_bad_split_and_max_examples_raise(tmp_path, model_and_tokenizer):
    from peftbook.evaluate import evaluate

    model, tokenizer = model_and_tokenizer
    task = word_task(tmp_path / "task")
    with pytest.raises(ValueError, match="dev.*allowed"):
        evaluate(model, tokenizer, task, "dev")
    with pytest.raises(ValueError, match="max_examples"):
        evaluate(model, tokenizer, task, "test", max_examples=0)
