"""Evaluate a (possibly adapted) causal LM on a task split.

* **classification**: the prediction is the label word with the highest log-likelihood after the
  prompt (the sum of its tokens' log-probabilities), scored in batches; accuracy via ``task.score``.
* **generation**: greedy decoding in batches with left padding; BLEU (sacrebleu), ROUGE-L
  (rouge-score) and the task's own metrics (e.g. slot accuracy) via ``task.score``.
* **latency**: seconds per example at batch size 1 (prefill + generation of the answer), median
  over a few examples, so a long few-shot prompt can be compared with a soft prompt, and a merged
  LoRA with an unmerged one or with prefix/adapter methods.

Prompts and targets are tokenized as in training (``peftbook.batching``), so what the model was
trained to continue is exactly what it is asked to continue here.
"""
from __future__ import annotations

import contextlib
import dataclasses
import inspect
import statistics
import time

import torch
import torch.nn.functional as F

from peftbook.batching import encode_prompt, encode_target, pad_batch
from peftbook.metrics import text_metrics
from peftbook.tasks import check_split


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def label_targets(task, example) -> list[str]:
    """The target string of every label word for ``example`` (e.g. [" positive", " negative"])."""
    return [task.target(dataclasses.replace(example, output=label, label=label)) for label in task.labels]


@torch.no_grad()
def continuation_logprobs(model, pad_token_id: int, prompts: list[list[int]], continuations: list[list[int]],
                          batch_size: int = 16) -> list[float]:
    """Sum of log p(continuation | prompt) for each (prompt, continuation) pair, in right-padded batches.

    Methods that prepend virtual tokens (prompt tuning) return longer logits: the last ``T``
    positions are always the real tokens', so we read those.
    """
    device = model_device(model)
    scores: list[float] = []
    for start in range(0, len(prompts), batch_size):
        pairs = list(zip(prompts[start:start + batch_size], continuations[start:start + batch_size]))
        batch = pad_batch([prompt + cont for prompt, cont in pairs], pad_token_id)
        length = batch["input_ids"].shape[1]
        logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
        logprobs = F.log_softmax(logits[:, -length:].float(), dim=-1)  # (B, T, V)
        for row, (prompt, cont) in enumerate(pairs):
            # token t is predicted at position t-1
            positions = torch.arange(len(prompt) - 1, len(prompt) + len(cont) - 1, device=device)
            tokens = torch.tensor(cont, device=device)
            scores.append(logprobs[row, positions, tokens].sum().item())
    return scores


SHARED_PREFIX_MIN = 8  # tokens: a shorter common start is not worth a forward pass of its own


def common_prefix_length(prompts: list[list[int]]) -> int:
    """How many tokens every prompt starts with, leaving each prompt at least its last token."""
    first, length = prompts[0], min(map(len, prompts)) - 1
    for ids in prompts[1:]:
        same = 0
        while same < length and ids[same] == first[same]:
            same += 1
        length = same
    return max(length, 0)


def keeps_logits(model) -> bool:
    """Whether the model's forward takes ``logits_to_keep`` (compute the vocabulary's logits at some positions only)."""
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def prefix_key_values(model, prefix: list[int]):
    """Per layer ``(keys, values)`` of one forward over ``prefix`` (batch 1), or None when the model's
    cache is not a plain ``DynamicCache`` of full-attention layers (then nothing can be shared exactly)."""
    from transformers import DynamicCache

    keep = {"logits_to_keep": 1} if keeps_logits(model) else {}
    cache = getattr(model(input_ids=torch.tensor([prefix], device=model_device(model)), use_cache=True, **keep),
                    "cache", None)
    if not isinstance(cache, DynamicCache) or any(type(layer).__name__ != "DynamicLayer" for layer in cache.layers):
        return None
    return [(layer.keys, layer.values) for layer in cache.layers]


@contextlib.contextmanager
def head_at(model, rows: torch.Tensor, positions: torch.Tensor, length: int):
    """The output layer computes the logits at ``positions`` (counted in the input's ``length`` tokens) of each
    row only: a forward pre-hook hands it those hidden states, (B, 1, hidden), so the model returns (B, 1, vocab).

    A method that prepends virtual tokens (prompt tuning) makes the hidden states longer than the input; the
    input's tokens are the last ``length`` of them, so every method is read at the same tokens. A model
    whose head cannot be hooked (no output embeddings) computes all its logits, and the caller picks.
    """
    head = model.get_output_embeddings()
    if head is None:
        yield False
        return

    def take_positions(module, args):
        hidden = args[0]  # (B, L, hidden), L >= length
        picked = hidden[rows, hidden.shape[1] - length + positions][:, None]  # (B, 1, hidden)
        return (picked, *args[1:])

    handle = head.register_forward_pre_hook(take_positions)
    try:
        yield True
    finally:
        handle.remove()


