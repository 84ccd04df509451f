"""Pretraining recipe of the tiny base: config, data blocks, a minimal training loop, an ICL probe.

The loop is plain PyTorch (AdamW, linear warm-up then cosine decay, gradient clipping) so the
appendix notebook can show all of it. Every ``eval_every`` steps it records the held-out loss and
an in-context-learning probe (label-word accuracy on ``sentiment`` *validation* reviews with 0, 4
and 8 shots drawn from train), which is how we watched ICL emerge; the curve goes to metrics.json.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from peftbook.progress import progress_bar


@dataclass
class PretrainConfig:
    hidden_size: int = 256
    intermediate_size: int = 640
    num_layers: int = 4           # LLaMA-Adapter adapts the top L of them
    num_heads: int = 4
    num_kv_heads: int = 2         # grouped-query attention: 2 query heads share one k/v head
    seq_len: int = 512            # 8-shot sentiment prompts are ~250 tokens
    batch_size: int = 4           # 2048 tokens a step: more, smaller steps suit 2 CPU cores
    steps: int = 1400             # where the shipped base stopped (the schedule does not depend on it)
    lr: float = 2e-3
    warmup: int = 100
    weight_decay: float = 0.1
    eval_every: int = 200
    seed: int = 0
    threads: int = 2


@dataclass
class Stage:
    """One stage of the curriculum after the world corpus (``peftbook.tiny.world.STAGE_MIXES``).

    Each stage starts a fresh AdamW with its own warm-up (a warm restart), as the trials that found
    the recipe did."""
    name: str
    steps: int
    lr: float
    documents: int = 14_000
    warmup: int = 50


# Found by continuing the world-only base (trials 6, 8 and 9 in the model card): induction from
# repeated word sequences, then labels copied from same-polarity examples, first in one-line
# formats, then in two-line ``Key: ...`` formats like the task's template; ``reviews`` steadies the
# 8-shot draws that ``formats`` left uneven (the card has the numbers).
CURRICULUM = (Stage("induction", 1500, 2e-3), Stage("polarity", 1600, 1.5e-3), Stage("formats", 1600, 1.5e-3),
              Stage("reviews", 1600, 1e-3))


def model_config(vocab_size: int, cfg: PretrainConfig, tokenizer=None):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
                       num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
                       num_key_value_heads=cfg.num_kv_heads, max_position_embeddings=cfg.seq_len,
                       tie_word_embeddings=True, rope_theta=10000.0, pad_token_id=0, bos_token_id=1, eos_token_id=2)


def token_blocks(tokenizer, documents: list[str], seq_len: int) -> torch.Tensor:
    """Tokenize documents, join them with ``</s>``, cut into ``(num_blocks, seq_len)`` blocks."""
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    batch = 4096
    for start in range(0, len(documents), batch):
        for row in tokenizer(documents[start:start + batch])["input_ids"]:
            ids.extend(row)
            ids.append(eos)
    usable = len(ids) // seq_len * seq_len
    return torch.tensor(ids[:usable], dtype=torch.long).view(-1, seq_len)


def lr_at(step: int, cfg: PretrainConfig) -> float:
    """Linear warm-up, then inverse-square-root decay (Vaswani et al. 2017).

    The schedule does not depend on the total number of steps, so a run stopped at step k equals a
    run of k steps: the recipe's ``steps`` is simply where we stopped.
    """
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    return cfg.lr * math.sqrt(cfg.warmup / (step + 1))


@torch.no_grad()
def heldout_loss(model, blocks: torch.Tensor, batch_size: int = 8) -> float:
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(blocks), batch_size):
        x = blocks[start:start + batch_size]
        total += model(input_ids=x, labels=x).loss.item() * x.numel()
        count += x.numel()
    model.train()
    return total / count


@torch.no_grad()
def repeat_loss(model, tokenizer, sequences: int = 20, length: int = 30, seed: int = 3) -> dict[str, float]:
    """Loss (nats/token) on random world words and on their exact repeat: a model with induction heads
    predicts the repeat almost for free; one without pays the same twice."""
    import random

    from peftbook.tiny.world import REPEAT_WORDS

    rng = random.Random(seed)
    was_training = model.training
    model.eval()
    first = second = 0.0
    for _ in range(sequences):
        ids = tokenizer(" ".join(rng.choice(REPEAT_WORDS) for _ in range(length)))["input_ids"]
        x = torch.tensor([ids + ids])
        logp = model(input_ids=x).logits.log_softmax(-1)[0, :-1].gather(-1, x[0, 1:, None])[:, 0]
        first += -logp[4:len(ids) - 1].mean().item() / sequences
        second += -logp[len(ids) + 4:].mean().item() / sequences
    model.train(was_training)
    return {"first": round(first, 3), "repeat": round(second, 3)}


@torch.no_grad()
def icl_probe(model, tokenizer, train: list, evaluation: list, shots=(0, 4, 8), draws: int = 2,
              seed: int = 0) -> dict[int, float]:
    """Label-word accuracy of ``Review: ...\\nSentiment:`` prompts with k random shots (a quick probe)."""
    from peftbook.methods.few_shot import FewShotConfig, evaluate_classification
    from peftbook.tasks import builtin_task

    task = builtin_task("sentiment", {"train": train})
    was_training = model.training
    model.eval()
    out = {}
    for k in shots:
        values = [evaluate_classification(model, tokenizer, task, evaluation, train,
                                          FewShotConfig(shots=k, seed=seed + d))["accuracy"]
                  for d in range(draws if k else 1)]
        out[k] = sum(values) / len(values)
    model.train(was_training)
    return out


def pretrain(model, tokenizer, train_blocks: torch.Tensor, heldout_blocks: torch.Tensor, cfg: PretrainConfig,
             probe=None, log_path: Path | None = None, on_eval=None, stage: str = "world",
             offset: tuple[int, int] = (0, 0)) -> list[dict]:
    """Train ``model`` in place for ``cfg.steps`` steps; returns the curve (one dict per evaluation).

    ``on_eval(step, curve)`` runs after each evaluation (the build saves the model there, so a run
    stopped after step k leaves what ``--steps k`` would make). ``stage`` names the curriculum stage
    and ``offset`` the (steps, tokens) of the stages before it, so the rows count from the beginning.
    """
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
    order = torch.randperm(len(train_blocks), generator=generator)
    curve: list[dict] = []
    model.train()
    start = time.time()
    tokens = 0
    running = None
    bar = progress_bar(range(cfg.steps), desc="pretrain", mininterval=5)
    for step in bar:
        index = order[(step * cfg.batch_size + torch.arange(cfg.batch_size)) % len(order)]
        if (step * cfg.batch_size) // len(order) != ((step + 1) * cfg.batch_size - 1) // len(order):
            order = torch.randperm(len(train_blocks), generator=generator)  # next epoch
        x = train_blocks[index]
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += x.numel()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        bar.set_postfix(loss=f"{running:.3f}")
        last = step + 1 == cfg.steps
        if (step + 1) % cfg.eval_every == 0 or last:
            row = {"stage": stage, "step": offset[0] + step + 1, "tokens": offset[1] + tokens,
                   "train_loss": round(running, 4), "heldout_loss": round(heldout_loss(model, heldout_blocks[:48]), 4),
                   "elapsed_s": round(time.time() - start, 1)}
            row["repeat_loss"] = repeat_loss(model, tokenizer)
            if probe is not None:
                row["icl_accuracy"] = {str(k): round(v, 4) for k, v in probe(model).items()}
            curve.append(row)
            if log_path is not None:
                with open(log_path, "a") as f:
                    f.write(json.dumps(row) + "\n")
            if on_eval is not None:
                on_eval(offset[0] + step + 1, curve)
            bar.write(json.dumps(row))
    model.eval()
    return curve
