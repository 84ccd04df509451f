"""Every PEFT method behind one small surface, and the one registry that names them.

``METHODS`` is the registry: for each method its file, its config class, its training defaults on
the tiny base (per task where a task needs others), an optional builder of the same method in
Hugging Face PEFT (for comparisons) and what the closed-form memory estimate needs to know of it.
The CLI, the benchmark, the memory estimate and table, and the package root read it; nothing else
lists methods. **Adding a method** = one file in this package + one ``Method`` entry below.

A trainable method's file defines:

* a ``@dataclass`` config with a class attribute ``method`` (its registry name) and a
  ``validate()`` that raises ``ValueError`` naming the bad value and what is allowed;
* ``inject(model, config)``: adds the method's modules/parameters to ``model`` in place;
* ``adapter_state(model) -> dict[str, Tensor]``: what ``save_adapter`` writes (HF PEFT key names
  where the method is PEFT-compatible);
* ``load_adapter_state(model, state)``: the inverse, raising on a shape mismatch;
* ``num_trainable(model_config, config) -> int``: the closed-form count of trainable parameters;
* optionally ``peft_adapter_config(model, config) -> dict``: HF PEFT's ``adapter_config.json``,
  and ``hf_peft_config(model, config)``: the same method as a ``peft`` config object.

Few-shot prompting is in the registry too (it is a row of every comparison) but trains nothing:
it has a config and its own prompt builder and scorers, no ``inject``.

The functions here (``apply``, ``trainable_parameters``, ``save_adapter``, ``load_adapter``,
``merge``) do the shared bookkeeping so that method files only hold the method.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from types import ModuleType
from typing import Callable

import torch
from torch import nn

from peftbook.errors import AdapterError, ConfigError, OutputError, replace_directory
from peftbook.methods import few_shot, full, llama_adapter, lora, prefix_tuning, prompt_tuning, qlora
from peftbook.surgery import applied_config, restore, set_applied_config, snapshot


@dataclass(frozen=True)
class MemoryTraits:
    """What the closed-form memory estimate needs to know of a method (``memory/estimate.py``)."""

    input_tokens_field: str | None = None  # config field: virtual tokens prepended to the input
    kv_tokens_field: str | None = None  # config field: prefix tokens added to every layer's keys/values
    top_layers_field: str | None = None  # config field: only the top N layers get gradients
    linear_inputs: str = "none"  # which linear layers' inputs backward keeps: "none" | "targets" | "all"
    quantized_base: bool = False  # the frozen decoder linears are stored in 4 bits
    trains_base_weights: bool = False  # the trainable parameters are the base's own (none are added)


@dataclass(frozen=True)
class Method:
    """One registry entry."""

    name: str
    module: ModuleType  # the method's file
    config: type  # its config dataclass
    lr: float | None  # peak learning rate on the tiny base (chosen on validation); None: trains nothing
    defaults: dict = field(default_factory=dict)  # config fields the benchmark and the train CLI use
    task_overrides: dict = field(default_factory=dict)  # task -> {"config": {...}, "lr": ...}
    large_model: dict = field(default_factory=dict)  # {"config": ..., "lr": ...} on LARGE_MODEL_PARAMETERS and more
    hf_peft: Callable | None = None  # (model, config) -> the peft config of the same method
    memory: MemoryTraits = MemoryTraits()
    cuda_optimizer: str = "adamw"  # what train's optimizer="auto" takes on CUDA (QLoRA: paged 8-bit AdamW)
    unchanged_at_start: bool = False  # applying it leaves the outputs as they were (zero-init parts)

    @property
    def trains(self) -> bool:
        return self.lr is not None

    @property
    def merges(self) -> bool:
        """Whether the trained update can be folded into the base weights (``merge``: LoRA, QLoRA)."""
        return hasattr(self.module, "merge")


# Learning rates differ a lot between methods: a prompt of a few vectors moved through a frozen
# network needs a far larger step than LoRA (Lester et al. use 0.3 with Adafactor), and full
# fine-tuning, which moves every weight, the smallest. Each was chosen with
# ``bench.tune_learning_rates`` on the validation split (never test); benchmarks/README.md records
# those sweeps. data2text has to copy names and values into the sentence: LoRA/QLoRA there adapt
# every linear layer (as the QLoRA paper recommends, arXiv 2305.14314 Sec. 4) without dropout, and
# full fine-tuning takes a larger step. sentiment3's learning rates were chosen the same way, in its
# data-efficiency setting (64 training examples, 200 steps); where the best one-seed rate sat next to
# a diverging one (LoRA, QLoRA), by the mean over 3 seeds.
#
# A pretrained model of 50M parameters and more is another regime: it already speaks, and what would move
# the 3.3M tiny base by the right amount may knock it off its language. ``large_model`` holds each
# method's settings for it, chosen on SmolLM2-135M-Instruct (sentiment3 validation, 20 steps of 16, the
# bench's schedule; where two rates were within noise, by the mean over 3 seeds: benchmarks/smollm2_lr.py,
# its table in benchmarks/README.md). They replace the task's learning rate (the tiny's sentiment3 rates
# diverge here: full fine-tuning at 1e-3 0.403, 3e-4 0.950). Prefix tuning starts from the model's own
# keys and values of real tokens: from N(0, 1) ones in all 30 layers it stays near chance (0.40).
LARGE_MODEL_PARAMETERS = 50_000_000
_ALL_LINEAR = {"config": {"targets": "all-linear", "dropout": 0.0}}
METHODS: dict[str, Method] = {m.name: m for m in (
    Method("few_shot", few_shot, few_shot.FewShotConfig, lr=None, defaults={"shots": 8}),
    Method("prompt_tuning", prompt_tuning, prompt_tuning.PromptTuningConfig, lr=1e-1,
           defaults={"num_virtual_tokens": 20, "init": "vocab"}, task_overrides={"sentiment3": {"lr": 1e-3}},
           large_model={"lr": 1e-2}, hf_peft=prompt_tuning.hf_peft_config,
           memory=MemoryTraits(input_tokens_field="num_virtual_tokens")),
    Method("prefix_tuning", prefix_tuning, prefix_tuning.PrefixTuningConfig, lr=1e-1,
           defaults={"num_virtual_tokens": 10}, large_model={"config": {"init": "vocab"}, "lr": 3e-2},
           hf_peft=prefix_tuning.hf_peft_config,
           memory=MemoryTraits(kv_tokens_field="num_virtual_tokens")),
    # all 4 layers of the tiny base (the paper: the top 30 of LLaMA-7B's 32)
    Method("llama_adapter", llama_adapter, llama_adapter.LlamaAdapterConfig, lr=3e-2,
           defaults={"adapter_len": 10, "adapter_layers": llama_adapter.PAPER_FRACTION}, task_overrides={"sentiment3": {"lr": 1e-1}},
           large_model={"lr": 1e-2}, hf_peft=llama_adapter.hf_peft_config,
           memory=MemoryTraits(top_layers_field="adapter_layers"), unchanged_at_start=True),
    Method("lora", lora, lora.LoRAConfig, lr=3e-3, defaults={"rank": 8, "alpha": 16, "dropout": 0.05},
           task_overrides={"data2text": _ALL_LINEAR}, large_model={"lr": 3e-3}, hf_peft=lora.hf_peft_config,
           memory=MemoryTraits(linear_inputs="targets"), unchanged_at_start=True),
    Method("qlora", qlora, qlora.QLoRAConfig, lr=3e-3, defaults={"rank": 8, "alpha": 16, "dropout": 0.05},
           task_overrides={"data2text": _ALL_LINEAR, "sentiment3": {"lr": 1e-2}}, large_model={"lr": 3e-3},
           memory=MemoryTraits(linear_inputs="targets", quantized_base=True), cuda_optimizer="paged_adamw_8bit",
           unchanged_at_start=True),  # unchanged from the 4-bit base
    Method("full", full, full.FullFinetuneConfig, lr=3e-4,
           task_overrides={"data2text": {"lr": 2e-3}, "sentiment3": {"lr": 1e-3}}, large_model={"lr": 3e-4},
           memory=MemoryTraits(linear_inputs="all", trains_base_weights=True), unchanged_at_start=True),
)}
ALL_METHODS = tuple(METHODS)
TRAINABLE_METHODS = tuple(name for name, m in METHODS.items() if m.trains)
HF_PEFT_METHODS = tuple(name for name, m in METHODS.items() if m.hf_peft is not None)
# Training steps per task on the tiny base: data2text's copying skill appears late (see benchmarks/README.md)
DEFAULT_STEPS = {"sentiment": 600, "sentiment3": 200, "data2text": 1200}
OTHER_TASK_STEPS = 200


def get_method(name: str) -> Method:
    """The registry entry of ``name``; an unknown name raises listing the known ones."""
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; known: {', '.join(METHODS)}")
    return METHODS[name]


def trainable_method(name: str) -> Method:
    """Like ``get_method``, for a method that trains (few-shot does not)."""
    method = get_method(name)
    if not method.trains:
        raise ValueError(f"method {name!r} trains nothing (use `python -m peftbook fewshot`); "
                         f"trainable methods: {', '.join(TRAINABLE_METHODS)}")
    return method


def method_defaults(name: str, task=None, parameters: int | None = None) -> dict:
    """``{"config": {...}, "lr": ...}`` of method ``name`` for ``task`` (a name or a Task) on a base model of
    ``parameters`` parameters (``models.parameter_count``; None: the tiny base's defaults). A model of
    ``LARGE_MODEL_PARAMETERS`` or more takes the method's ``large_model`` settings over the task's."""
    method = get_method(name)
    override = method.task_overrides.get(getattr(task, "name", task), {})
    if parameters is not None and parameters >= LARGE_MODEL_PARAMETERS:
        override = {"config": {**override.get("config", {}), **method.large_model.get("config", {})},
                    "lr": method.large_model.get("lr", override.get("lr", method.lr))}
    return {"config": {**method.defaults, **override.get("config", {})}, "lr": override.get("lr", method.lr)}


def default_steps(task) -> int:
    """Training steps of ``task`` (a name or a Task) when none are given."""
    return DEFAULT_STEPS.get(getattr(task, "name", task), OTHER_TASK_STEPS)


def make_config(name: str, **overrides):
    """Build a method's config by name; unknown fields raise naming the allowed ones."""
    cls = get_method(name).config
    allowed = {f.name for f in fields(cls)}
    unknown = set(overrides) - allowed
    if unknown:
        raise ConfigError(f"{cls.__name__} has no field(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    return cls(**overrides)


def method_of(config) -> Method:
    """The trainable method a config instance belongs to; a clear error for anything else."""
    if isinstance(config, type):
        raise ValueError(f"apply() takes a config instance, not the class {config.__name__}: "
                         f"write {config.__name__}()")
    name = getattr(config, "method", None)
    if not isinstance(name, str) or name not in METHODS or not isinstance(config, METHODS[name].config):
        raise ValueError(f"{config!r} is not a method config; use one of "
                         + ", ".join(METHODS[m].config.__name__ for m in TRAINABLE_METHODS))
    return trainable_method(name)


def apply(model: nn.Module, config) -> nn.Module:
    """Inject a method into ``model`` (in place) and leave only its parameters trainable.

    Applying a second method (or the same one twice) raises: unwrap by reloading the base. A call that
    raises leaves the model as it was.
    """
    method = method_of(config)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"apply() takes a torch model first, got {type(model).__name__}")
    if applied_config(model) is not None:
        raise ValueError(f"a method ({applied_config(model).method}) is already applied to this model; "
                         "load a fresh base model to apply another")
    config.validate()
    before = snapshot(model)
    existing = set(model.modules())
    try:
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        method.module.inject(model, config)
        set_applied_config(model, config)
    except BaseException:
        restore(before)
        raise
    for module in model.modules():  # the method's new modules (LoRA's dropout...) follow the model's mode:
        if module not in existing:  # a model in eval mode stays deterministic after apply / load_adapter
            module.train(model.training)
    return model


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
    The folder is written under a temporary name and renamed: an earlier adapter there is replaced as a
    whole (no stale file stays), and a folder that holds anything else is refused.
    """
    from safetensors.torch import save_file

    config = applied_config(model)
    if config is None:
        raise ValueError("no peftbook method is applied to this model; call peftbook.apply(model, config) first")
    module = get_method(config.method).module
    if not str(directory).strip():
        raise ConfigError("save_adapter needs a folder name, got an empty one")
    directory = Path(directory)
    if directory.exists() and (not directory.is_dir() or (any(directory.iterdir())
                                                          and not (directory / "peftbook_adapter.json").exists())):
        raise OutputError(f"{str(directory)!r} exists and is not an adapter folder; save_adapter replaces only an "
                          "earlier adapter: choose another folder")
    directory.parent.mkdir(parents=True, exist_ok=True)
    temporary = directory.with_name(f".{directory.name}.tmp")
    if temporary.exists():
        shutil.rmtree(temporary)  # a crash's leftover
    temporary.mkdir()
    state = {k: v.detach().contiguous().cpu() for k, v in module.adapter_state(model).items()}
    save_file(state, str(temporary / "adapter_model.safetensors"))
    base_model = str(getattr(getattr(model, "config", None), "_name_or_path", ""))
    meta = {"method": config.method, "config": asdict(config), "base_model": base_model}
    (temporary / "peftbook_adapter.json").write_text(json.dumps(meta, indent=2, default=str))
    if hasattr(module, "peft_adapter_config"):
        peft_config = module.peft_adapter_config(model, config)
        (temporary / "adapter_config.json").write_text(json.dumps(peft_config, indent=2))
    return replace_directory(temporary, directory)


def load_adapter(base_model: nn.Module, directory) -> nn.Module:
    """Apply the saved method to ``base_model`` and load its parameters; returns the model.

    The folder is read and checked first; a call that raises leaves ``base_model`` as it was.
    """
    from safetensors.torch import load_file

    directory = Path(directory)
    meta_path = directory / "peftbook_adapter.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"{directory} holds no peftbook_adapter.json: not an adapter saved by save_adapter")
    weights_path = directory / "adapter_model.safetensors"
    if not weights_path.exists():
        raise AdapterError(f"{directory} holds no adapter_model.safetensors (an incomplete adapter folder)")
    try:
        meta = json.loads(meta_path.read_text())
        config = make_config(meta["method"], **(meta["config"] or {}))
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as error:
        raise AdapterError(f"{meta_path} is not a valid adapter description: {error}") from None
    try:
        state = load_file(str(weights_path))
    except Exception as error:  # safetensors' SafetensorError: truncated or not a safetensors file
        raise AdapterError(f"{weights_path} cannot be read ({type(error).__name__}: {error}); "
                           "the file is damaged or incomplete: save the adapter again") from None
    before = snapshot(base_model)
    apply(base_model, config)
    try:
        get_method(config.method).module.load_adapter_state(base_model, state)
    except BaseException as error:
        restore(before)
        if isinstance(error, ValueError) and not isinstance(error, AdapterError):
            raise AdapterError(str(error)) from None
        raise
    return base_model


def merge(model: nn.Module, unload: bool = False) -> nn.Module:
    """Fold LoRA/QLoRA updates into the base weights. See lora.merge.

    ``unload=True`` also removes the LoRA wrappers (like HF PEFT's ``merge_and_unload``): the result is
    a plain model that runs at exactly the base's cost, but can no longer be unmerged or saved as an
    adapter. Without it the wrappers stay (one extra call per layer) and ``unmerge`` restores the base.
    A merge that fails part-way leaves the model as it was (LoRA weights to one fp32 rounding, as
    ``unmerge``) and raises.
    """
    module = mergeable(model, "merge")
    wrappers = {wrapper: wrapper.base for wrapper in lora.lora_modules(model).values() if not wrapper.merged}
    state = snapshot(model)
    try:
        module.merge(model)
        if unload:
            lora.unload(model)
            set_applied_config(model, None)
            model.peftbook_unloaded = True  # so that unmerge() can say why it cannot
    except BaseException:  # a transaction: the model as it was (Ctrl-C and out-of-memory included)
        for wrapper, base in wrappers.items():
            if wrapper.merged and wrapper.base is base:  # LoRA added its update in place: subtract it
                wrapper.unmerge()
        restore(state)  # QLoRA's 4-bit bases, the wrappers unload took out, every flag
        raise
    return model


def unmerge(model: nn.Module) -> nn.Module:
    """Subtract the merged LoRA/QLoRA update again (not after ``merge(unload=True)``)."""
    return mergeable(model, "unmerge").unmerge(model)


def mergeable(model: nn.Module, verb: str) -> ModuleType:
    """The file of the method applied to ``model`` when it can merge (LoRA, QLoRA); else a clear error."""
    config = applied_config(model)
    mergeable_names = [name for name, m in METHODS.items() if m.merges]
    if config is None and getattr(model, "peftbook_unloaded", False):
        raise ValueError(f"{verb}() applies to {', '.join(mergeable_names)} only, and merge(unload=True) removed "
                         "this model's LoRA layers: it is a plain base model now (reload the base and the adapter)")
    if config is None or not get_method(config.method).merges:
        raise ValueError(f"{verb}() applies to {', '.join(mergeable_names)} only; "
                         f"this model has {getattr(config, 'method', 'no method')}")
    return get_method(config.method).module


__all__ = ["METHODS", "Method", "MemoryTraits", "ALL_METHODS", "TRAINABLE_METHODS", "HF_PEFT_METHODS",
           "DEFAULT_STEPS", "LARGE_MODEL_PARAMETERS", "get_method", "trainable_method", "method_defaults",
           "default_steps", "make_config", "apply", "applied_config", "trainable_parameters", "save_adapter",
           "load_adapter", "merge", "unmerge"]
