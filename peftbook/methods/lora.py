"""LoRA: Low-Rank Adaptation of Large Language Models (Hu et al. 2021, arXiv 2106.09685).

The idea: the update a fine-tune makes to a weight matrix has low intrinsic rank, so learn it as a
product of two thin matrices and leave the pretrained weight frozen::

              x (.., in)
          ┌─────┴──────────────┐
          │                 dropout
     W (out, in)               │
      frozen             A (rank, in)    Kaiming-uniform init
          │                    │
          │              B (out, rank)   zero init  ->  B A = 0 at step 0
          │                    │
          │              × alpha / rank
          └──────── + ─────────┘
                    │
              h = W x + (alpha/rank) B A x

Only A and B train: ``rank * (in + out)`` numbers instead of ``in * out``.  After training
``merge`` folds ``(alpha/rank) B A`` into ``W``, so inference costs nothing extra.

What we do like the reference (the paper's ``loralib`` and HF PEFT): A is initialised like
``nn.Linear`` (Kaiming-uniform, a=sqrt(5)), B at zero, dropout on the LoRA branch only, default
targets q and v, rsLoRA (Kalajdzievski 2023, arXiv 2312.03732) scales by alpha/sqrt(rank).
What we do differently: one adapter per model (no adapter-name dicts), a target that matches
no module is an error listing the candidates rather than silently training nothing, and on a 16-bit
base A and B are 16-bit too by default (``adapter_dtype="base"``; HF PEFT up-casts them to fp32, which
``adapter_dtype="fp32"`` reproduces).  Saved
adapters use HF PEFT's key names and ``adapter_config.json``, so ``PeftModel.from_pretrained`` loads them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from peftbook.models import ARCHITECTURES, get_architecture, layers_path, model_dims
from peftbook.surgery import (copy_state_checked, is_linear, linear_shapes, linears_used_directly, matches_suffix,
                              replace_module)

PEFT_PREFIX = "base_model.model."  # HF PEFT's key prefix for the wrapped model
ADAPTER_DTYPES = ("base", "fp32")  # LoRAConfig.adapter_dtype


def adapter_torch_dtype(adapter_dtype: str, base_dtype: torch.dtype) -> torch.dtype:
    """The dtype of new adapter weights: the base's, or fp32 ("fp32")."""
    return torch.float32 if adapter_dtype == "fp32" else base_dtype


@dataclass
class LoRAConfig:
    method: ClassVar[str] = "lora"
    rank: int = 8  # r: the update's rank; 4-16 already matches full fine-tuning in the paper (Table 6)
    alpha: float = 16  # scale alpha/rank: changing rank then needs no new learning rate
    dropout: float = 0.0  # dropout on the LoRA branch's input only (the base path is untouched)
    targets: list[str] | str | None = None  # module-name suffixes; None -> architecture default; "all-linear"
    use_rslora: bool = False  # scale alpha/sqrt(rank): keeps the update's size stable at large rank
    # "base": A and B in the adapted layer's dtype (QLoRA: its compute dtype); "fp32": fp32 on a 16-bit base,
    # as HF PEFT's default autocast_adapter_dtype=True (each adapted layer's input is then cast to an fp32
    # copy that backward keeps: more memory, fp32 updates of A and B)
    adapter_dtype: str = "base"

    def validate(self) -> None:
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank <= 0:
            raise ValueError(f"rank={self.rank!r} is not allowed; rank must be a positive integer")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not self.alpha > 0:
            raise ValueError(f"alpha={self.alpha!r} is not allowed; alpha must be > 0")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ValueError(f"dropout={self.dropout!r} is not allowed; dropout must be in [0, 1)")
        if isinstance(self.targets, str) and self.targets != "all-linear":
            raise ValueError(f"targets={self.targets!r} is not allowed; use None, 'all-linear' or a list of names")
        if self.adapter_dtype not in ADAPTER_DTYPES:
            raise ValueError(f"adapter_dtype={self.adapter_dtype!r} is not allowed; "
                             f"allowed: {', '.join(ADAPTER_DTYPES)}")
        if isinstance(self.targets, (list, tuple)) and (not self.targets or not all(
                isinstance(t, str) and t for t in self.targets)):
            raise ValueError(f"targets={self.targets!r} is not allowed; give a non-empty list of module names")

    @property
    def scaling(self) -> float:
        return self.alpha / (math.sqrt(self.rank) if self.use_rslora else self.rank)


