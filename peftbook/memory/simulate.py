"""Simulate the memory of one training step of any model, without allocating it.

The real ``transformers`` model is built and trained for a step under
``torch._subclasses.fake_tensor.FakeTensorMode``: every tensor is a fake that has a shape, a dtype
and a storage size but no data, so a 70B Llama step runs in seconds on a laptop. The tracker of
``measure.py`` watches the fake storages exactly as it watches real ones.

Which step: AdamW creates its state lazily in the first ``step()``, so the first step is not the
steady state. We create the state first (an optimizer step on zero gradients, no forward) and
report the step after it, i.e. the steady-state **second** step (weights and optimizer state exist
on entry; activations, gradients and temporaries come and go). ``measure_memory`` does the same.

QLoRA: the frozen linear layers are replaced, as ``transformers``' bitsandbytes integration does
(every ``nn.Linear`` but the output embedding), by ``bitsandbytes`` ``Linear4bit`` layers whose packed
weight and quantization state are made by bitsandbytes' own ``quantize_4bit`` on fake tensors (its
ops have fake kernels), so the 4-bit storage is counted exactly as on a real device.

Where a GPU differs from this CPU trace (``device="cuda"`` models the first three):
* the CUDA caching allocator rounds every block up to 512 bytes;
* dropout modules (LoRA's) run ``native_dropout``, whose mask is 1 byte, not the input's dtype;
* PyTorch's AdamW uses the ``foreach`` implementation on CUDA, with list-wide temporaries, and the
  single-tensor for-loop on CPU (``options.py``: each optimizer name runs what it runs on the device);
* on CUDA, SDPA picks flash/memory-efficient kernels (no ``[B, heads, S, S]`` matrix); the CPU
  trace uses whatever the CPU dispatcher picks, and ``attn_implementation="eager"`` keeps the matrix;
* cuBLAS workspaces, the CUDA context (~0.3-0.5 GB, never in ``memory_allocated``) and
  fragmentation (``reserved`` > ``allocated``) are not modelled.
"""
from __future__ import annotations

import copy
import warnings
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from torch import nn

from peftbook.memory.measure import MemoryReport, track_memory
from peftbook.memory.options import (StepOptions, check_method_options, chunked_loss_function,
                                     enable_gradient_checkpointing, make_step_optimizer, resolve_optimizer,
                                     step_options, with_adapter_dtype)
from peftbook.methods import apply, get_method, make_config, method_of
from peftbook.precision import fp32_master_weights, model_dtype
from peftbook.surgery import applied_config

# "mixed": fp32 weights, gradients and AdamW state, forward under bf16 autocast (mixed precision)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "mixed": torch.float32}
BUILTIN_SHAPES = {"llama-1b": "1B", "llama-8b": "8B", "llama-70b": "70B", "llama-405b": "405B"}


# -- inputs ----------------------------------------------------------------------------------
def resolve_config(model_or_config):
    """A ``transformers`` config from a config, a model, ``"tiny"``, ``"llama-8b"``, a local dir/json, or a hub id."""
    from transformers import AutoConfig, PretrainedConfig

    if isinstance(model_or_config, PretrainedConfig):
        return model_or_config
    if isinstance(model_or_config, nn.Module):
        return model_or_config.config
    if not isinstance(model_or_config, (str, Path)):
        raise ValueError(f"model_or_config must be a transformers config, a model or a name/path; "
                         f"got {type(model_or_config).__name__}")
    name = str(model_or_config)
    if name.lower() in BUILTIN_SHAPES:
        from peftbook.zoo import llama_config

        return llama_config(BUILTIN_SHAPES[name.lower()])
    if name.startswith("tiny-"):  # tiny random configs of each architecture: tiny-llama, tiny-gpt2, ...
        from peftbook.zoo import tiny_random_config

        return tiny_random_config(name.removeprefix("tiny-"))
    from peftbook.models import resolve_model_path

    path = Path(name).expanduser()
    try:
        if path.is_file() and path.suffix == ".json":
            return AutoConfig.from_pretrained(str(path))
        if path.is_file() and path.suffix.lower() == ".gguf":
            return AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
        return AutoConfig.from_pretrained(resolve_model_path(name))
    except ValueError as error:  # e.g. a model_type this transformers does not know
        raise ValueError(f"cannot read a model config from {name!r}: {str(error).splitlines()[0]}") from None
    except OSError as error:
        raise FileNotFoundError(
            f"could not get a config for model {name!r}: not one of tiny, {', '.join(BUILTIN_SHAPES)}, "
            f"tiny-<type>, a local directory or config.json, nor a reachable hub id "
            f"({str(error).splitlines()[0]})") from None


