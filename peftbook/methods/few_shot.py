"""Few-shot in-context learning: nothing is trained, k solved examples go before the query.

Brown et al. (2020) showed that a language model can do a task from a few demonstrations in its
prompt. Zhao et al. (2021), "Calibrate Before Use" (arXiv 2102.09690), showed that the answer then
depends a lot on which examples are chosen and in which order, and that much of it is a bias
towards some label words, which **contextual calibration** removes: feed the same prompt with a
content-free input ("N/A"), read the label probabilities it gets, and divide by them.

Here:

* ``build_prompt``: k examples (``random``, or ``balanced``: the same number per class) in shuffled
  order, each written with the task's template, then the query; examples joined by a blank line.
  One draw of shots is shared by every query, as in Zhao et al.
* classification: score each label word by the sum of the log-probabilities of its tokens after
  the prompt (batched), pick the best; with ``calibrate=True`` divide the label probabilities
  (renormalised over the labels) by those of the content-free prompt.
* generation: greedy decoding until ``</s>`` or a newline.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch

SELECTIONS = ("random", "balanced")
CONTENT_FREE = "N/A"


@dataclass
class FewShotConfig:
    shots: int = 4                 # examples in the prompt (0 = zero-shot)
    selection: str = "random"      # "random" | "balanced" (class-balanced, classification only)
    calibrate: bool = False        # contextual calibration with the content-free input "N/A"
    seed: int = 0                  # which examples are drawn, and their order
    batch_size: int = 16
    max_new_tokens: int = 48       # generation tasks
    separator: str = "\n\n"

    def validate(self, num_train: int | None = None) -> None:
        if not isinstance(self.shots, int) or self.shots < 0:
            raise ValueError(f"shots={self.shots!r} is not allowed; use an integer >= 0")
        if self.selection not in SELECTIONS:
            raise ValueError(f"selection={self.selection!r} is not allowed; allowed: {', '.join(SELECTIONS)}")
        if num_train is not None and self.shots > num_train:
            raise ValueError(f"shots={self.shots} is more than the {num_train} training examples to draw from")


def select_shots(train: list, config: FewShotConfig) -> list:
    """Draw ``config.shots`` training examples (random or class-balanced) in shuffled order."""
    config.validate(len(train))
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


@torch.no_grad()
def label_logprobs(model, tokenizer, prompts: list[str], label_words: list[str], batch_size: int = 16) -> torch.Tensor:
    """``(len(prompts), len(label_words))``: sum of log-probs of each label's tokens after its prompt."""
    limit = getattr(model.config, "max_position_embeddings", 10**9)
    label_ids = [tokenizer(" " + w.strip(), add_special_tokens=False)["input_ids"] for w in label_words]
    prompt_ids = [ids[-(limit - max(map(len, label_ids))):]  # keep the end: the query and its label
                  for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
    if all(len(ids) == 1 for ids in label_ids):  # one token per label: one pass, read the last position
        return _last_token_logprobs(model, prompt_ids, [ids[0] for ids in label_ids], tokenizer, batch_size)
    rows = [(i, j, ids + label, len(label))  # (prompt index, label index, ids, number of label tokens)
            for i, ids in enumerate(prompt_ids) for j, label in enumerate(label_ids)]
    scores = torch.empty(len(prompts), len(label_words))
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        logprobs = _logprobs(model, [r[2] for r in chunk], tokenizer)  # (B, T, V)
        for b, (i, j, ids, n) in enumerate(chunk):
            positions = torch.arange(len(ids) - n - 1, len(ids) - 1)  # logits that predict the label tokens
            scores[i, j] = logprobs[b, positions, torch.tensor(ids[-n:])].sum()
    return scores


def _logprobs(model, sequences: list[list[int]], tokenizer) -> torch.Tensor:
    """Log-softmax of the logits of right-padded ``sequences`` (positions stay 0..n-1), on CPU."""
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    width = max(map(len, sequences))
    input_ids = torch.full((len(sequences), width), pad)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for b, ids in enumerate(sequences):
        input_ids[b, :len(ids)] = torch.tensor(ids)
        mask[b, :len(ids)] = 1
    logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits.float()
    return torch.log_softmax(logits, dim=-1).cpu()


def _last_token_logprobs(model, prompt_ids: list[list[int]], label_ids: list[int], tokenizer, batch_size: int):
    scores = []
    for start in range(0, len(prompt_ids), batch_size):
        chunk = prompt_ids[start:start + batch_size]
        logprobs = _logprobs(model, chunk, tokenizer)
        last = torch.tensor([len(ids) - 1 for ids in chunk])
        scores.append(logprobs[torch.arange(len(chunk)), last][:, label_ids])
    return torch.cat(scores)


def evaluate_classification(model, tokenizer, task, examples: list, train: list, config: FewShotConfig) -> dict:
    """Accuracy (and predictions) of one draw of shots on ``examples``."""
    shots = select_shots(train, config)
    prompts = [build_prompt(task, shots, e, config.separator) for e in examples]
    scores = label_logprobs(model, tokenizer, prompts, task.labels, config.batch_size)
    if config.calibrate:
        content_free = type(examples[0])(input=CONTENT_FREE, output="")
        bias = label_logprobs(model, tokenizer, [build_prompt(task, shots, content_free, config.separator)],
                              task.labels)[0]
        # p_cal ∝ p / p_cf, with both renormalised over the label words (Zhao et al. eq. 1, diagonal W)
        scores = torch.log_softmax(scores, dim=-1) - torch.log_softmax(bias, dim=-1)
    predictions = [task.labels[j] for j in scores.argmax(dim=-1).tolist()]
    return {**task.score(predictions, examples), "predictions": predictions}


@torch.no_grad()
def generate_greedy(model, tokenizer, prompts: list[str], max_new_tokens: int = 48, batch_size: int = 16,
                    stop: str = "\n") -> list[str]:
    """Greedy continuations (left padding, KV cache), cut at ``</s>`` or ``stop``."""
    device = next(model.parameters()).device
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    outputs = []
    try:
        for start in range(0, len(prompts), batch_size):
            batch = tokenizer(prompts[start:start + batch_size], return_tensors="pt", padding=True,
                              add_special_tokens=False).to(device)
            generated = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
            for row in generated[:, batch["input_ids"].shape[1]:]:
                text = tokenizer.decode(row, skip_special_tokens=True)
                outputs.append(text.split(stop)[0].strip() if stop else text.strip())
    finally:
        tokenizer.padding_side = side
    return outputs


def evaluate_generation(model, tokenizer, task, examples: list, train: list, config: FewShotConfig) -> dict:
    shots = select_shots(train, config)
    prompts = [build_prompt(task, shots, e, config.separator) for e in examples]
    predictions = generate_greedy(model, tokenizer, prompts, config.max_new_tokens, config.batch_size)
    return {**task.score(predictions, examples), "predictions": predictions}


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
    for k in shots:
        FewShotConfig(shots=k, **config).validate(len(train))
    from tqdm.auto import tqdm

    evaluate = evaluate_classification if task.kind == "classification" else evaluate_generation
    bar = tqdm(total=sum(draws if k else 1 for k in shots), desc=f"few-shot {task.name}", disable=not progress)
    results = []
    for k in shots:
        values = []
        for d in range(draws if k else 1):
            config_k = FewShotConfig(shots=k, seed=seed + d, **config)
            values.append(evaluate(model, tokenizer, task, examples, train, config_k)[task.metric])
            bar.update()
        mean = sum(values) / len(values)
        std = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
        results.append({"shots": k, "mean": mean, "std": std, "values": values})
    bar.close()
    return results