class LoRALinear(nn.Module):
    """``base(x) + scaling * B(A(dropout(x)))`` around a frozen ``nn.Linear``, gpt2 ``Conv1D`` or
    bitsandbytes ``Linear4bit``; ``dtype`` sets the LoRA weights' precision (default: the base's)."""

    def __init__(self, base: nn.Module, rank: int, alpha: float, dropout: float = 0.0,
                 use_rslora: bool = False, dtype: torch.dtype | None = None):
        super().__init__()
        self.base = base
        self.fan_in_fan_out = isinstance(base, Conv1D)  # gpt2 stores W as (in, out)
        in_features, out_features = (base.nx, base.nf) if self.fan_in_fan_out else (base.in_features, base.out_features)
        dtype = dtype or base.weight.dtype
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.lora_A = nn.Linear(in_features, rank, bias=False, device=base.weight.device, dtype=dtype)  # (rank, in)
        self.lora_B = nn.Linear(rank, out_features, bias=False, device=base.weight.device, dtype=dtype)  # (out, rank)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)
        self.scaling = alpha / (math.sqrt(rank) if use_rslora else rank)
        self.merged = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base(x)  # (.., out)
        if self.merged:
            return result
        lora_x = self.dropout(x).to(self.lora_A.weight.dtype)  # a copy only for fp32 LoRA on a 16-bit base
        # summed in the wider dtype, rounded once (as HF PEFT): a no-op cast when LoRA has the base's dtype
        return (result + self.lora_B(self.lora_A(lora_x)) * self.scaling).to(result.dtype)

    @property
    def weight(self) -> torch.Tensor:
        """The base's weight, for models that look at it (mamba picks its kernel by the weight's device)."""
        return self.base.weight

    @property
    def bias(self):
        return self.base.bias

    def delta_weight(self) -> torch.Tensor:
        """``scaling * B A`` laid out like ``base.weight``: (out, in), or (in, out) for Conv1D."""
        delta = (self.lora_B.weight.float() @ self.lora_A.weight.float()) * self.scaling  # (out, in)
        return delta.T if self.fan_in_fan_out else delta

    def merge(self) -> None:
        if getattr(self.base.weight, "quant_state", None) is not None:
            raise ValueError("this LoRALinear wraps a 4-bit layer; merge it with peftbook.methods.qlora.merge")
        if not self.merged:
            with torch.no_grad():  # add in fp32, store in the base's dtype
                self.base.weight.copy_(self.base.weight.float() + self.delta_weight())
            self.merged = True

    def unmerge(self) -> None:
        if self.merged:
            with torch.no_grad():
                self.base.weight.copy_(self.base.weight.float() - self.delta_weight())
            self.merged = False


def lora_modules(model: nn.Module) -> dict[str, LoRALinear]:
    return {name: module for name, module in model.named_modules() if isinstance(module, LoRALinear)}


def resolve_targets(model: nn.Module, config: LoRAConfig) -> list[str]:
    """Full names of the linear layers ``config.targets`` selects; raises naming the candidates."""
    output_layer = model.get_output_embeddings()
    linears = {name for name, module in model.named_modules()
               if is_linear(module) and module is not output_layer and ".lora_" not in name}
    if config.targets == "all-linear":
        return sorted(linears)
    targets = list(config.targets or default_targets(model))
    chosen = set()
    for target in targets:
        found = {name for name in linears if matches_suffix(name, target)}
        if not found:
            candidates = sorted({name.rsplit(".", 1)[-1] for name in linears})
            raise ValueError(f"LoRA target {target!r} matches no linear layer of this "
                             f"{model.config.model_type} model; candidates: {', '.join(candidates)} (or 'all-linear')")
        chosen |= found
    return sorted(chosen)


def default_targets(model: nn.Module) -> list[str]:
    """The architecture's LoRA targets (q and v, or the fused qkv; inferred where the table has no entry);
    for a model without attention (mamba, rwkv...) every linear layer of its decoder layers."""
    try:
        return list(get_architecture(model).lora_targets)
    except ValueError:
        prefix = layers_path(model) + "."
        linears = [name for name, module in model.named_modules() if name.startswith(prefix) and is_linear(module)]
        read_directly = {name.rsplit(".", 1)[-1] for name in linears_used_directly(model, linears)}
        names = sorted({name.rsplit(".", 1)[-1] for name in linears} - read_directly)  # mamba reads dt_proj.weight
        if not names:
            raise ValueError(f"{model.config.model_type}: no linear layer in its decoder layers for LoRA") from None
        return names


