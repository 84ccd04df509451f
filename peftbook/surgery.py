"""Model surgery: the few operations every method performs on a ``transformers`` model.

Methods change a model in three ways, and each way is written once, here:

* **swap a module** for a wrapper (LoRA around a linear layer, LLaMA-Adapter around an attention,
  QLoRA's 4-bit layer instead of a linear one): ``replace_module``;
* **rewrite a forward call** (prompt and prefix tuning prepend tokens, so the attention mask grows
  and the call's positional arguments are needed by name): ``add_forward_pre_hook``,
  ``forward_kwargs``, ``extend_attention_mask``;
* **remember what was applied**: the method's config sits on the model under one attribute, read
  and written only through ``applied_config`` / ``set_applied_config``; the hooks a method adds are
  kept with it, so ``remove_hooks`` can take them off again.

It also knows the shapes of a decoder layer's linear layers (``linear_shapes``, for closed-form
parameter and memory counts) and which layers a 4-bit base quantizes (``quantizable_linears``).
"""
from __future__ import annotations

from contextlib import contextmanager

import inspect

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from peftbook.models import layers_path, model_dims

CONFIG_ATTRIBUTE = "peftbook_config"  # the applied method's config, on the model
HOOKS_ATTRIBUTE = "peftbook_hooks"  # the handles of the forward hooks a method registered


# -- what is applied -----------------------------------------------------------------------------
def applied_config(model: nn.Module):
    """The config of the method applied to ``model`` (``peftbook.apply``), or None."""
    return getattr(model, CONFIG_ATTRIBUTE, None)


def set_applied_config(model: nn.Module, config) -> None:
    """Record ``config`` as the applied method's; ``None`` removes the record."""
    if config is None:
        if hasattr(model, CONFIG_ATTRIBUTE):
            delattr(model, CONFIG_ATTRIBUTE)
        return
    setattr(model, CONFIG_ATTRIBUTE, config)


def snapshot(model: nn.Module) -> list:
    """What ``restore`` needs to undo a failed method injection: every module's attributes, its children,
    parameters, buffers and hooks (shallow copies: the tensors themselves are not copied), and which
    parameters were trainable."""
    modules = []
    for module in model.modules():
        attributes = dict(module.__dict__)
        containers = {key: dict(value) for key, value in attributes.items() if isinstance(value, dict)}
        modules.append((module, attributes, containers))
    return [modules, [(p, p.requires_grad) for p in model.parameters()]]


def restore(state: list) -> None:
    """Put every module of a ``snapshot`` back as it was (replaced layers, added hooks and attributes)."""
    modules, flags = state
    for module, attributes, containers in modules:
        for key in set(module.__dict__) - set(attributes):
            del module.__dict__[key]
        module.__dict__.update(attributes)
        for key, saved in containers.items():
            container = module.__dict__[key]
            container.clear()
            container.update(saved)
    for parameter, requires_grad in flags:
        parameter.requires_grad_(requires_grad)


def add_forward_pre_hook(model: nn.Module, hook) -> None:
    """``model.register_forward_pre_hook(hook, with_kwargs=True)``, keeping the handle on the model."""
    handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    handles = getattr(model, HOOKS_ATTRIBUTE, None)
    if handles is None:
        handles = []
        setattr(model, HOOKS_ATTRIBUTE, handles)
    handles.append(handle)


def add_forward_hook(model: nn.Module, hook) -> None:
    """``model.register_forward_hook(hook, with_kwargs=True)``, its handle kept like ``add_forward_pre_hook``'s."""
    handle = model.register_forward_hook(hook, with_kwargs=True)
    if getattr(model, HOOKS_ATTRIBUTE, None) is None:
        setattr(model, HOOKS_ATTRIBUTE, [])
    getattr(model, HOOKS_ATTRIBUTE).append(handle)


@contextmanager
def trial_run(model: nn.Module):
    """For the forwards a method runs at apply to check a model: in eval mode (no dropout), without
    gradients, and with the random state put back after, so a seeded run trains as it did before."""
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            yield
    finally:
        model.train(was_training)


