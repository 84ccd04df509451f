"""Full fine-tuning: every parameter trains. The baseline every PEFT table compares with.

Nothing is injected: ``apply`` only switches ``requires_grad`` back on.  It is the most
expressive and the most expensive method: the gradients and the AdamW moments add three more
copies of the model (16 bytes per parameter in fp32 with AdamW, vs ~4 for a frozen base).

``adapter_state`` is the whole set of parameters (tied embeddings counted once), so
``save_adapter`` writes a full checkpoint; that is the honest price of this method.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from peftbook.models import model_dims
from peftbook.surgery import copy_state_checked, linear_shapes


@dataclass
class FullFinetuneConfig:
    method: ClassVar[str] = "full"
    # False freezes the token embedding (and a tied output head with it): a common way to save
    # vocab * hidden gradients + optimizer states when the vocabulary dominates a small model.
    train_embeddings: bool = True

    def validate(self) -> None:
        if not isinstance(self.train_embeddings, bool):
            raise ValueError(f"train_embeddings={self.train_embeddings!r} is not allowed; use True or False")


def inject(model: nn.Module, config: FullFinetuneConfig) -> None:
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    if not config.train_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return dict(model.named_parameters())  # named_parameters lists a tied weight once


def load_adapter_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    copy_state_checked(adapter_state(model), state, "full fine-tune")


def num_parameters(model_config) -> int:
    """Closed-form parameter count of the supported causal LMs (a tied head counted once)."""
    dims = model_dims(model_config)
    hidden, vocab, layers = dims["hidden_size"], dims["vocab_size"], dims["num_layers"]
    q_size, kv_size = dims["num_heads"] * dims["head_dim"], dims["num_kv_heads"] * dims["head_dim"]
    shapes = linear_shapes(model_config)
    per_layer = sum(d_in * d_out for d_in, d_out in shapes.values())
    model_type = model_config.model_type
    if model_type == "gpt2":  # every Conv1D has a bias, LayerNorms have weight + bias
        per_layer += sum(d_out for _, d_out in shapes.values()) + 2 * 2 * hidden
        embeddings = (vocab + model_config.n_positions) * hidden
        final_norm = 2 * hidden
    else:  # RMSNorm: one weight vector per norm
        per_layer += (4 if model_type == "gemma2" else 2) * hidden
        if model_type == "qwen2" or getattr(model_config, "attention_bias", False):
            per_layer += q_size + 2 * kv_size  # q, k, v biases
        if getattr(model_config, "attention_bias", False):
            per_layer += hidden  # o_proj bias (llama-style attention_bias)
        if getattr(model_config, "mlp_bias", False):
            per_layer += sum(d_out for name, (_, d_out) in shapes.items() if name.startswith("mlp."))
        embeddings = vocab * hidden
        final_norm = hidden
    head = 0 if model_config.tie_word_embeddings else vocab * hidden
    return embeddings + layers * per_layer + final_norm + head


def num_trainable(model_config, config: FullFinetuneConfig) -> int:
    dims = model_dims(model_config)
    embedding = dims["vocab_size"] * dims["hidden_size"]
    return num_parameters(model_config) - (0 if config.train_embeddings else embedding)
