"""Few-shot prompting: shot selection, label scoring, calibration, generation, and the fewshot CLI."""
from __future__ import annotations

import json

import pytest
import torch

from peftbook.methods.few_shot import (FewShotConfig, build_prompt, evaluate_classification, evaluate_generation,
                                       fitting_prompt, label_logprobs, select_shots)
from peftbook.tasks import Example, builtin_task, load_task
from peftbook.zoo import TINY_MODEL_TYPES

pytestmark = pytest.mark.unit


def _train(n=20):
    return [Example(input=f"review {i}", output=lab, label=lab)
            for i, lab in enumerate(["positive"] * (n - 4) + ["negative"] * 4)]


def test_select_shots_random_and_balanced_are_deterministic():
    train = _train()
    a = select_shots(train, FewShotConfig(shots=4, seed=3))
    assert a == select_shots(train, FewShotConfig(shots=4, seed=3)) and len(a) == 4
    assert a != select_shots(train, FewShotConfig(shots=4, seed=4))
    balanced = select_shots(train, FewShotConfig(shots=6, selection="balanced", seed=0))
    assert [e.label for e in balanced].count("negative") == 3
    assert select_shots(train, FewShotConfig(shots=0)) == []


def test_build_prompt_uses_the_task_template():
    task = builtin_task("sentiment", {})
    shots = _train()[:2]
    query = Example(input="the tea was not bad", output="positive", label="positive")
    assert build_prompt(task, shots, query) == (
        "Review: review 0\nSentiment: positive\n\nReview: review 1\nSentiment: positive\n\n"
        "Review: the tea was not bad\nSentiment:")


@pytest.mark.parametrize("bad, match", [(dict(shots=-1), "shots=-1"), (dict(selection="best"), "allowed: random, balanced")])
def test_bad_config_values(bad, match):
    with pytest.raises(ValueError, match=match):
        FewShotConfig(**bad).validate()


def test_more_shots_than_training_examples():
    with pytest.raises(ValueError, match="more than the 20 training examples"):
        select_shots(_train(), FewShotConfig(shots=21))


def _tiny_lm():
    from transformers import AutoTokenizer

    from conftest import make_tiny_model
    from peftbook.models import TINY_DIR

    tokenizer = AutoTokenizer.from_pretrained(str(TINY_DIR))
    return make_tiny_model("llama", vocab_size=len(tokenizer)), tokenizer


def test_label_logprobs_sums_the_label_tokens_in_batches():
    model, tokenizer = _tiny_lm()
    prompts = ["Review: the soup was cold\nSentiment:", "Q: hot\nA:"]
    words = ["positive", "Madrid Rome"]  # a one-token and a multi-token label
    scores = label_logprobs(model, tokenizer, prompts, words, batch_size=3)
    for i, prompt in enumerate(prompts):
        for j, word in enumerate(words):
            p = tokenizer(prompt)["input_ids"]
            w = tokenizer(" " + word)["input_ids"]
            with torch.no_grad():
                logprobs = torch.log_softmax(model(torch.tensor([p + w])).logits[0], -1)
            expected = sum(logprobs[len(p) - 1 + t, w[t]] for t in range(len(w)))
            assert scores[i, j] == pytest.approx(expected.item(), abs=1e-4)
    single = label_logprobs(model, tokenizer, prompts, ["positive", "negative"], batch_size=1)  # one-token fast path
    assert single[:, 0] == pytest.approx(scores[:, 0], abs=1e-4)


def test_calibration_divides_by_the_content_free_probabilities():
    model, tokenizer = _tiny_lm()
    task = builtin_task("sentiment", {"train": _train()})
    examples = load_task("sentiment").examples("test")[:16]
    config = FewShotConfig(shots=2, calibrate=True)
    calibrated = evaluate_classification(model, tokenizer, task, examples, _train(), config)
    shots = select_shots(_train(), config)
    scores = label_logprobs(model, tokenizer, [build_prompt(task, shots, e) for e in examples], task.labels)
    bias = label_logprobs(model, tokenizer, [build_prompt(task, shots, Example(input="N/A", output=""))], task.labels)
    probs = torch.softmax(scores, -1) / torch.softmax(bias, -1)  # Zhao et al.: p / p_cf, then argmax
    assert calibrated["predictions"] == [task.labels[j] for j in probs.argmax(-1).tolist()]


