"""Prefix tuning: Optimizing Continuous Prompts for Generation (Li & Liang 2021, arXiv 2101.00190).

The idea: instead of virtual *input* tokens (prompt tuning), learn virtual *activations*: for every
layer, ``num_virtual_tokens`` keys and values that each attention head sees before the real tokens::

    layer l attention:  keys   = [ K_prefix[l] | W_k h_1 .. W_k h_T ]     (B, kv_heads, n + T, head_dim)
                        values = [ V_prefix[l] | W_v h_1 .. W_v h_T ]
                                   trainable      frozen

All the prefixes form one matrix of shape ``(n, layers * 2 * kv_heads * head_dim)``; every layer is
steered directly, not only through the first one. The paper found training P directly unstable and
reparameterised it as ``P = MLP(P')`` with a small ``P'`` (embedding -> Linear -> tanh -> Linear);
after training only the MLP's output is kept (``fold``).

How we hook in: a transformers ``DynamicCache`` that already holds the prefix is exactly "keys and
values seen before the real tokens", so a forward pre-hook on the HF model hands one in (or fills the
empty one ``generate()`` made) and prepends ones to ``attention_mask``. The model object stays the same.
During ``generate()`` the prefix is written once, on the prefill step; later steps find it at the start
of the cache. Grouped-query attention needs nothing special: the prefix has ``num_key_value_heads``
heads, like the cache. Gemma2's sliding-window layers come from ``DynamicCache(config=...)``.

Like HF PEFT: the flat layout ``(n, layers, 2, kv_heads, head_dim)`` (keys then values, per layer), the MLP
shape (``P'`` has width ``kv_heads * head_dim``), N(0, 1) init, real tokens at positions ``n, n+1, ..`` (they
come after the prefix in the cache), and the saved ``prompt_embeddings`` tensor is the MLP's output, so
``peft.PeftModel.from_pretrained`` loads our folder. Differently: left padding is handled like in
``generate()`` (the real tokens' positions follow the attention mask), gradient checkpointing works, and
``init="vocab"`` starts the prefix from the keys and values the frozen model itself writes for real tokens
(the paper found real words' activations a much better start than random ones in low-data settings). On a
pretrained model N(0, 1) keys and values in every layer are far from anything it has seen: SmolLM2-135M's
first training loss on sentiment3 is 15.3 from them, 7.06 from its own (7.45 with no prefix), and 20 steps end
near chance (0.40) against 0.843 (benchmarks/README.md), so the registry's defaults for models of 50M
parameters and more take ``"vocab"``.

Transformers' checkpointed decoder layers drop the cache they are given (a layer that *writes* the cache would
write it twice: once in forward, again when backward replays it), which would silently remove the prefix; a
layer may keep it only when it merely reads the cache
(``GradientCheckpointingLayer._can_checkpoint_with_cache``). So while checkpointing is on in a training
forward, the cache we hand in is read-only: each layer's ``update`` returns ``[prefix | new keys]`` and
forgets the new ones, so the replay sees exactly what the forward saw, and the decoder layers are marked as
readers. Only non-reentrant checkpointing (``use_reentrant=False``, transformers' default and ``train``'s) is
accepted: the prefix is one graph that every layer's gradient flows into, and reentrant checkpointing runs a
separate backward per layer that frees it after the first.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import torch
from torch import nn
from transformers import DynamicCache

from peftbook.models import model_dims
from peftbook.surgery import (add_forward_pre_hook, applied_config, copy_state_checked, extend_attention_mask,
                              forward_kwargs, has_values, key_value_layout, require_key_value_cache,
                              set_applied_config, trial_run)


INIT_CHOICES = ("random", "vocab")


@dataclass
class PrefixTuningConfig:
    method: ClassVar[str] = "prefix_tuning"
    num_virtual_tokens: int = 20  # prefix length; 10 for table-to-text, 200 for summarization in the paper
    prefix_projection: bool = False  # train P = MLP(P'): the paper's fix for unstable optimisation (Sec. 4.3)
    projection_hidden_size: int = 512  # the MLP's hidden width (512 in the paper)
    init: str = "random"  # "random": N(0, 1), HF PEFT's; "vocab": the model's own keys/values of real tokens

    def validate(self) -> None:
        for name in ("num_virtual_tokens", "projection_hidden_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name}={value!r} is not allowed; it must be a positive integer")
        if self.init not in INIT_CHOICES:
            raise ValueError(f"init={self.init!r} is not allowed; allowed: {', '.join(INIT_CHOICES)}")
        if self.init == "vocab" and self.prefix_projection:
            raise ValueError("init='vocab' sets the prefix itself, but with prefix_projection=True the prefix is an "
                             "MLP's output: use init='random' with the projection, or prefix_projection=False")


class PrefixEncoder(nn.Module):
    """Produces the flat prefix ``(n, sum over layers of key + value widths)``: a plain parameter, or ``MLP(P')``.

    ``layout``: per layer ``(key heads, key size, value heads, value size)`` (``surgery.key_value_layout``),
    None for a hybrid's recurrent layers (they get no prefix); for a uniform model the width is
    ``layers * 2 * kv_heads * head_dim``, HF PEFT's.
    """

    def __init__(self, num_virtual_tokens: int, layout: list[tuple[int, int, int, int]],
                 projection_hidden_size: int | None, device=None):
        super().__init__()
        self.layout = [None if layer is None else tuple(layer) for layer in layout]
        attention = [layer for layer in self.layout if layer is not None]
        width = sum(kh * kd + vh * vd for kh, kd, vh, vd in attention)
        kv_dim = attention[0][0] * attention[0][1]  # P's width: the first layer's keys (HF PEFT's token_dim)
        # drawn on the CPU generator and then placed, so a seed gives the same prefix on every device
        if projection_hidden_size is None:
            self.prefix = nn.Parameter(torch.randn(num_virtual_tokens, width).to(device))  # (n, width)
        else:
            self.embedding = nn.Parameter(torch.randn(num_virtual_tokens, kv_dim).to(device))  # P': (n, kv_dim)
            self.mlp = nn.Sequential(nn.Linear(kv_dim, projection_hidden_size), nn.Tanh(),
                                     nn.Linear(projection_hidden_size, width))
            if device is not None and torch.device(device).type != "cpu":  # made on the CPU already
                self.mlp.to(device)

    def forward(self) -> torch.Tensor:
        return self.mlp(self.embedding) if hasattr(self, "mlp") else self.prefix


def inject(model: nn.Module, config: PrefixTuningConfig) -> None:
    tokens = None
    if config.init == "vocab":  # drawn first, so the caller's seed alone decides them
        embedding = model.get_input_embeddings().weight  # drawn on the CPU generator, then placed
        tokens = torch.randint(0, embedding.shape[0], (1, config.num_virtual_tokens)).to(embedding.device)
    require_key_value_cache(model, "prefix tuning", every_layer=False)  # the prefix is keys and values
    hidden = config.projection_hidden_size if config.prefix_projection else None
    layout = key_value_layout(model, "prefix tuning")  # what each layer's attention writes to the cache
    model.prefix_encoder = PrefixEncoder(config.num_virtual_tokens, layout, hidden,
                                         device=model.get_input_embeddings().weight.device)
    if tokens is not None and has_values(model):  # (the simulator's fake weights: any start will do)
        with torch.no_grad():
            model.prefix_encoder.prefix.copy_(own_key_values(model, tokens, layout))
    for layer in checkpointed_layers(model):  # they keep the (read-only, see _insert_prefix) cache
        layer._can_checkpoint_with_cache = True
    add_forward_pre_hook(model, _insert_prefix)
    set_applied_config(model, config)  # the hook reads it; apply() sets it again, or undoes all if this raises
    if not has_values(model):  # the memory simulator's fake weights: the trial below needs numbers
        return
    ids = torch.ones(1, 2, dtype=torch.long, device=model.get_input_embeddings().weight.device)
    try:  # a model whose attention takes its cache its own way (dory's looped layers) fails here, not later
        with trial_run(model):
            model(input_ids=ids, attention_mask=torch.ones_like(ids))
    except Exception as error:  # noqa: BLE001
        raise ValueError(f"prefix tuning cannot be applied to {model.config.model_type}: a forward with the prefix "
                         f"in its cache fails ({type(error).__name__}: {str(error).splitlines()[0][:80]})") from None
    if None in layout and not decoding_agrees(model):
        raise ValueError(f"prefix tuning cannot be applied to {model.config.model_type}: with the prefix in its "
                         "attention layers only, its recurrent layers decode differently from a full forward")


def own_key_values(model: nn.Module, tokens: torch.Tensor, layout: list) -> torch.Tensor:
    """The flat ``(n, width)`` prefix that holds what the frozen model itself writes to its cache for
    ``tokens`` (1, n): Li & Liang's initialisation "with activations of real words", which they found far
    better than a random one when data is scarce."""
    cache = DynamicCache(config=model.config)
    with trial_run(model):  # called before the hook is on: the plain model's own keys and values
        model(input_ids=tokens, attention_mask=torch.ones_like(tokens), cache=cache, use_cache=True)
    parts, n = [], tokens.shape[1]
    for shape, layer in zip(layout, cache.layers):
        if shape is not None:  # (1, heads, n, size) -> (n, heads * size), keys then values, as prefix_key_values reads
            parts += [t[0].permute(1, 0, 2).reshape(n, -1).float() for t in (layer.keys, layer.values)]
    return torch.cat(parts, dim=1)


def decoding_agrees(model: nn.Module) -> bool:
    """Whether decoding a third token from the KV cache of two gives the logits of a full three-token forward
    (a hybrid's recurrent layers must take the prefix's longer mask the same way in both)."""
    ids = torch.tensor([[3, 4, 5]], device=model.get_input_embeddings().weight.device)
    with trial_run(model):
        full = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:, -1]
        first = model(input_ids=ids[:, :2], attention_mask=torch.ones_like(ids[:, :2]), use_cache=True)
        cache = getattr(first, "past_key_values", None) or getattr(first, "cache", None)
        if cache is None:  # it keeps its state to itself (recurrent_gemma): nothing to decode from
            return False
        step = model(input_ids=ids[:, 2:], attention_mask=torch.ones_like(ids), cache=cache,
                     use_cache=True).logits[:, -1]
    return torch.allclose(full, step, atol=1e-4, rtol=1e-3)


def prefix_key_values(model: nn.Module, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer, the (keys, values) prefix, each of shape (B, heads, n, size) as that layer's cache holds
    them; None for a recurrent layer."""
    flat = model.prefix_encoder().to(model.get_input_embeddings().weight.dtype)  # (n, width)
    n, start, pairs = flat.shape[0], 0, []
    for layer in model.prefix_encoder.layout:  # per attention layer: its keys, then its values
        if layer is None:
            pairs.append(None)
            continue
        kh, kd, vh, vd = layer
        keys = flat[:, start:start + kh * kd].view(n, kh, kd)
        values = flat[:, start + kh * kd:start + kh * kd + vh * vd].view(n, vh, vd)
        start += kh * kd + vh * vd
        pairs.append(tuple(t.permute(1, 0, 2).unsqueeze(0).expand(batch_size, -1, -1, -1) for t in (keys, values)))
    return pairs


def _insert_prefix(model: nn.Module, args: tuple, kwargs: dict):
    """Forward pre-hook: make sure the KV cache starts with the prefix; shift mask and positions."""
    kwargs = forward_kwargs(model, args, kwargs)
    cache = kwargs.pop("past_key_values", None)  # the name before transformers 5
    cache = kwargs.get("cache") if cache is None else cache
    inputs = kwargs.get("input_ids") if kwargs.get("input_ids") is not None else kwargs.get("inputs_embeds")
    n = applied_config(model).num_virtual_tokens
    if checkpointing_now(model):
        if body_drops_cache(model):
            raise ValueError(f"prefix tuning cannot train {model.config.model_type} with gradient checkpointing: "
                             "its model body drops the KV cache that carries the prefix whenever checkpointing is "
                             "on; train without checkpointing (or use prompt tuning / LoRA with it)")
        if reentrant_checkpointing(model):
            raise ValueError("prefix tuning needs non-reentrant gradient checkpointing: enable it with "
                             "gradient_checkpointing_kwargs={'use_reentrant': False} (transformers' default)")
        if cache is not None:
            raise ValueError("prefix tuning with gradient checkpointing: a training forward takes no KV cache "
                             "(the checkpointed layers would replay it); call the model without past_key_values")
        cache = prefix_cache(model, inputs.shape[0])
        for layer, shape in zip(cache.layers, model.prefix_encoder.layout):
            if shape is not None:  # a layer holding a prefix; a hybrid's recurrent layers are left as they are
                keep_only_prefix(layer)
    else:
        if cache is None:
            cache = DynamicCache(config=model.config)
        if cache.get_seq_length() == 0:  # a new cache, or the empty one generate() made: the prefill step
            if not isinstance(cache, DynamicCache):
                raise ValueError(f"prefix tuning needs a DynamicCache, got {type(cache).__name__}; "
                                 "use generate() without cache_implementation")
            fill_prefix(cache, model, inputs.shape[0])
    kwargs["cache"] = cache
    kwargs["attention_mask"] = extend_attention_mask(kwargs.get("attention_mask"), n)
    if kwargs.get("position_ids") is not None:  # generate() counts from 0; the prefix holds 0..n-1
        kwargs["position_ids"] = kwargs["position_ids"] + n
    return (), kwargs


def prefix_cache(model: nn.Module, batch_size: int) -> DynamicCache:
    """A new cache that holds the prefix in every layer that keeps keys and values."""
    cache = DynamicCache(config=model.config)
    fill_prefix(cache, model, batch_size)
    return cache


def fill_prefix(cache: DynamicCache, model: nn.Module, batch_size: int) -> None:
    for layer, pair in enumerate(prefix_key_values(model, batch_size)):
        if pair is not None:
            cache.update(*pair, layer)


def checkpointed_layers(model: nn.Module) -> list[nn.Module]:
    """The modules transformers can checkpoint (its ``GradientCheckpointingLayer``: the decoder layers)."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    return [module for module in model.modules() if isinstance(module, GradientCheckpointingLayer)]


def checkpointing_now(model: nn.Module) -> bool:
    """Whether this forward's decoder layers will be checkpointed (transformers' own condition)."""
    return model.training and torch.is_grad_enabled() and any(
        getattr(layer, "gradient_checkpointing", False) for layer in checkpointed_layers(model))


def body_drops_cache(model: nn.Module) -> bool:
    """Whether the model body itself passes no cache to its layers while checkpointing (gpt2, bloom, falcon
    in transformers 5: ``cache if not (self.gradient_checkpointing and self.training) else None``)."""
    import inspect

    source = inspect.getsource(type(model.base_model).forward)
    return "gradient_checkpointing and self.training" in source


def reentrant_checkpointing(model: nn.Module) -> bool:
    """Whether the checkpointed layers use ``torch.utils.checkpoint(..., use_reentrant=True)``."""
    functions = [getattr(layer, "_gradient_checkpointing_func", None) for layer in checkpointed_layers(model)
                 if getattr(layer, "gradient_checkpointing", False)]
    return any(getattr(f, "keywords", {}).get("use_reentrant", False) for f in functions if f is not None)


def keep_only_prefix(cache_layer) -> None:
    """Make one cache layer read-only: ``update`` returns ``[prefix | new]`` and keeps only the prefix.

    A checkpointed decoder layer runs twice (forward, then backward's replay); both runs then see the
    same keys and values. The layer's state is restored whole, whatever its class keeps (sliding windows).
    """
    update = cache_layer.update

    def update_and_forget(*args, **kwargs):
        state = dict(vars(cache_layer))
        try:
            return update(*args, **kwargs)
        finally:
            vars(cache_layer).clear()
            vars(cache_layer).update(state)

    cache_layer.update = update_and_forget


def fold(model: nn.Module) -> nn.Module:
    """Replace the reparameterisation MLP by the prefix it produces (same outputs, fewer parameters)."""
    encoder = model.prefix_encoder
    if not hasattr(encoder, "mlp"):
        return model
    folded = PrefixEncoder(encoder.embedding.shape[0], encoder.layout, None, device=encoder.embedding.device)
    with torch.no_grad():
        folded.prefix.copy_(encoder())
    model.prefix_encoder = folded
    set_applied_config(model, replace(applied_config(model), prefix_projection=False))
    return model


def _layers_and_kv_dim(model_config) -> tuple[int, int]:
    dims = model_dims(model_config)
    return dims["num_layers"], dims["num_kv_heads"] * dims["head_dim"]


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    # Always the folded prefix (HF PEFT's key and layout): the MLP is a training device only.
    return {"prompt_embeddings": model.prefix_encoder().detach()}


def load_adapter_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    fold(model)  # the saved tensor is the MLP's output
    copy_state_checked({"prompt_embeddings": model.prefix_encoder.prefix.data}, state, "prefix tuning")


def num_trainable(model_config, config: PrefixTuningConfig) -> int:
    num_layers, kv_dim = _layers_and_kv_dim(model_config)
    width = num_layers * 2 * kv_dim
    if not config.prefix_projection:
        return config.num_virtual_tokens * width
    hidden = config.projection_hidden_size
    return config.num_virtual_tokens * kv_dim + (kv_dim * hidden + hidden) + (hidden * width + width)


def peft_adapter_config(model: nn.Module, config: PrefixTuningConfig) -> dict:
    heads, size = next(layer for layer in model.prefix_encoder.layout if layer)[:2]  # HF PEFT: all like the first
    kv_dim = heads * size
    return {
        "peft_type": "PREFIX_TUNING", "task_type": "CAUSAL_LM", "inference_mode": True,
        "base_model_name_or_path": getattr(model.config, "_name_or_path", None) or None,
        "num_virtual_tokens": config.num_virtual_tokens, "num_layers": len(model.prefix_encoder.layout),
        "token_dim": kv_dim, "num_attention_heads": heads, "encoder_hidden_size": kv_dim,
        "num_transformer_submodules": 1,
        "prefix_projection": False,  # what we save is the folded prefix, whatever the training used
    }


def hf_peft_config(model: nn.Module, config: PrefixTuningConfig):
    """The same prefix as a ``peft.PrefixTuningConfig`` (for comparisons; needs ``peft``)."""
    import peft

    return peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=config.num_virtual_tokens,
                                   prefix_projection=config.prefix_projection,
                                   encoder_hidden_size=config.projection_hidden_size)