@torch.no_grad()
def next_token_logprobs(model, pad_token_id: int, prompts: list[list[int]], token_ids: list[int],
                        batch_size: int = 16, share_prefix: bool = False) -> torch.Tensor:
    """``(len(prompts), len(token_ids))``: log p(token | prompt), one forward per prompt batch.

    No compute goes to what is not read: prompts are batched in order of length (each batch pads to
    its own longest, about the length of the rest), and the vocabulary's logits are computed at each
    prompt's last token only (``head_at``), not at every position. ``share_prefix``: when every prompt
    starts with the same tokens (few-shot prompts share their demonstrations), run those once and only
    each prompt's own tokens per batch, on a copy of their KV cache: the same tokens at the same
    positions, so the same scores (to float rounding), and a 248-token 8-shot prompt costs its
    ~30-token query. Models whose cache cannot be copied this way run the whole prompts.
    """
    from transformers import DynamicCache

    device = model_device(model)
    shared = common_prefix_length(prompts) if share_prefix else 0
    pairs = prefix_key_values(model, prompts[0][:shared]) if shared >= SHARED_PREFIX_MIN else None
    shared = shared if pairs is not None else 0
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # batches of similar length
    scores = torch.empty(len(prompts), len(token_ids))
    for start in range(0, len(order), batch_size):
        picked = order[start:start + batch_size]
        chunk = [prompts[i][shared:] for i in picked]
        batch = pad_batch(chunk, pad_token_id)
        length = batch["input_ids"].shape[1]
        extra = {}
        if shared:  # the prefix's keys and values, one view per row; the forward appends to a new copy
            rows_in = len(chunk)
            extra["cache"] = DynamicCache([(k.expand(rows_in, -1, -1, -1), v.expand(rows_in, -1, -1, -1))
                                           for k, v in pairs], config=model.config)
            batch["attention_mask"] = torch.cat([torch.ones(rows_in, shared, dtype=torch.long),
                                                 batch["attention_mask"]], dim=1)
        rows = torch.arange(len(chunk), device=device)
        last = torch.tensor([len(ids) - 1 for ids in chunk], device=device)  # right padding: each row's last token
        with head_at(model, rows, last, length) as hooked:
            logits = model(**{k: v.to(device) for k, v in batch.items()}, **extra).logits
        # hooked: (B, 1, V) at the last tokens; else (B, L, V), of which the last `length` are the input's
        logits = logits[:, 0] if hooked else logits[:, -length:][rows, last]  # (B, V)
        logprobs = F.log_softmax(logits.float(), dim=-1)  # (B, V)
        scores[picked] = logprobs[:, token_ids].cpu()
    return scores


def classify(model, tokenizer, task, examples, batch_size: int = 16) -> list[str]:
    """Predicted label word per example (highest label log-likelihood).

    Single-token label words (the common case) take one forward per example; longer ones score
    every (prompt, label) pair. The scorers read the last positions of the logits, so methods that
    prepend virtual tokens to them (prompt tuning) are scored right; few-shot prompting
    (``peftbook.methods.few_shot.label_logprobs``) uses the same two scorers.
    """
    targets = [[encode_target(tokenizer, t) for t in label_targets(task, e)] for e in examples]
    first = targets[0]
    if all(len(ids) == 1 for ids in first) and all(t == first for t in targets):
        prompts = [encode_prompt(tokenizer, task.prompt(e)) for e in examples]
        scores = next_token_logprobs(model, tokenizer.pad_token_id, prompts, [ids[0] for ids in first], batch_size)
        return [task.labels[j] for j in scores.argmax(dim=-1).tolist()]
    prompts, continuations = [], []
    for example in examples:
        prompt = encode_prompt(tokenizer, task.prompt(example))
        for target in label_targets(task, example):
            prompts.append(prompt)
            continuations.append(encode_target(tokenizer, target))
    # batch_size counts examples; each contributes one row per label
    scores = continuation_logprobs(model, tokenizer.pad_token_id, prompts, continuations,
                                   batch_size=batch_size * len(task.labels))
    n_labels = len(task.labels)
    predictions = []
    for i in range(len(examples)):
        row = scores[i * n_labels:(i + 1) * n_labels]
        predictions.append(task.labels[max(range(n_labels), key=row.__getitem__)])
    return predictions