def test_generation_prompts_keep_only_the_shots_that_fit_the_context():
    from transformers import AutoTokenizer

    from peftbook.models import TINY_DIR

    tokenizer = AutoTokenizer.from_pretrained(str(TINY_DIR))
    task = load_task("data2text")
    shots, query = task.examples("train")[:8], task.examples("test")[0]
    length = {k: len(tokenizer(build_prompt(task, shots[8 - k:], query))["input_ids"])
              for k in range(9)}
    assert fitting_prompt(task, shots, query, tokenizer, 10**6) == (build_prompt(task, shots, query), 8)
    prompt, k = fitting_prompt(task, shots, query, tokenizer, length[3])  # room for the last 3 exactly
    assert k == 3 and prompt == build_prompt(task, shots[5:], query)
    assert fitting_prompt(task, shots, query, tokenizer, length[0] - 1)[1] == 0  # nothing fits: zero-shot

    model, _ = _tiny_lm()
    model.config.max_position_embeddings = length[2] + 4  # room for about 2 shots and 4 new tokens
    config = FewShotConfig(shots=8, max_new_tokens=4)
    result = evaluate_generation(model, tokenizer, task, [query], task.examples("train"), config)
    drawn = select_shots(task.examples("train"), config)
    assert result["shots_used"] == fitting_prompt(task, drawn, query, tokenizer, length[2])[1] < 8
    assert len(result["predictions"]) == 1


