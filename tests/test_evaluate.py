"""Evaluation: padding, label log-likelihood classification, left-padded greedy generation, metrics, latency."""
from __future__ import annotations

import pytest
import torch

from peftbook.batching import encode_prompt, encode_target, pad_batch
from peftbook.metrics import text_metrics

from conftest import save_tiny_model
from test_train import word_task, write_word_task


@pytest.mark.unit
def test_pad_batch_right_and_left():
    right = pad_batch([[5, 6, 7], [8]], pad_token_id=0)
    assert right["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert right["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert set(right) == {"input_ids", "attention_mask"}
    left = pad_batch([[5, 6, 7], [8]], pad_token_id=0, side="left")
    assert left["input_ids"].tolist() == [[5, 6, 7], [0, 0, 8]]
    assert left["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    assert all(t.dtype == torch.long for t in (*right.values(), *left.values()))


@pytest.mark.unit
@pytest.mark.parametrize("side, expected", [("right", [[-100, 6, 7], [8, -100, -100]]),
                                             ("left", [[-100, 6, 7], [-100, -100, 8]])])
def test_pad_batch_pads_labels_with_minus_100_on_the_same_side(side, expected):
    batch = pad_batch([[5, 6, 7], [8]], pad_token_id=2, side=side, labels=[[-100, 6, 7], [8]])
    assert batch["labels"].tolist() == expected and batch["labels"].dtype == torch.long
    assert (batch["attention_mask"] == 0).equal(batch["input_ids"] == 2)  # here the pad id occurs only as padding


@pytest.mark.unit
def test_pad_batch_bad_input():
    with pytest.raises(ValueError, match="side='middle' is not allowed; allowed: right, left"):
        pad_batch([[1]], 0, side="middle")
    with pytest.raises(ValueError, match="do not match"):
        pad_batch([[1, 2]], 0, labels=[[1]])
    with pytest.raises(ValueError, match="at least one sequence"):
        pad_batch([], 0)


@pytest.fixture
def model_and_tokenizer(tmp_path):
    from peftbook import load_model

    save_tiny_model(tmp_path / "model", "llama")
    return load_model(str(tmp_path / "model"), device="cpu", dtype="fp32")


def unbatched_logprob(model, tokenizer, prompt: str, target: str) -> float:
    """log p(target | prompt) computed the plain way: one sequence, no padding."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    target_ids = tokenizer(target, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + target_ids])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(ids).logits[0, -ids.shape[1]:], -1)  # prompt tuning adds positions
    return sum(logprobs[len(prompt_ids) - 1 + i, t].item() for i, t in enumerate(target_ids))


@pytest.mark.unit
@pytest.mark.parametrize("multi_token", [False, True], ids=["one-token-labels", "multi-token-labels"])
def test_classification_picks_the_most_likely_label_and_scores_accuracy(tmp_path, model_and_tokenizer, multi_token):
    import json

    from peftbook.evaluate import evaluate

    model, tokenizer = model_and_tokenizer
    task_dir = write_word_task(tmp_path / "task", "classification")
    if multi_token:  # label words of 3 and 1 tokens: every (prompt, label) pair is scored
        for path in task_dir.glob("*.jsonl"):
            rows = [json.loads(line) for line in path.read_text().splitlines()]
            for row in rows:
                row["label"] = row["output"] = "w5 w7 w9" if row["label"] == "w5" else "w6"
            path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    from peftbook.tasks import load_task
    task = load_task(str(task_dir))
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
def test_label_scores_with_prompt_tuning_read_the_real_positions(tmp_path, model_and_tokenizer):
    """Prompt tuning returns logits for its virtual tokens too: the scores must skip them."""
    from peftbook import apply, make_config
    from peftbook.evaluate import continuation_logprobs, next_token_logprobs

    model, tokenizer = model_and_tokenizer
    torch.manual_seed(0)
    apply(model, make_config("prompt_tuning", num_virtual_tokens=5, init="vocab"))
    task = word_task(tmp_path / "task", "classification")
    prompts = [task.prompt(e) for e in task.examples("validation")[:6]]
    expected = torch.tensor([[unbatched_logprob(model, tokenizer, p, " " + label) for label in task.labels]
                             for p in prompts])
    encoded = [encode_prompt(tokenizer, p) for p in prompts]
    label_ids = [encode_target(tokenizer, " " + label)[0] for label in task.labels]
    one_pass = next_token_logprobs(model, tokenizer.pad_token_id, encoded, label_ids, batch_size=4)
    assert torch.allclose(one_pass, expected, atol=1e-4)
    pairs = continuation_logprobs(model, tokenizer.pad_token_id, [e for e in encoded for _ in label_ids],
                                  [[t] for _ in encoded for t in label_ids], batch_size=5)
    assert torch.allclose(torch.tensor(pairs).view(len(prompts), -1), expected, atol=1e-4)


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
    from peftbook.evaluate import evaluate

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