def has_values(model: nn.Module) -> bool:
    """Whether the model's weights hold numbers: not on the meta device, not the memory simulator's fakes.
    The checks a method runs at apply (a trial forward, outputs compared) need them."""
    return holds_values(model.get_input_embeddings().weight)


def holds_values(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` holds numbers (not on the meta device, not a fake tensor of the simulator)."""
    from torch._subclasses.fake_tensor import is_fake

    return tensor.device.type != "meta" and not is_fake(tensor)


def remove_hooks(model: nn.Module) -> None:
    """Take off every hook ``add_forward_pre_hook`` put on ``model``."""
    for handle in getattr(model, HOOKS_ATTRIBUTE, None) or []:
        handle.remove()
    if hasattr(model, HOOKS_ATTRIBUTE):
        delattr(model, HOOKS_ATTRIBUTE)


def copy_state_checked(target: dict[str, torch.Tensor], state: dict[str, torch.Tensor], what: str) -> None:
    """Copy ``state`` into the tensors of ``target`` (same keys), naming both shapes on a mismatch."""
    missing = sorted(set(target) - set(state))
    unexpected = sorted(set(state) - set(target))
    if missing or unexpected:
        raise ValueError(f"{what}: saved adapter keys do not match this model "
                         f"(missing: {missing[:5]}, unexpected: {unexpected[:5]})")
    with torch.no_grad():
        for key, tensor in target.items():
            if tuple(tensor.shape) != tuple(state[key].shape):
                raise ValueError(f"{what}: {key} has shape {tuple(state[key].shape)} in the saved adapter "
                                 f"but {tuple(tensor.shape)} in this model (a different base?)")
            tensor.copy_(state[key].to(tensor.dtype))


# -- modules ----------------------------------------------------------------------------------------
def replace_module(model: nn.Module, name: str, new: nn.Module) -> nn.Module:
    """Put ``new`` where the submodule ``name`` (dotted) is; returns the module it replaced."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name)  # "" -> the model itself
    old = getattr(parent, child)
    setattr(parent, child, new)
    return old


def is_linear(module: nn.Module) -> bool:
    """A linear layer a method may wrap: ``nn.Linear`` (bitsandbytes' 4-bit one included) or gpt2's Conv1D.

    An ``nn.Linear`` subclass with a forward of its own counts only if it still computes ``x @ W.T + b``
    (falcon's FalconLinear does; llama4's router returns (scores, logits) and deepseek_v4's grouped output
    projection reshapes its input, so they are left alone): tried once on two random rows.
    """
    if isinstance(module, Conv1D):
        return True
    if not isinstance(module, nn.Linear):
        return False
    if type(module).forward is nn.Linear.forward or type(module).__module__.startswith("bitsandbytes."):
        return True
    if not hasattr(module, LINEAR_CHECKED):
        setattr(module, LINEAR_CHECKED, computes_linear(module))
    return getattr(module, LINEAR_CHECKED)


LINEAR_CHECKED = "peftbook_computes_linear"  # is_linear's answer for an nn.Linear subclass, kept on the module


def computes_linear(module: nn.Linear) -> bool:
    """Whether ``module(x)`` is ``x @ W.T + b`` on two random rows (on fake or meta weights: its shape)."""
    weight = module.weight
    rows = torch.randn(2, module.in_features, generator=torch.Generator().manual_seed(0))  # not the global RNG
    x = rows.to(dtype=weight.dtype, device=weight.device)
    try:
        with torch.no_grad():
            out = module(x)
    except Exception:  # noqa: BLE001 - a forward that wants more than one tensor is not a plain linear
        return False
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, module.out_features):
        return False
    if not holds_values(weight):
        return True
    with torch.no_grad():
        return torch.allclose(out, nn.functional.linear(x, weight, module.bias), atol=1e-4, rtol=1e-3)


def matches_suffix(name: str, target: str) -> bool:
    """Whether module ``name`` is ``target`` or ends with ``.target`` (how LoRA and HF PEFT match names)."""
    return name == target or name.endswith("." + target)


def quantizable_linears(model: nn.Module) -> list[str]:
    """The linear layers a 4-bit base quantizes: every one inside the decoder layers.

    Like ``transformers``' bitsandbytes integration, the embeddings and the output head stay in full
    precision. QLoRA's ``inject`` and the memory simulator both quantize exactly these.
    """
    prefix = layers_path(model) + "."
    return [name for name, module in model.named_modules() if name.startswith(prefix) and is_linear(module)]


def linear_shapes(model_config) -> dict[str, tuple[int, int]]:
    """(in, out) of every linear layer in one decoder layer, by name relative to the layer."""
    dims = model_dims(model_config)
    hidden, heads, kv = dims["hidden_size"], dims["num_heads"], dims["num_kv_heads"]
    q_size, kv_size = heads * dims["head_dim"], kv * dims["head_dim"]
    if model_config.model_type == "gpt2":
        inner = model_config.n_inner or 4 * hidden
        return {"attn.c_attn": (hidden, 3 * hidden), "attn.c_proj": (hidden, hidden),
                "mlp.c_fc": (hidden, inner), "mlp.c_proj": (inner, hidden)}
    inter = model_config.intermediate_size
    if model_config.model_type == "phi3":  # fused q/k/v and gate/up projections
        return {"self_attn.qkv_proj": (hidden, q_size + 2 * kv_size), "self_attn.o_proj": (q_size, hidden),
                "mlp.gate_up_proj": (hidden, 2 * inter), "mlp.down_proj": (inter, hidden)}
    return {"self_attn.q_proj": (hidden, q_size), "self_attn.k_proj": (hidden, kv_size),
            "self_attn.v_proj": (hidden, kv_size), "self_attn.o_proj": (q_size, hidden),
            "mlp.gate_proj": (hidden, inter), "mlp.up_proj": (hidden, inter), "mlp.down_proj": (inter, hidden)}


def cache_layer_kinds(model: nn.Module) -> list[str]:
    """Per decoder layer, the kind of KV-cache layer transformers gives it: ``DynamicLayer`` (keys and
    values), ``DynamicSlidingWindowLayer``, or a recurrent state (``LinearAttentionLayer``...)."""
    from transformers import DynamicCache

    return [type(layer).__name__ for layer in DynamicCache(config=model.config).layers]


def require_key_value_cache(model: nn.Module, method: str, every_layer: bool) -> None:
    """Refuse a model whose cache does not hold keys and values (in every layer, or in any)."""
    kinds = cache_layer_kinds(model)
    attention = [kind in ("DynamicLayer", "DynamicSlidingWindowLayer") for kind in kinds]
    if not (all(attention) if every_layer else any(attention)):
        others = sorted({kind for kind, ok in zip(kinds, attention) if not ok})
        raise ValueError(f"{method} cannot be applied to {model.config.model_type}: "
                         f"{'some' if any(attention) else 'all'} of its layers keep a recurrent state or an "
                         f"indexed cache ({', '.join(others)}), not plain keys and values")


def key_value_layout(model: nn.Module, method: str) -> list[tuple[int, int, int, int] | None]:
    """Per decoder layer, ``(key heads, key size, value heads, value size)`` of what its attention writes to
    the KV cache (None for a layer that keeps a recurrent state instead), read from a one-token forward
    rather than from the config, whose names and meanings vary: multi-query falcon keeps one head, mimo's
    values are narrower than its keys, gemma4's head size changes from layer to layer, deepseek's latent
    attention caches its compressed latents. Refuses a model that leaves the cache it is given empty
    (openai-gpt ignores it)."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    ids = torch.ones(1, 1, dtype=torch.long, device=model.get_input_embeddings().weight.device)
    try:
        with trial_run(model):
            model(input_ids=ids, cache=cache, use_cache=True)
    except Exception as error:  # noqa: BLE001 - any failure here means: no usable KV cache
        raise ValueError(f"{method} cannot be applied to {model.config.model_type}: a forward with a KV cache "
                         f"fails ({type(error).__name__}: {str(error)[:80]})") from None
    layout = []
    for layer in cache.layers:
        keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
        filled = isinstance(keys, torch.Tensor) and keys.dim() == 4 and keys.shape[-2] > 0
        layout.append((keys.shape[1], keys.shape[-1], values.shape[1], values.shape[-1]) if filled else None)
    if not any(layout):
        raise ValueError(f"{method} cannot be applied to {model.config.model_type}: its attention does not "
                         "write keys and values to the KV cache it is given")
    return layout


def linears_used_directly(model: nn.Module, names: list[str]) -> list[str]:
    """Those of ``names`` that a forward of two tokens, in eval and in train mode, does not call: the model
    reads their ``weight`` itself (mamba's training path), so no wrapper or 4-bit layer can stand in for them."""
    called_per_mode: list[set[nn.Module]] = []  # the modules each forward called
    hooks = [model.get_submodule(name).register_forward_hook(lambda module, *_: called_per_mode[-1].add(module))
             for name in names]
    was_training = model.training
    ids = torch.ones(1, 2, dtype=torch.long, device=model.get_input_embeddings().weight.device)
    try:
        for mode in (False, True):  # the training path only runs with gradients on (mamba)
            called_per_mode.append(set())
            with torch.set_grad_enabled(mode):
                model.train(mode)(input_ids=ids, labels=ids)  # as a training step calls it
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    called = set.intersection(*called_per_mode)
    return [name for name in names if model.get_submodule(name) not in called]


# -- forward calls ----------------------------------------------------------------------------------
def forward_kwargs(model: nn.Module, args: tuple, kwargs: dict) -> dict:
    """The call's arguments all by name (``model(ids)`` -> ``{"input_ids": ids}``)."""
    if not args:
        return dict(kwargs)
    names = list(inspect.signature(model.forward).parameters)
    return {**dict(zip(names, args)), **kwargs}


def extend_attention_mask(mask: torch.Tensor | None, n: int) -> torch.Tensor | None:
    """Prepend ``n`` ones (virtual tokens are always visible) to a 2D attention mask."""
    if mask is None:
        return None
    if mask.dim() != 2:
        raise ValueError("prompt and prefix tuning need a 2D attention mask (batch, length), "
                         f"got shape {tuple(mask.shape)}")
    return torch.cat([mask.new_ones(mask.shape[0], n), mask], dim=1)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) over the last dimension: the rotation of rotary embeddings."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


ROTARY_STYLES = ("halves", "halves_short", "halves_backwards", "pairs", "pairs_from_half")


def rotate_pairs(x: torch.Tensor) -> torch.Tensor:
    """(x0, x1, x2, x3, ..) -> (-x1, x0, -x3, x2, ..): rotary embeddings over neighbouring channels."""
    return torch.stack((-x[..., 1::2], x[..., ::2]), dim=-1).flatten(-2)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, style: str = "halves") -> torch.Tensor:
    """Rotary position embedding (Su et al. 2021, arXiv 2104.09864) of ``x`` (B, heads, T, head_dim).

    ``cos``/``sin`` are what a decoder layer receives as ``position_embeddings``: (B, T, rot). Where
    ``rot`` < head_dim (partial rotary), only the first ``rot`` channels turn, as those models do.
    ``style``, the channels that turn together, as the models write it: ``"halves"`` (channel i with
    i + rot/2: llama), ``"halves_short"`` (the same with cos/sin given once for both halves: gpt_oss),
    ``"halves_backwards"`` (the halves turned the other way: nanochat), ``"pairs"`` (neighbouring
    channels, cos/sin given per channel: cohere, helium), ``"pairs_from_half"`` (neighbouring channels,
    each frequency taken from the first half of cos/sin: glm).
    """
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # (B, 1, T, rot)
    if style == "halves_short":
        cos, sin = torch.cat([cos, cos], dim=-1), torch.cat([sin, sin], dim=-1)
    if style == "pairs_from_half":
        half = cos.shape[-1] // 2
        cos, sin = cos[..., :half].repeat_interleave(2, dim=-1), sin[..., :half].repeat_interleave(2, dim=-1)
    rot = cos.shape[-1]
    turned, kept = x[..., :rot], x[..., rot:]
    rotation = rotate_pairs if style in ("pairs", "pairs_from_half") else rotate_half
    turned = turned * cos + rotation(turned) * (-sin if style == "halves_backwards" else sin)
    return torch.cat([turned, kept], dim=-1) if kept.shape[-1] else turned
