"""Few-shot in-context learning: nothing is trained, k solved examples go before the query.

Brown et al. (2020) showed that a language model can do a task from a few demonstrations in its
prompt. Zhao et al. (2021), "Calibrate Before Use" (arXiv 2102.09690), showed that the answer then
depends a lot on which examples are chosen and in which order, and that much of it is a bias
towards some label words, which **contextual calibration** aims to remove: feed the same prompt with a
content-free input ("N/A"), read the label probabilities it gets, and divide by them. Whether that
helps depends on the model and the prompt (notebook 01 measures it per k).

Here:

* ``build_prompt``: k examples (``random``, or ``balanced``: the same number per class) in shuffled
  order, each written with the task's template, then the query; examples joined by a blank line.
  One draw of shots is shared by every query, as in Zhao et al.
* classification: score each label word by the sum of the log-probabilities of its tokens after
  the prompt (batched), pick the best; with ``calibrate=True`` divide the label probabilities
  (renormalised over the labels) by those of the content-free prompt.
* generation: greedy decoding until ``</s>`` or a newline.
* ``chat=True`` (instruct models with a chat template): each demonstration becomes a user turn (its
  prompt) and an assistant turn (its answer), the query a last user turn; the label words are scored
  as the assistant's first words (no leading space). ``benchmarks/smollm2_few_shot.py`` measures it.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import ClassVar

import torch

from peftbook.batching import encode_prompt, encode_target
from peftbook.evaluate import continuation_logprobs, generate, next_token_logprobs
from peftbook.progress import progress_bar

SELECTIONS = ("random", "balanced")
CONTENT_FREE = "N/A"


@dataclass
class FewShotConfig:
    method: ClassVar[str] = "few_shot"
    shots: int = 4                 # examples in the prompt (0 = zero-shot)
    selection: str = "random"      # "random" | "balanced" (class-balanced, classification only)
    calibrate: bool = False        # contextual calibration with the content-free input "N/A"
    seed: int = 0                  # which examples are drawn, and their order
    batch_size: int = 16
    max_new_tokens: int = 48       # generation tasks
    separator: str = "\n\n"
    chat: bool = False             # demonstrations as chat turns, through the tokenizer's chat template

    def validate(self) -> None:
        """Field checks; ``select_shots`` checks ``shots`` against the training set it draws from."""
        if not isinstance(self.chat, bool):
            raise ValueError(f"chat={self.chat!r} is not allowed; use True or False")
        if not isinstance(self.shots, int) or self.shots < 0:
            raise ValueError(f"shots={self.shots!r} is not allowed; use an integer >= 0")
        if self.selection not in SELECTIONS:
            raise ValueError(f"selection={self.selection!r} is not allowed; allowed: {', '.join(SELECTIONS)}")


def select_shots(train: list, config: FewShotConfig) -> list:
    """Draw ``config.shots`` training examples (random or class-balanced) in shuffled order."""
    config.validate()
    if config.shots > len(train):
        raise ValueError(f"shots={config.shots} is more than the {len(train)} training examples to draw from; "
                         f"allowed: 0 to {len(train)}")
    rng = random.Random(config.seed)
    if config.selection == "balanced" and config.shots:
        by_label: dict[str, list] = {}
        for example in train:
            by_label.setdefault(example.label or example.output, []).append(example)
        labels = sorted(by_label)
        chosen = []
        for i in range(config.shots):  # round-robin over the classes, then shuffle the order
            pool = by_label[labels[i % len(labels)]]
            chosen.append(pool[rng.randrange(len(pool))])
    else:
        chosen = rng.sample(train, config.shots)
    rng.shuffle(chosen)
    return chosen


def build_prompt(task, shots: list, example, separator: str = "\n\n") -> str:
    """The k demonstrations (prompt + target each), then the query's prompt."""
    return "".join(task.prompt(s) + task.target(s) + separator for s in shots) + task.prompt(example)