def autocast_dtype(dtype) -> torch.dtype | None:
    """The autocast compute dtype of a dtype name: bf16 for "mixed", None (no autocast) otherwise."""
    return torch.bfloat16 if dtype == "mixed" else None


def resolve_step_dtype(dtype) -> torch.dtype:
    """The torch dtype of a simulated step's dtype name (``"mixed"``: fp32 weights, bf16 autocast)."""
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise ValueError(f"dtype {dtype} is not allowed; allowed: {', '.join(DTYPES)}")
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not allowed; allowed: {', '.join(DTYPES)}")
    return DTYPES[dtype]


def resolve_method_config(method_config):
    """A validated method config from a config, a method name (its default config) or None (full fine-tuning)."""
    if method_config is None:
        return None
    if isinstance(method_config, str):
        method_config = make_config(method_config)
    method_of(method_config)  # a clear error for a class, a name of nothing, anything else
    method_config.validate()
    return method_config


def method_name(method_config) -> str:
    return "full" if method_config is None else method_config.method


# -- building --------------------------------------------------------------------------------
def build_model(config, dtype: torch.dtype, method_config=None, attn_implementation=None) -> nn.Module:
    """Instantiate ``config`` (random init) in ``dtype``, quantize for QLoRA, apply the method.

    Runs as is on real tensors; under ``FakeTensorMode`` it builds the fake model.
    """
    from transformers import AutoModelForCausalLM

    kwargs = {"dtype": dtype}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    try:
        model = AutoModelForCausalLM.from_config(config, **kwargs)
    except Exception as error:  # unknown model_type, inconsistent shapes, ...
        raise ValueError(f"cannot build a causal LM from this config "
                         f"(model_type={getattr(config, 'model_type', None)!r}): {error}") from error
    if method_config is None:
        model.requires_grad_(True)
        return model
    apply(model, method_config)  # QLoRA quantizes fake weights with bitsandbytes' own kernels too
    return model


# -- one training step -----------------------------------------------------------------------
def apply_options(model: nn.Module, method: str, options: StepOptions) -> nn.Module:
    """Make ``model`` run the step ``options`` describe, as ``train`` does: gradient checkpointing turned
    on by ``enable_gradient_checkpointing`` (non-reentrant, no input-grad hook), the function train calls.
    The adapter dtype is the method config's (``with_adapter_dtype``), built by ``apply``. Works on real
    and fake models."""
    if options.grad_checkpointing:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            enable_gradient_checkpointing(model)
        model.config.use_cache = False  # what transformers does itself under checkpointing, saying so on stderr
    return model


@contextmanager
def masks_decided_as_on_real_tensors():
    """Let transformers skip the causal mask under fake tensors where it skips it on real ones.

    SDPA runs causal attention without a mask (``is_causal=True``) unless sequences are packed into one
    row. Without a KV cache (``use_cache=False``, which transformers forces under gradient
    checkpointing) transformers looks for packing in the position ids
    (``masking_utils.find_packed_sequence_indices``); it cannot read fake ones, assumes packing and
    builds the full ``S x S`` mask, which changes the attention kernel too. The simulated step's
    position ids are ``0..S-1`` in every row, one sequence each, which is what the real check finds.
    """
    from transformers import masking_utils

    find = masking_utils.find_packed_sequence_indices
    masking_utils.find_packed_sequence_indices = lambda position_ids: None  # one sequence per row
    try:
        yield
    finally:
        masking_utils.find_packed_sequence_indices = find


def use_cuda_dropout(model: nn.Module) -> None:
    """Make the model's ``nn.Dropout`` modules run what CUDA runs: ``native_dropout`` (a 1-byte bool mask).

    ``F.dropout`` takes the fused ``native_dropout`` only for CUDA tensors; on CPU, fake tensors
    included, it multiplies by a mask of the input's dtype, which a CUDA step does not keep.
    """
    for module in model.modules():
        if isinstance(module, nn.Dropout) and module.p > 0:
            module.forward = lambda x, module=module: torch.native_dropout(x, module.p, module.training)[0]