def default_max_new_tokens(tokenizer, task) -> int:
    """Room for the longest training target (first 200 examples) plus a margin, and the eos."""
    lengths = [len(encode_target(tokenizer, task.target(e))) for e in task.examples("train")[:200]]
    return int(max(lengths, default=16) * 1.5) + 4


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int = 16) -> list[str]:
    """Greedy continuations of ``prompts`` (left-padded batches), decoded without special tokens."""
    device = model_device(model)
    outputs = []
    for start in range(0, len(prompts), batch_size):
        encoded = [encode_prompt(tokenizer, p) for p in prompts[start:start + batch_size]]
        batch = pad_batch(encoded, tokenizer.pad_token_id, side="left")  # every prompt ends at the last column
        length = batch["input_ids"].shape[1]
        generated = model.generate(**{k: v.to(device) for k, v in batch.items()},
                                   max_new_tokens=max_new_tokens, do_sample=False,
                                   pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        for row in generated[:, length:]:
            outputs.append(tokenizer.decode(row, skip_special_tokens=True).strip())
    return outputs


@torch.no_grad()
def measure_latency(model, tokenizer, task, examples, max_new_tokens: int) -> float:
    """Median seconds per example at batch size 1: prefill + the answer (label scoring or generation)."""
    times = []
    for example in examples:
        start = time.perf_counter()
        if task.kind == "classification":
            classify(model, tokenizer, task, [example], batch_size=1)
        else:
            generate(model, tokenizer, [task.prompt(example)], max_new_tokens, batch_size=1)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times) if times else float("nan")


def evaluate(model, tokenizer, task, split: str = "validation", *, max_examples: int | None = None,
             batch_size: int = 16, max_new_tokens: int | None = None, latency_examples: int = 8) -> dict:
    """Score ``model`` on ``task``'s ``split``.

    Args:
        split: "train", "validation" or "test" (tune on validation; report test once).
        max_examples: evaluate the first N examples only.
        batch_size: examples per forward/generate batch.
        max_new_tokens: generation budget; default from the training targets' length.
        latency_examples: examples timed one by one for ``latency_s`` (0 skips it).

    Returns:
        ``{"metric", "value", <all task metrics>, ("bleu", "rougeL" for generation), "n_examples",
        "seconds_per_example" (batched), "latency_s" (batch size 1), "predictions"}``.
    """
    check_split(split)
    if max_examples is not None and max_examples < 1:
        raise ValueError(f"max_examples={max_examples!r} is not allowed; use an integer >= 1, or None for all")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} is not allowed; use an integer >= 1")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    examples = task.examples(split)
    if max_examples is not None:
        examples = examples[:max_examples]
    if not examples:
        with_examples = [name for name, rows in task.splits.items() if rows]
        raise ValueError(f"task {task.name!r} has no {split!r} examples; splits with examples: "
                         f"{', '.join(with_examples) or 'none'}")
    was_training = model.training
    model.eval()
    try:
        if max_new_tokens is None and task.kind != "classification":
            max_new_tokens = default_max_new_tokens(tokenizer, task)
        start = time.perf_counter()
        if task.kind == "classification":
            predictions = classify(model, tokenizer, task, examples, batch_size)
        else:
            predictions = generate(model, tokenizer, [task.prompt(e) for e in examples], max_new_tokens, batch_size)
        elapsed = time.perf_counter() - start
        scores = dict(task.score(predictions, examples))
        if task.kind != "classification" and not {"bleu", "rougeL"} <= set(scores):
            references = [task.target(e).strip() for e in examples]  # a task that scores only its own metric
            scores = {**text_metrics(predictions, references), **scores}
        latency = measure_latency(model, tokenizer, task, examples[:latency_examples], max_new_tokens or 1)
    finally:
        model.train(was_training)
    return {"metric": task.metric, "value": float(scores[task.metric]), **{k: float(v) for k, v in scores.items()},
            "split": split, "n_examples": len(examples), "seconds_per_example": elapsed / len(examples),
            "latency_s": latency, "predictions": predictions}