def build_chat_prompt(tokenizer, task, shots: list, example) -> str:
    """The demonstrations as user/assistant turns and the query as the last user turn, written by the
    tokenizer's chat template up to where the assistant's answer starts."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("chat=True needs a tokenizer with a chat template (an instruct model's); this one has none")
    turns = []
    for shot in shots:
        turns += [{"role": "user", "content": task.prompt(shot).strip()},
                  {"role": "assistant", "content": task.target(shot).strip()}]
    turns.append({"role": "user", "content": task.prompt(example).strip()})
    return tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)


def task_with_demonstrations(task, shots: list, separator: str = "\n\n"):
    """A copy of ``task`` whose prompt starts with the demonstrations ``shots`` (as ``build_prompt``
    writes them), so ``peftbook.evaluate`` scores and times k-shot prompting like any other method."""
    template = "".join(task.prompt(s) + task.target(s) + separator for s in shots)
    template = template.replace("{", "{{").replace("}", "}}") + task.prompt_template
    return replace(task, prompt_template=template)


def context_length(model) -> int:
    """Positions the model was built for (``max_position_embeddings``; unbounded when it has none)."""
    return getattr(model.config, "max_position_embeddings", None) or 10**9


@torch.no_grad()
def label_logprobs(model, tokenizer, prompts: list[str], label_words: list[str], batch_size: int = 16,
                   label_prefix: str = " ") -> torch.Tensor:
    """``(len(prompts), len(label_words))``: sum of log-probs of each label's tokens after its prompt.

    The scoring itself is ``peftbook.evaluate``'s (the one every trained method is scored with); here
    the prompts are cut from the left to fit the model's context, keeping the query and its label.
    """
    limit = context_length(model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    label_ids = [encode_target(tokenizer, label_prefix + w.strip()) for w in label_words]
    room = limit - max(map(len, label_ids))
    prompt_ids = [encode_prompt(tokenizer, p)[-room:] for p in prompts]
    if all(len(ids) == 1 for ids in label_ids):  # one token per label: one pass, read the last position
        return next_token_logprobs(model, pad, prompt_ids, [ids[0] for ids in label_ids], batch_size, share_prefix=True)
    pairs = [(ids, label) for ids in prompt_ids for label in label_ids]
    scores = continuation_logprobs(model, pad, [p for p, _ in pairs], [c for _, c in pairs], batch_size)
    return torch.tensor(scores).view(len(prompts), len(label_words))


def evaluate_classification(model, tokenizer, task, examples: list, train: list, config: FewShotConfig) -> dict:
    """Accuracy (and predictions) of one draw of shots on ``examples``."""
    return score_demonstrations(model, tokenizer, task, examples, select_shots(train, config), config)


def score_demonstrations(model, tokenizer, task, examples: list, shots: list, config: FewShotConfig) -> dict:
    """Accuracy (and predictions) on ``examples`` of a classification prompt with these ``shots``, in this order."""
    def prompt(example):
        if config.chat:
            return build_chat_prompt(tokenizer, task, shots, example)
        return build_prompt(task, shots, example, config.separator)

    prefix = "" if config.chat else " "  # an assistant's answer starts a turn; a plain one follows "Label:"
    scores = label_logprobs(model, tokenizer, [prompt(e) for e in examples], task.labels, config.batch_size, prefix)
    if config.calibrate:
        content_free = type(examples[0])(input=CONTENT_FREE, output="")
        bias = label_logprobs(model, tokenizer, [prompt(content_free)], task.labels, label_prefix=prefix)[0]
        # p_cal ∝ p / p_cf, with both renormalised over the label words (Zhao et al. eq. 1, diagonal W)
        scores = torch.log_softmax(scores, dim=-1) - torch.log_softmax(bias, dim=-1)
    predictions = [task.labels[j] for j in scores.argmax(dim=-1).tolist()]
    return {**task.score(predictions, examples), "predictions": predictions}


def choice_and_order(model, tokenizer, task, shots=(1, 2, 3, 4), choices: int = 4, orders: int = 3, seed: int = 0,
                     num_examples: int | None = 200, split: str = "test", progress: bool = True) -> dict:
    """Which demonstrations, or their order? ``{k: [[score of each order] for each choice]}``.

    For each k, ``choices`` draws of k training examples (``select_shots`` with seeds ``seed``,
    ``seed + 1``, ...); each draw is scored in its drawn order and ``orders - 1`` more shuffles of it
    (one order for k = 1), on the first ``num_examples`` of ``split``. Classification tasks only.
    """
    if task.kind != "classification":
        raise ValueError(f"choice_and_order scores label words; task {task.name!r} is a {task.kind} task")
    if choices < 1 or orders < 1:
        raise ValueError(f"choices={choices!r} and orders={orders!r} are not allowed; both must be at least 1")
    train, examples = task.examples("train"), task.examples(split)[:num_examples]
    for k in shots:  # every k is checked before the first forward pass
        select_shots(train, FewShotConfig(shots=k))
    bar = progress_bar(total=sum(choices * (orders if k > 1 else 1) for k in shots), desc="choice and order",
               disable=not progress)
    grid = {}
    for k in shots:
        grid[k] = []
        for choice in range(choices):
            config = FewShotConfig(shots=k, seed=seed + choice)
            drawn, row = select_shots(train, config), []
            for order in range(orders if k > 1 else 1):
                shuffled = list(drawn)
                if order:
                    random.Random(1000 * (seed + choice) + order).shuffle(shuffled)
                row.append(score_demonstrations(model, tokenizer, task, examples, shuffled, config)[task.metric])
                bar.update()
            grid[k].append(row)
    bar.close()
    return grid


def generate_greedy(model, tokenizer, prompts: list[str], max_new_tokens: int = 48, batch_size: int = 16,
                    stop: str = "\n") -> list[str]:
    """Greedy continuations (``peftbook.evaluate.generate``: left padding, KV cache), cut at ``stop``."""
    outputs = generate(model, tokenizer, prompts, max_new_tokens, batch_size)
    return [text.split(stop)[0].strip() if stop else text for text in outputs]


def fitting_prompt(task, shots: list, example, tokenizer, budget: int, separator: str = "\n\n") -> tuple[str, int]:
    """The prompt with as many of ``shots`` as fit in ``budget`` tokens (dropping the first ones); (prompt, k)."""
    for k in range(len(shots), 0, -1):
        prompt = build_prompt(task, shots[len(shots) - k:], example, separator)
        if len(tokenizer(prompt, verbose=False)["input_ids"]) <= budget:  # as encode_prompt counts; no too-long warning
            return prompt, k
    return build_prompt(task, [], example, separator), 0


def evaluate_generation(model, tokenizer, task, examples: list, train: list, config: FewShotConfig) -> dict:
    """Slot accuracy, BLEU, ROUGE-L of one draw of shots, plus ``shots_used``: the mean k that fit.

    A prompt and its answer must fit in the model's context (``max_position_embeddings``): past it,
    positions the model never saw make generation degrade. When k demonstrations are too long, the
    first ones are dropped for that query (the tiny base's 512 tokens hold ~5 data2text examples).
    """
    if config.chat:
        raise ValueError(f"chat=True is not supported for generation tasks ({task.name}); use it on a "
                         "classification task, or chat=False")
    shots = select_shots(train, config)
    budget = context_length(model) - config.max_new_tokens
    fitted = [fitting_prompt(task, shots, e, tokenizer, budget, config.separator) for e in examples]
    prompts = [prompt for prompt, _ in fitted]
    predictions = generate_greedy(model, tokenizer, prompts, config.max_new_tokens, config.batch_size)
    shots_used = sum(k for _, k in fitted) / max(1, len(fitted))
    return {**task.score(predictions, examples), "predictions": predictions, "shots_used": shots_used}


def few_shot_curve(model, tokenizer, task, shots: list[int], draws: int = 5, seed: int = 0,
                   num_examples: int | None = 200, split: str = "test", progress: bool = True,
                   **config) -> list[dict]:
    """Mean, std and values of the task's metric per number of shots over ``draws`` draws.

    Zero-shot has one draw only (nothing to draw). Queries: the first ``num_examples`` of ``split``;
    shots: from ``train``.
    """
    if draws < 1:
        raise ValueError(f"draws={draws} is not allowed; use an integer >= 1")
    train, examples = task.examples("train"), task.examples(split)
    examples = examples[:num_examples] if num_examples else examples
    for k in shots:  # every k is checked before the first forward pass
        select_shots(train, FewShotConfig(shots=k, **config))
    evaluate = evaluate_classification if task.kind == "classification" else evaluate_generation
    bar = progress_bar(total=sum(draws if k else 1 for k in shots), desc=f"few-shot {task.name}", disable=not progress)
    results = []
    for k in shots:
        draws_k = []
        for d in range(draws if k else 1):
            config_k = FewShotConfig(shots=k, seed=seed + d, **config)
            draws_k.append(evaluate(model, tokenizer, task, examples, train, config_k))
            bar.update()
        values = [scores[task.metric] for scores in draws_k]
        mean = sum(values) / len(values)
        std = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
        row = {"shots": k, "mean": mean, "std": std, "values": values}
        if task.kind != "classification":  # long demonstrations may not all fit the context
            row["shots_used"] = sum(scores.get("shots_used", k) for scores in draws_k) / len(draws_k)
        for key in ("bleu", "rougeL"):  # a generation task's text metrics, averaged over the draws
            if all(key in scores for scores in draws_k):
                row[key] = sum(scores[key] for scores in draws_k) / len(draws_k)
        results.append(row)
    bar.close()
    return results
