"""The options of a training step that change its memory, in one place for simulate, estimate, measure and the CLI.

``StepOptions(grad_checkpointing, optimizer, adapter_dtype, loss_chunk_tokens, device)``; the
defaults are what ``peftbook.train`` does on that device: no checkpointing, ``optimizer="auto"``
(``train.make_optimizer``: paged 8-bit AdamW for QLoRA on CUDA, ``torch.optim.AdamW`` otherwise),
adapters in the base's dtype, the whole LM head at once.

The optimizer names are ``train``'s; each resolves, on a device, to the implementation that runs
there (``resolve_optimizer``), because they differ in memory (PyTorch's docs of
``torch.optim.AdamW``, "Algorithm implementations": foreach "uses more peak memory ... because the
intermediates are a tensorlist vs just one tensor"; fused "is typically faster than" both):

====================  =================================================================================
``adamw``             ``torch.optim.AdamW()`` as ``train`` builds it: PyTorch picks ``foreach`` when every
                      parameter is on CUDA, the single-tensor for-loop on CPU
                      (``torch.optim.optimizer._default_to_fused_or_foreach``).
                      single-tensor: temporaries of one parameter at a time (``sqrt(v)`` and its
                      quotient, two of the largest parameter's size at most);
                      foreach: ``_foreach_sqrt`` over the whole list, one temporary the size of all
                      trainable parameters together.
``adamw_foreach``     ``foreach=True`` on any device (on CPU too: same list-wide temporaries).
``adamw_fused``       ``fused=True``: one kernel per parameter group updates in place, no temporaries.
``adamw_8bit``        bitsandbytes ``AdamW8bit``: both moments in uint8, one fp32 scale per 256 values
                      (parameters under 4096 values keep fp32 moments), updated in place by one kernel.
``paged_adamw_8bit``  the same in CUDA unified memory (``cudaMallocManaged``) for tensors of 1e5+
                      values: the driver may page them to CPU memory when the GPU runs out. The
                      simulator counts them as GPU memory (they live there while the GPU has room),
                      which is what ``torch.cuda.max_memory_allocated`` does *not* see on a real GPU.
``sgd``               ``torch.optim.SGD`` without momentum: no state.
``auto``              ``train``'s default: the method's ``cuda_optimizer`` on CUDA (QLoRA:
                      ``paged_adamw_8bit``, as the paper), ``adamw`` elsewhere.
====================  =================================================================================

``adapter_dtype``: ``"base"`` (the method's parameters in the base's dtype, as ``apply`` makes
them) or ``"fp32"`` (fp32 adapter weights on a 16-bit base, like HF PEFT's default
``autocast_adapter_dtype=True``; LoRA then casts each adapted layer's input to fp32, a copy that
backward keeps). ``loss_chunk_tokens``: compute the LM head and cross-entropy ``chunk_tokens``
tokens at a time (``peftbook.lm_loss.causal_lm_loss``) instead of materialising all the logits.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

from peftbook.errors import ConfigError

OPTIMIZERS = ("auto", "adamw", "adamw_foreach", "adamw_fused", "adamw_8bit", "paged_adamw_8bit", "sgd")
# what train builds for a choice (``training_optimizer``)
OPTIMIZER_IMPLEMENTATIONS = ("adamw_single_tensor", "adamw_foreach", "adamw_fused", "adamw_8bit",
                             "paged_adamw_8bit", "sgd")
# what each name runs on a device: (optimizer, implementation)
IMPLEMENTATIONS = ("adamw single-tensor", "adamw foreach", "adamw fused", "adamw_8bit", "paged_adamw_8bit",
                   "sgd single-tensor", "sgd foreach")
DEVICES = ("cuda", "cpu")
ADAPTER_DTYPES = ("base", "fp32")
# adapter_dtype="fp32" on a 16-bit base works for every method that adds parameters: those whose config
# has the field (LoRA, QLoRA, LLaMA-Adapter: ``with_adapter_dtype`` sets it, so the step runs as ``apply``
# builds it for ``train``), and prompt and prefix tuning, whose few parameters are fp32 whatever the base.


def with_adapter_dtype(method_config, options: "StepOptions"):
    """``method_config`` with ``adapter_dtype="fp32"`` where the options ask for it and the config has the
    field: the adapter is then built in fp32 by ``apply``, as a training run with that config has it."""
    import dataclasses

    if options.adapter_dtype == "fp32" and method_config is not None and hasattr(method_config, "adapter_dtype"):
        return dataclasses.replace(method_config, adapter_dtype="fp32")
    return method_config


@dataclass(frozen=True)
class StepOptions:
    """What a training step does besides the method, batch and dtype (see the module docstring)."""

    grad_checkpointing: bool = False  # recompute each decoder layer in backward: keep only layer inputs
    optimizer: str = "auto"  # one of OPTIMIZERS; "auto" = train's default on the device
    adapter_dtype: str = "base"  # "base" | "fp32" (fp32 adapter weights on a 16-bit base)
    loss_chunk_tokens: int | None = None  # LM head + cross-entropy this many tokens at a time; None: all at once
    device: str | None = None  # "cuda" | "cpu": the device whose kernels and optimizer run; None: the caller's

    def validate(self) -> "StepOptions":
        if not isinstance(self.grad_checkpointing, bool):
            raise ValueError(f"grad_checkpointing={self.grad_checkpointing!r} is not allowed; use True or False")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer {self.optimizer!r} is not allowed; allowed: {', '.join(OPTIMIZERS)}")
        if self.adapter_dtype not in ADAPTER_DTYPES:
            raise ValueError(f"adapter_dtype {self.adapter_dtype!r} is not allowed; "
                             f"allowed: {', '.join(ADAPTER_DTYPES)}")
        chunk = self.loss_chunk_tokens
        if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
            raise ValueError(f"loss_chunk_tokens must be None (no chunking) or an integer >= 1; got {chunk!r}")
        if self.device is not None and self.device not in DEVICES:
            raise ValueError(f"device {self.device!r} is not allowed; allowed: {', '.join(DEVICES)}")
        return self

    def with_device(self, device) -> "StepOptions":
        """These options on ``device`` (kept if already set and equal; a conflict is an error)."""
        device = device_type(device)
        if self.device is not None and device is not None and self.device != device:
            raise ValueError(f"options.device={self.device!r} conflicts with device={device!r}")
        return replace(self, device=self.device or device).validate()

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def step_options(options: StepOptions | dict | None = None, optimizer: str | None = None,
                 device=None, default_device: str = "cuda") -> StepOptions:
    """One validated ``StepOptions`` from ``options`` (a StepOptions, a dict or None) plus the older
    ``optimizer=``/``device=`` arguments of ``simulate_memory`` & co. (a conflict is an error)."""
    if options is None:
        options = StepOptions()
    elif isinstance(options, dict):
        unknown = sorted(set(options) - {f.name for f in fields(StepOptions)})
        if unknown:
            raise ValueError(f"unknown step option {unknown[0]!r}; "
                             f"allowed: {', '.join(f.name for f in fields(StepOptions))}")
        options = StepOptions(**options)
    elif not isinstance(options, StepOptions):
        raise ValueError(f"options must be a StepOptions, a dict or None; got {type(options).__name__}")
    options.validate()
    if optimizer is not None:
        if options.optimizer not in ("auto", optimizer):
            raise ValueError(f"optimizer={optimizer!r} conflicts with options.optimizer={options.optimizer!r}")
        options = replace(options, optimizer=optimizer).validate()
    options = options.with_device(device)
    return options if options.device else replace(options, device=default_device)


def options_of(train_config, device) -> StepOptions:
    """The ``StepOptions`` of a ``train`` run with ``train_config`` (a ``TrainConfig``) on ``device``.

    Reads the fields of the same meaning; those a ``TrainConfig`` does not have yet (``adapter_dtype``,
    ``loss_chunk_tokens``) take the defaults, which is what ``train`` does without them.
    """
    return StepOptions(grad_checkpointing=train_config.grad_checkpointing, optimizer=train_config.optimizer,
                       adapter_dtype=getattr(train_config, "adapter_dtype", "base"),
                       loss_chunk_tokens=getattr(train_config, "loss_chunk_tokens", None),
                       device=device_type(device)).validate()


def device_type(device) -> str | None:
    """``"cuda"`` or ``"cpu"`` from a name (``"cuda:1"`` too) or a ``torch.device``; None stays None."""
    if device is None:
        return None
    kind = device.type if isinstance(device, torch.device) else str(device).split(":")[0]
    if kind not in DEVICES:
        raise ValueError(f"device {device!r} is not allowed; allowed: {', '.join(DEVICES)}")
    return kind


def enable_gradient_checkpointing(model, every_n_layers: int = 1) -> None:
    """Checkpoint every ``every_n_layers``-th decoder layer, non-reentrant, with no input hook.

    Non-reentrant (``torch.utils.checkpoint(use_reentrant=False)``): gradients reach parameters inside a
    checkpointed layer whatever its inputs, so prefix tuning's prefix reaches every layer. That is also
    why transformers' ``enable_input_require_grads`` hook (which makes the embeddings' output require
    grad, for reentrant checkpointing) is removed: it would make backward run through every frozen layer
    below the first trainable one (LLaMA-Adapter trains only the top layers) and compute the gradient of
    the first layer's input, which nothing needs.
    """
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5's name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs, every_n_layers=every_n_layers)
    elif every_n_layers == 1:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    else:
        raise ConfigError(f"grad_checkpointing_every={every_n_layers} needs transformers >= 5 (every_n_layers); "
                          "use 1 with this version")
    model.disable_input_require_grads()


def training_optimizer(choice: str, method: str | None = None, device_type: str = "cpu") -> str:
    """The implementation (one of ``OPTIMIZER_IMPLEMENTATIONS``) that ``TrainConfig.optimizer=choice`` runs
    for ``method`` (a registry name, or None for a model without one) on ``device_type`` ("cpu" / "cuda").

    The single place that decides it: ``train.make_optimizer`` builds what this names (``train`` calls it
    ``resolve_optimizer``), and the simulator's ``resolve_optimizer`` asks it what a run on a device would hold (AdamW's multi-tensor path keeps a
    parameter-sized temporary that the single-tensor one does not).
    """
    if choice not in OPTIMIZERS:
        raise ConfigError(f"optimizer {choice!r} is not allowed; allowed: {', '.join(OPTIMIZERS)}")
    if device_type not in ("cpu", "cuda"):
        raise ConfigError(f"device_type {device_type!r} is not allowed; allowed: cpu, cuda")
    if choice == "auto":
        from peftbook.methods import get_method

        choice = get_method(method).cuda_optimizer if method is not None and device_type == "cuda" else "adamw"
    if choice == "adamw":  # torch's default: foreach where its kernels exist (CUDA), else one tensor at a time
        return "adamw_foreach" if device_type == "cuda" else "adamw_single_tensor"
    return choice


def resolve_optimizer(name: str, method: str, device: str) -> str:
    """The implementation (one of ``IMPLEMENTATIONS``) that optimizer ``name`` runs for ``method`` on ``device``:
    ``training_optimizer``'s answer (what ``train`` builds), in the simulator's names."""
    chosen = training_optimizer(name, method, device)
    names = {"adamw_single_tensor": "adamw single-tensor", "adamw_foreach": "adamw foreach",
             "adamw_fused": "adamw fused", "sgd": f"sgd {'foreach' if device == 'cuda' else 'single-tensor'}"}
    return names.get(chosen, chosen)


def check_method_options(method: str, options: StepOptions, base_dtype: torch.dtype) -> None:
    """Refuse, before any work, a method x option pair that does not run (yet)."""
    if options.adapter_dtype == "fp32" and base_dtype != torch.float32:
        if method == "full":
            raise ValueError("adapter_dtype='fp32' applies to methods that add parameters; full fine-tuning "
                             "trains the base's own (use dtype='mixed' for fp32 weights)")


def chunked_loss_function():
    """``peftbook.lm_loss.causal_lm_loss``: the loss ``train`` computes, chunked or not."""
    from peftbook.lm_loss import causal_lm_loss

    return causal_lm_loss


def make_step_optimizer(implementation: str, params: list, lr: float = 1e-4):
    """The optimizer of the profiled step for an ``IMPLEMENTATIONS`` entry (any device, fake tensors too)."""
    if implementation.startswith(("adamw ", "sgd ")):
        name, kind = implementation.split(" ")
        cls = torch.optim.AdamW if name == "adamw" else torch.optim.SGD
        kwargs = {"single-tensor": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}[kind]
        return cls(params, lr=lr, **kwargs)
    import bitsandbytes as bnb
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    cls = bnb.optim.PagedAdamW8bit if implementation == "paged_adamw_8bit" else bnb.optim.AdamW8bit
    with unset_fake_temporarily():  # its quantization maps are built from real numbers (.tolist())
        return cls(params, lr=lr)
