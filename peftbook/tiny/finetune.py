"""A minimal full fine-tuning loop, used to show that the tiny tasks are learnable by the base.

This is the base's quality gate, not the course's training code (that is ``peftbook.train``): it
keeps no dependency on the methods so the recipe can check the base on its own. Loss on the target
tokens only (prompt tokens are labelled -100); ``</s>`` ends every generation target.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from peftbook.batching import IGNORE_INDEX, encode_prompt, encode_target, pad_batch
from peftbook.progress import progress_bar


@dataclass
class FinetuneConfig:
    steps: int = 600
    batch_size: int = 16
    lr: float = 1e-3
    warmup: int = 20
    seed: int = 0


def encode_truncating_end(tokenizer, task, example, max_length: int = 512) -> tuple[list[int], list[int]]:
    """Token ids of prompt + target (+ ``</s>`` for generation) and labels (-100 on the prompt), both
    cut to their first ``max_length`` tokens (``peftbook.train.encode_example`` keeps the last ones)."""
    prompt = encode_prompt(tokenizer, task.prompt(example))
    target = encode_target(tokenizer, task.target(example))
    if task.kind == "generation":
        target = target + [tokenizer.eos_token_id]
    ids = (prompt + target)[:max_length]
    labels = ([IGNORE_INDEX] * len(prompt) + target)[:max_length]
    return ids, labels


def finetune(model, tokenizer, task, config: FinetuneConfig | None = None) -> list[float]:
    """Fine-tune every parameter of ``model`` on ``task``'s train split; returns the loss per step."""
    config = config or FinetuneConfig()
    rng = random.Random(config.seed)
    torch.manual_seed(config.seed)
    encoded = [encode_truncating_end(tokenizer, task, e) for e in task.examples("train")]
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / config.warmup) * max(0.0, 1 - s / config.steps))
    model.train()
    losses = []
    for _ in progress_bar(range(config.steps), desc=f"finetune {task.name}", mininterval=5):
        chosen = rng.sample(encoded, config.batch_size)
        batch = pad_batch([ids for ids, _ in chosen], tokenizer.pad_token_id, labels=[labels for _, labels in chosen])
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.eval()
    return losses


def evaluate_task(model, tokenizer, task, split: str = "test", num_examples: int | None = None) -> dict[str, float]:
    """Zero-shot metrics of ``model`` on ``task`` (label scoring or greedy generation)."""
    from peftbook.methods.few_shot import FewShotConfig, evaluate_classification, evaluate_generation

    examples = task.examples(split)[:num_examples] if num_examples else task.examples(split)
    evaluate = evaluate_classification if task.kind == "classification" else evaluate_generation
    result = evaluate(model, tokenizer, task, examples, task.examples("train"), FewShotConfig(shots=0, batch_size=32))
    return {k: v for k, v in result.items() if k != "predictions"}