def inject(model: nn.Module, config: LoRAConfig, dtype: torch.dtype | None = None) -> None:
    targets = resolve_targets(model, config)
    if model.config.model_type not in ARCHITECTURES:  # the table's families call every linear layer
        read_directly = linears_used_directly(model, targets)
        if read_directly:
            raise ValueError(f"LoRA cannot wrap {', '.join(read_directly[:3])} of {model.config.model_type}: the model "
                             "reads its weight directly instead of calling the layer")
    for name in targets:
        base = model.get_submodule(name)
        weight_dtype = adapter_torch_dtype(config.adapter_dtype, dtype or base.weight.dtype)
        replace_module(model, name, LoRALinear(base, config.rank, config.alpha, config.dropout, config.use_rslora,
                                               weight_dtype))


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A and B of every wrapped layer under HF PEFT's key names."""
    state = {}
    for name, module in lora_modules(model).items():
        state[f"{PEFT_PREFIX}{name}.lora_A.weight"] = module.lora_A.weight
        state[f"{PEFT_PREFIX}{name}.lora_B.weight"] = module.lora_B.weight
    return state


def load_adapter_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    copy_state_checked(adapter_state(model), state, "LoRA")


def peft_adapter_config(model: nn.Module, config: LoRAConfig) -> dict:
    """HF PEFT's ``adapter_config.json`` for the same adapter."""
    modules = lora_modules(model)
    return {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": model.config._name_or_path or None,
        "r": config.rank, "lora_alpha": config.alpha, "lora_dropout": config.dropout,
        # the last name component of every wrapped layer: PEFT matches it as a suffix, like we do
        "target_modules": sorted({name.rsplit(".", 1)[-1] for name in modules}),
        "fan_in_fan_out": any(m.fan_in_fan_out for m in modules.values()),
        "use_rslora": config.use_rslora, "bias": "none", "init_lora_weights": True, "inference_mode": True,
        "modules_to_save": None,
    }


def hf_peft_config(model: nn.Module, config: LoRAConfig):
    """The same adapter as a ``peft.LoraConfig`` (for comparisons; needs the ``peft`` package)."""
    import peft

    targets = config.targets  # None: the architecture's default; "all-linear" means the same in PEFT
    return peft.LoraConfig(task_type="CAUSAL_LM", r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                           use_rslora=config.use_rslora, target_modules=targets if isinstance(targets, str)
                           else list(targets or default_targets(model)))


def merge(model: nn.Module) -> nn.Module:
    """Fold ``scaling * B A`` into every wrapped weight (in fp32, stored in the base's dtype).

    The LoRA branch is then skipped, so the model runs at the base model's cost.  ``unmerge``
    subtracts the same product: ``(W + d) - d`` equals ``W`` up to one fp32 rounding per element
    (|error| <= ulp(W + d), ~1e-7 relative), not bit-exactly.
    """
    for module in lora_modules(model).values():
        module.merge()
    return model


def unmerge(model: nn.Module) -> nn.Module:
    for module in lora_modules(model).values():
        module.unmerge()
    return model


def unload(model: nn.Module) -> nn.Module:
    """Put each merged wrapper's base layer back in its place: a plain model, no LoRA module left.

    A merged ``LoRALinear`` still costs one extra module call per layer (measured: the merged tiny
    base ran 1.05x the base's forward time); unloaded, the model *is* a base model with new weights.
    """
    for name, module in lora_modules(model).items():
        if not module.merged:
            raise ValueError(f"{name} is not merged; merge before unloading (peftbook.merge(model, unload=True))")
        replace_module(model, name, module.base)
    return model


def num_trainable(model_config, config: LoRAConfig) -> int:
    """``rank * (in + out)`` summed over the targeted layers of every decoder layer."""
    shapes = linear_shapes(model_config)
    targets = config.targets or get_architecture(model_config).lora_targets
    per_layer = sum(config.rank * (d_in + d_out) for name, (d_in, d_out) in shapes.items()
                    if targets == "all-linear" or any(matches_suffix(name, t) for t in targets))
    return per_layer * model_dims(model_config)["num_layers"]


__all__ = ["LoRAConfig", "LoRALinear", "inject", "merge", "unmerge", "unload", "adapter_state", "load_adapter_state",
           "num_trainable", "peft_adapter_config", "hf_peft_config", "lora_modules", "resolve_targets", "default_targets"]