def _cli(capsys, *args):
    from peftbook.__main__ import main

    code = main(["fewshot", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_fewshot_cli_on_a_small_draw(capsys):
    code, out, _ = _cli(capsys, "--model", "tiny", "--task", "sentiment", "--shots", "0", "2", "--draws", "2",
                        "--examples", "8", "--json")
    assert code == 0
    document = json.loads(out)
    assert document["task"] == "sentiment" and document["model"] == "tiny"
    assert [r["shots"] for r in document["results"]] == [0, 2]
    assert len(document["results"][0]["values"]) == 1 and len(document["results"][1]["values"]) == 2
    for row in document["results"]:
        assert 0 <= row["mean"] <= 1 and row["std"] >= 0


def test_fewshot_cli_generation_task(capsys):
    code, out, _ = _cli(capsys, "--task", "data2text", "--shots", "1", "--draws", "1", "--examples", "2", "--json")
    assert code == 0 and json.loads(out)["metric"] == "slot_accuracy"


@pytest.mark.parametrize("args, match", [
    (["--shots", "-1"], "shots=-1"),
    (["--draws", "0"], "--draws 0"),
    (["--shots", "5000"], "more than the 2000 training examples"),
    (["--task", "nope"], "known: sentiment, sentiment3, data2text"),
])
def test_fewshot_cli_bad_input(capsys, args, match):
    code, _, err = _cli(capsys, *args)
    assert code == 2 and match in err


def test_choice_and_order_separates_which_examples_from_their_order():
    from peftbook.methods.few_shot import choice_and_order, score_demonstrations

    model, tokenizer = _tiny_lm()
    task = builtin_task("sentiment", {"train": _train(), "test": load_task("sentiment").examples("test")[:6]})
    grid = choice_and_order(model, tokenizer, task, shots=(1, 3), choices=2, orders=3, seed=5, progress=False)
    assert [len(grid[1][c]) for c in range(2)] == [1, 1]  # one example has one order
    assert [len(grid[3][c]) for c in range(2)] == [3, 3]
    examples = task.examples("test")
    for choice in range(2):  # the first order of each choice is select_shots' own draw
        config = FewShotConfig(shots=3, seed=5 + choice)
        drawn = select_shots(_train(), config)
        assert grid[3][choice][0] == score_demonstrations(model, tokenizer, task, examples, drawn, config)["accuracy"]
    with pytest.raises(ValueError, match="choices=0"):
        choice_and_order(model, tokenizer, task, choices=0, progress=False)
    with pytest.raises(ValueError, match="shots=30 is more than the 20"):
        choice_and_order(model, tokenizer, task, shots=(1, 30), progress=False)


@pytest.mark.parametrize("model_type", TINY_MODEL_TYPES)
def test_shared_demonstrations_are_run_once_and_score_the_same(model_type):
    # Few-shot prompts share their demonstrations: next_token_logprobs runs them once and scores each
    # query on a copy of their KV cache. Same tokens, same positions: the same scores as whole prompts.
    from conftest import make_tiny_model

    from peftbook.evaluate import common_prefix_length, next_token_logprobs
    model = make_tiny_model(model_type).eval()
    demos = list(range(5, 40))
    prompts = [demos + [7 + i % 5] * (1 + i % 4) for i in range(11)]  # queries of different lengths
    calls, head = [], []
    model.register_forward_pre_hook(lambda module, args, kwargs: calls.append(kwargs["input_ids"].shape), with_kwargs=True)
    model.get_output_embeddings().register_forward_hook(lambda module, args, out: head.append(out.shape[1]))
    shared = next_token_logprobs(model, 0, prompts, [1, 2, 3], batch_size=4, share_prefix=True)
    assert calls[0] == (1, len(demos))
    # the vocabulary's logits only at the token where each row ends, whether the prefix was shared or not
    assert all(positions == 1 for positions in head), head
    # gemma2's sliding-window cache layers cannot be copied this way: it runs the whole prompts
    assert all(shape[1] <= 4 for shape in calls[1:]) == (model_type != "gemma2"), calls
    whole = next_token_logprobs(model, 0, prompts, [1, 2, 3], batch_size=4)
    torch.testing.assert_close(shared, whole, atol=1e-5, rtol=1e-5)
    assert common_prefix_length(prompts) == len(demos)
    assert common_prefix_length([[1, 2], [1, 2]]) == 1  # each prompt keeps its last token


CHAT_TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</{{ m['role'] }}>\n{% endfor %}"
                 "{% if add_generation_prompt %}<assistant>{% endif %}")


def test_chat_prompt_writes_the_demonstrations_as_turns():
    from peftbook.methods.few_shot import build_chat_prompt

    model, tokenizer = _tiny_lm()
    task = builtin_task("sentiment", {})
    query = Example(input="the tea was not bad", output="positive", label="positive")
    with pytest.raises(ValueError, match="needs a tokenizer with a chat template"):
        build_chat_prompt(tokenizer, task, _train()[:1], query)
    tokenizer.chat_template = CHAT_TEMPLATE
    assert build_chat_prompt(tokenizer, task, _train()[:1], query) == (
        "<user>Review: review 0\nSentiment:</user>\n<assistant>positive</assistant>\n"
        "<user>Review: the tea was not bad\nSentiment:</user>\n<assistant>")


def test_chat_scores_the_label_as_the_assistants_first_word():
    """chat=True scores "positive" right after the assistant's turn starts (no leading space): the scores
    are those of label_logprobs on the chat prompt with label_prefix=""."""
    from peftbook.methods.few_shot import build_chat_prompt, score_demonstrations

    model, tokenizer = _tiny_lm()
    tokenizer.chat_template = CHAT_TEMPLATE
    task = load_task("sentiment")
    examples, shots = task.examples("test")[:6], task.examples("train")[:2]
    result = score_demonstrations(model, tokenizer, task, examples, shots, FewShotConfig(shots=2, chat=True))
    scores = label_logprobs(model, tokenizer, [build_chat_prompt(tokenizer, task, shots, e) for e in examples],
                            task.labels, label_prefix="")
    assert result["predictions"] == [task.labels[j] for j in scores.argmax(-1).tolist()]
    spaced = label_logprobs(model, tokenizer, [build_chat_prompt(tokenizer, task, shots, e) for e in examples],
                            task.labels)
    assert not torch.allclose(scores, spaced)  # the prefix matters: it is a different token


def test_chat_is_refused_for_generation_tasks():
    model, tokenizer = _tiny_lm()
    task = load_task("data2text")
    with pytest.raises(ValueError, match="chat=True is not supported for generation tasks"):
        evaluate_generation(model, tokenizer, task, task.examples("test")[:1], task.examples("train"),
                            FewShotConfig(shots=1, chat=True))
    with pytest.raises(ValueError, match="chat=1 is not allowed"):
        FewShotConfig(chat=1).validate()


def test_a_chat_task_trains_and_scores_the_assistants_answer():
    """with_chat_template: the task's prompt as one user turn (what few-shot's chat=True writes at 0 shots),
    the label as the assistant's first word; only the answer is learned, and evaluate scores it."""
    from peftbook.evaluate import evaluate
    from peftbook.methods.few_shot import build_chat_prompt
    from peftbook.tasks import with_chat_template, with_train_examples
    from peftbook.batching import IGNORE_INDEX
    from peftbook.train import encode_example

    model, tokenizer = _tiny_lm()
    task = load_task("sentiment")
    with pytest.raises(ValueError, match="needs a tokenizer with a chat template"):
        with_chat_template(task, tokenizer)
    tokenizer.chat_template = CHAT_TEMPLATE
    chat = with_chat_template(task, tokenizer)
    example = task.examples("train")[0]
    assert chat.prompt(example) == f"<user>{task.prompt(example).strip()}</user>\n<assistant>"
    assert chat.prompt(example) == build_chat_prompt(tokenizer, task, [], example)
    assert chat.target(example) == example.output and task.target(example) == " " + example.output
    ids, labels = encode_example(tokenizer, chat, example, 512)
    assert tokenizer.decode([i for i, label in zip(ids, labels) if label != IGNORE_INDEX]).strip() == example.output
    assert with_train_examples(chat, 5).prompt(example) == chat.prompt(example)  # still written as a chat
    with pytest.raises(ValueError, match="already written with a chat template"):
        with_chat_template(chat, tokenizer)
    assert evaluate(model, tokenizer, chat, "validation", max_examples=4)["n_examples"] == 4
