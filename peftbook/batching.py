"""Token ids in, padded batches out: the tokenization that training, evaluation and few-shot share.

* ``encode_prompt`` / ``encode_target``: a prompt gets the tokenizer's special prefix (e.g. ``<s>``)
  where it adds one, a target none, so ``prompt + target`` is what the model reads in training and
  what it is asked to continue in evaluation.
* ``pad_batch``: right padding for training and scoring (every row starts at position 0), left
  padding for generation (every prompt ends at the last column, where new tokens are appended).
"""
from __future__ import annotations

import torch

PAD_SIDES = ("right", "left")
IGNORE_INDEX = -100  # the label that ``nn.CrossEntropyLoss`` (and HF models' loss) skips


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    """Prompt token ids, with the tokenizer's special prefix (e.g. ``<s>``) where it adds one."""
    return list(tokenizer(prompt)["input_ids"])


def encode_target(tokenizer, target: str) -> list[int]:
    """Target token ids: no special tokens, as a continuation of the prompt."""
    return list(tokenizer(target, add_special_tokens=False)["input_ids"])


def pad_batch(sequences: list[list[int]], pad_token_id: int, *, side: str = "right",
              labels: list[list[int]] | None = None) -> dict[str, torch.Tensor]:
    """Pad token id lists to one ``(B, T)`` batch, ``T`` the longest sequence.

    Args:
        sequences: token ids per row.
        pad_token_id: the id written into padding positions (they get attention mask 0).
        side: "right" (rows start at column 0) or "left" (rows end at the last column).
        labels: per row, one label per token (same lengths as ``sequences``); padded with -100.

    Returns:
        ``{"input_ids", "attention_mask"}`` (long), and ``"labels"`` when ``labels`` is given.
    """
    if side not in PAD_SIDES:
        raise ValueError(f"side={side!r} is not allowed; allowed: {', '.join(PAD_SIDES)}")
    if not sequences:
        raise ValueError("sequences is empty; pad_batch needs at least one sequence")
    if labels is not None and [len(row) for row in labels] != [len(ids) for ids in sequences]:
        raise ValueError(f"labels of lengths {[len(row) for row in labels]} do not match sequences of lengths "
                         f"{[len(ids) for ids in sequences]}; give one label per token")
    length = max(map(len, sequences))
    input_ids = torch.full((len(sequences), length), pad_token_id, dtype=torch.long)  # (B, T)
    attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)  # (B, T)
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    if labels is not None:
        batch["labels"] = torch.full((len(sequences), length), IGNORE_INDEX, dtype=torch.long)  # (B, T)
    for row, ids in enumerate(sequences):
        columns = slice(0, len(ids)) if side == "right" else slice(length - len(ids), length)
        input_ids[row, columns] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, columns] = 1
        if labels is not None:
            batch["labels"][row, columns] = torch.tensor(labels[row], dtype=torch.long)
    return batch