def step_optimizer(implementation: str, model: nn.Module, lr: float = 1e-4):
    """The optimizer of the profiled step: an ``options.IMPLEMENTATIONS`` entry over the trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters: nothing to optimize")
    return make_step_optimizer(implementation, params, lr)


def prime_optimizer(optimizer) -> None:
    """Create the optimizer's lazy state (AdamW's two moments) as a first step would, without a forward.

    One optimizer step on zero gradients: the state exists afterwards (at zero, no update made since
    the moments stay zero), which is all the tracked step needs, at a fraction of a warm-up step's cost.
    """
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for param in params:
        param.grad = torch.zeros_like(param)
    lrs = [group["lr"] for group in optimizer.param_groups]
    for group in optimizer.param_groups:
        group["lr"] = 0.0  # AdamW's decoupled weight decay would still move the weights otherwise
    with warnings.catch_warnings():  # bitsandbytes: "Paged optimizers are not supported on CPU"
        warnings.simplefilter("ignore")
        optimizer.step()
    for group, lr in zip(optimizer.param_groups, lrs):
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)


def training_step(model, optimizer, input_ids, mem=None, autocast: torch.dtype | None = None,
                  loss_chunk_tokens: int | None = None) -> None:
    """Forward (causal LM loss on the inputs, under autocast if given), backward, optimizer step, zero_grad.

    ``loss_chunk_tokens``: the loss from ``peftbook.lm_loss.causal_lm_loss`` (LM head + cross-entropy
    that many tokens at a time) instead of the model's own (all logits at once).
    """
    with torch.autocast(input_ids.device.type, dtype=autocast) if autocast else nullcontext():
        if loss_chunk_tokens is None:
            loss = model(input_ids=input_ids, labels=input_ids).loss
        else:
            loss = chunked_loss_function()(model, input_ids, input_ids, chunk_tokens=loss_chunk_tokens)
    if mem is not None:
        mem.mark("backward")
    loss.backward()
    del loss
    if mem is not None:
        mem.mark("optimizer")
    optimizer.step()
    if mem is not None:
        mem.mark("zero_grad")
    optimizer.zero_grad(set_to_none=True)


def cpu_mixed_precision(options: StepOptions, torch_dtype: torch.dtype) -> bool:
    """Whether the step is ``train``'s on a CPU in 16 bits: the trainable parameters in fp32 (master weights,
    ``precision.fp32_master_weights``), the frozen ones in ``torch_dtype``, the forward under its autocast."""
    return options.device == "cpu" and torch_dtype in (torch.bfloat16, torch.float16)


def profile_step(model, batch_size: int, seq_len: int, options: StepOptions, method: str, device="cpu",
                 simulated: bool = False, autocast: torch.dtype | None = None, masters: bool = False) -> MemoryReport:
    """Create the optimizer's state, then track one step: the steady-state step's memory.

    ``device``: where the tensors are (CPU for fake ones); ``options.device``: the device modelled
    (allocator rounding, the optimizer implementation it runs). ``masters``: the trainable parameters
    in fp32 while the step runs, as ``train`` keeps them on a CPU in bf16 (``cpu_mixed_precision``).
    """
    with fp32_master_weights([p for p in model.parameters() if p.requires_grad]) if masters else nullcontext():
        return profile_steady_step(model, batch_size, seq_len, options, method, device, simulated, autocast)


def profile_steady_step(model, batch_size: int, seq_len: int, options: StepOptions, method: str, device,
                        simulated: bool, autocast: torch.dtype | None) -> MemoryReport:
    implementation = resolve_optimizer(options.optimizer, method, options.device)
    opt = step_optimizer(implementation, model)
    vocab = getattr(getattr(model.config, "text_config", None) or model.config, "vocab_size")
    input_ids = torch.randint(0, vocab, (batch_size, seq_len), device=device)
    model.train()
    prime_optimizer(opt)
    tracked = options.device if simulated else device  # a real run: its own device (cuda:1 stays cuda:1)
    with track_memory(tracked, model=model, optimizer=opt, extra=[input_ids], simulated=simulated) as mem:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # bitsandbytes' paged-on-CPU note; checkpointing's use_cache note
            training_step(model, opt, input_ids, mem, autocast, options.loss_chunk_tokens)
    mem.report.notes.append(f"optimizer: {implementation}")
    return mem.report


def prepare_step(batch_size, seq_len, dtype, method_config, options, optimizer, device, default_device):
    """Validate every argument of a step, before any work: (torch dtype, method config, options)."""
    for name, value in (("batch_size", batch_size), ("seq_len", seq_len)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
    options = step_options(options, optimizer, device, default_device)
    torch_dtype = resolve_step_dtype(dtype)
    method_config = resolve_method_config(method_config)
    check_method_options(method_name(method_config), options, torch_dtype)
    return torch_dtype, method_config, options


def simulate_memory(model_or_config, method_config=None, batch_size: int = 1, seq_len: int = 512,
                    dtype="bf16", optimizer: str | None = None, *, device: str | None = None,
                    options: StepOptions | dict | None = None, attn_implementation: str | None = None) -> MemoryReport:
    """Peak memory of one steady-state training step, by category, traced on fake tensors.

    Args:
        model_or_config: a ``transformers`` config or model, ``"tiny"``, ``"llama-1b|8b|70b|405b"``,
            ``"tiny-<model_type>"``, a local model directory or config.json, or a hub id (needs network).
        method_config: a method config (``make_config("lora", rank=8)``); None = full fine-tuning.
        batch_size, seq_len: the batch of token ids (labels = inputs).
        dtype: ``"bf16"``, ``"fp16"`` or ``"fp32"``: weights, gradients, optimizer state and activations
            all in that dtype; ``"mixed"``: fp32 weights/gradients/AdamW state, bf16 autocast forward. On
            ``device="cpu"`` a 16-bit dtype is ``train``'s CPU step in it: the frozen weights in that dtype,
            the trainable ones, their gradients and AdamW state in fp32 (master weights), autocast forward.
        optimizer, device: shorthands for ``options.optimizer`` and ``options.device``.
        options: ``StepOptions`` (or a dict of its fields): gradient checkpointing, the optimizer
            (default ``"auto"``: what ``train`` uses on the device), adapter dtype, chunked loss, and
            the device simulated (default ``"cuda"``: 512 B allocator blocks, its optimizer kernels).
        attn_implementation: passed to ``transformers`` (``"eager"``, ``"sdpa"``); default: its own.
    """
    from torch._subclasses.fake_tensor import FakeTensorMode

    torch_dtype, method_config, options = prepare_step(batch_size, seq_len, dtype, method_config, options,
                                                       optimizer, device, "cuda")
    config = copy.deepcopy(resolve_config(model_or_config))  # building and options may write to it
    method = method_name(method_config)
    method_config = with_adapter_dtype(method_config, options)
    with FakeTensorMode(allow_non_fake_inputs=True):
        model = build_model(config, torch_dtype, method_config, attn_implementation)
        apply_options(model, method, options)
        if options.device == "cuda":
            use_cuda_dropout(model)
        # fake tensors live on CPU; options.device is the device modelled (allocator, optimizer)
        masters = cpu_mixed_precision(options, torch_dtype)
        with masks_decided_as_on_real_tensors():
            report = profile_step(model, batch_size, seq_len, options, method, "cpu", simulated=True,
                                  autocast=torch_dtype if masters else autocast_dtype(dtype), masters=masters)
    report.device = f"{options.device} (simulated)"
    report.notes.append("steady-state step (the second): the optimizer state exists on entry")
    if masters:
        report.notes.append(f"{dtype} on the CPU: fp32 master weights for the trainable parameters, autocast forward")
    if get_method(method).memory.quantized_base:
        report.notes.append("4-bit weights: bitsandbytes' own quantize_4bit on fake tensors (exact storage)")
    return report


def measure_memory(model, batch_size: int = 1, seq_len: int = 512, optimizer: str | None = None,
                   device=None, dtype=None, *, options: StepOptions | dict | None = None) -> MemoryReport:
    """The same steady-state step as ``simulate_memory``, run for real on ``model``'s device.

    ``dtype="mixed"`` runs the forward under bf16 autocast (the model should be fp32); other values
    are only checked, the model keeps the dtype it has. ``options`` are applied to ``model`` as
    ``train`` would (adapter weights cast to fp32, gradient checkpointing turned on, and left so).
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    applied = applied_config(model)
    method = applied.method if applied is not None else "full"
    _, _, options = prepare_step(batch_size, seq_len, dtype or "fp32", applied, options, optimizer, device,
                                 device.type)
    check_method_options(method, options, getattr(model, "dtype", torch.float32))
    if with_adapter_dtype(applied, options) != applied:
        raise ValueError(f"options ask for adapter_dtype='fp32' but the {method} adapter on this model was applied "
                         "with adapter_dtype='base'; apply it with adapter_dtype='fp32' (as a training run would)")
    apply_options(model, method, options)
    base_dtype = model_dtype(model)
    masters = cpu_mixed_precision(options, base_dtype)
    return profile_step(model, batch_size, seq_len, options, method, device, simulated=False,
                        autocast=base_dtype if masters else autocast_dtype(dtype), masters=masters)
