"""Every PEFT method behind one small surface.

Each trainable method is one file in this package that defines:

* a ``@dataclass`` config with a class attribute ``method`` (its registry name) and a
  ``validate()`` that raises ``ValueError`` naming the bad value and what is allowed;
* ``inject(model, config)``: adds the method's modules/parameters to ``model`` in place;
* ``adapter_state(model) -> dict[str, Tensor]``: what ``save_adapter`` writes (HF PEFT key names
  where the method is PEFT-compatible);
* ``load_adapter_state(model, state)``: the inverse, raising on a shape mismatch;
* ``num_trainable(model_config, config) -> int``: the closed-form count of trainable parameters;
* optionally ``peft_adapter_config(model, config) -> dict``: HF PEFT's ``adapter_config.json``.

The functions here (``apply``, ``trainable_parameters``, ``save_adapter``, ``load_adapter``,
``merge``) do the shared bookkeeping so that method files only hold the method.
"""
from __future__ import annotations

import importlib
import json
from dataclasses import asdict, fields
from pathlib import Path

import torch
from torch import nn

# registry name -> module path; filled as method files land
_METHOD_MODULES = {
    "prompt_tuning": "peftbook.methods.prompt_tuning",
    "prefix_tuning": "peftbook.methods.prefix_tuning",
    "llama_adapter": "peftbook.methods.llama_adapter",
    "lora": "peftbook.methods.lora",
    "qlora": "peftbook.methods.qlora",
    "full": "peftbook.methods.full",
}
TRAINABLE_METHODS = tuple(_METHOD_MODULES)
ALL_METHODS = ("few_shot",) + TRAINABLE_METHODS
CONFIG_ATTR = "peftbook_config"


def method_module(name: str):
    if name not in _METHOD_MODULES:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(TRAINABLE_METHODS)}")
    return importlib.import_module(_METHOD_MODULES[name])


def config_class(name: str):
    """The config dataclass of a method, e.g. ``config_class("lora") is LoRAConfig``."""
    module = method_module(name)
    for value in vars(module).values():
        if isinstance(value, type) and getattr(value, "method", None) == name and hasattr(value, "__dataclass_fields__"):
            return value
    raise RuntimeError(f"method module {module.__name__} defines no config with method={name!r}")


def make_config(name: str, **overrides):
    """Build a method's config by name; unknown fields raise naming the allowed ones."""
    cls = config_class(name)
    allowed = {f.name for f in fields(cls)}
    unknown = set(overrides) - allowed
    if unknown:
        raise ValueError(f"{cls.__name__} has no field(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    return cls(**overrides)


def apply(model: nn.Module, config) -> nn.Module:
    """Inject a method into ``model`` (in place) and leave only its parameters trainable.

    Applying a second method (or the same one twice) raises: unwrap by reloading the base.
    """
    name = getattr(config, "method", None)
    module = method_module(name)
    if getattr(model, CONFIG_ATTR, None) is not None:
        raise ValueError(f"a method ({getattr(model, CONFIG_ATTR).method}) is already applied to this model; "
                         "load a fresh base model to apply another")
    config.validate()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    module.inject(model, config)
    setattr(model, CONFIG_ATTR, config)
    return model


def applied_config(model: nn.Module):
    return getattr(model, CONFIG_ATTR, None)


def trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; 4-bit packed weights count as their logical size."""
    trainable = total = 0
    for parameter in model.parameters():
        count = parameter.numel()
        quant_state = getattr(parameter, "quant_state", None)
        if quant_state is not None:  # bitsandbytes Params4bit: two 4-bit values per stored byte
            count = int(torch.Size(quant_state.shape).numel())
        total += count
        if parameter.requires_grad:
            trainable += count
    return trainable, total


def save_adapter(model: nn.Module, directory) -> Path:
    """Write the applied method's parameters (safetensors) and config (JSON) to ``directory``.

    LoRA, prompt tuning and prefix tuning also write HF PEFT's ``adapter_config.json``, so the
    folder loads with ``peft.PeftModel.from_pretrained``.
    """
    from safetensors.torch import save_file

    config = applied_config(model)
    if config is None:
        raise ValueError("no peftbook method is applied to this model; call peftbook.apply(model, config) first")
    module = method_module(config.method)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in module.adapter_state(model).items()}
    save_file(state, str(directory / "adapter_model.safetensors"))
    meta = {"method": config.method, "config": asdict(config), "base_model": _base_name(model)}
    (directory / "peftbook_adapter.json").write_text(json.dumps(meta, indent=2, default=str))
    if hasattr(module, "peft_adapter_config"):
        peft_config = module.peft_adapter_config(model, config)
        (directory / "adapter_config.json").write_text(json.dumps(peft_config, indent=2))
    return directory


def load_adapter(base_model: nn.Module, directory) -> nn.Module:
    """Apply the saved method to ``base_model`` and load its parameters; returns the model."""
    from safetensors.torch import load_file

    directory = Path(directory)
    meta_path = directory / "peftbook_adapter.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"{directory} holds no peftbook_adapter.json: not an adapter saved by save_adapter")
    meta = json.loads(meta_path.read_text())
    config = make_config(meta["method"], **meta["config"]) if meta["config"] else make_config(meta["method"])
    apply(base_model, config)
    state = load_file(str(directory / "adapter_model.safetensors"))
    method_module(config.method).load_adapter_state(base_model, state)
    return base_model


def merge(model: nn.Module, unload: bool = False) -> nn.Module:
    """Fold LoRA/QLoRA updates into the base weights. See lora.merge.

    ``unload=True`` also removes the LoRA wrappers (like HF PEFT's ``merge_and_unload``): the result is
    a plain model that runs at exactly the base's cost, but can no longer be unmerged or saved as an
    adapter. Without it the wrappers stay (one extra call per layer) and ``unmerge`` restores the base.
    """
    config = applied_config(model)
    if config is None or config.method not in ("lora", "qlora"):
        raise ValueError("merge() applies to LoRA and QLoRA only; "
                         f"this model has {getattr(config, 'method', 'no method')}")
    method_module(config.method).merge(model)
    if unload:
        method_module("lora").unload(model)
        delattr(model, CONFIG_ATTR)
    return model


def unmerge(model: nn.Module) -> nn.Module:
    config = applied_config(model)
    if config is None or config.method not in ("lora", "qlora"):
        raise ValueError("unmerge() applies to LoRA and QLoRA only")
    return method_module(config.method).unmerge(model)


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


def _base_name(model: nn.Module) -> str:
    return str(getattr(getattr(model, "config", None), "_name_or_path", ""))
