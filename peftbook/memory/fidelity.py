"""How close the simulation is to a real step: random Llama-like shapes, every method x step option.

A shape is drawn at random (seeded): hidden size, layers, heads, key/value heads, MLP width,
vocabulary, batch and sequence length. For each (method, option) the real model of that shape is
built on CPU (random init) and its steady-state step measured (``measure_memory``: exact live
storages), then the same step is simulated on fake tensors (``simulate_memory(..., device="cpu")``).
``tests/test_memory_fidelity.py`` asserts every error is within 5%; ``benchmarks/memory_fidelity.py``
writes the table in ``benchmarks/README.md``.

A second, independent witness for the real step: PyTorch's profiler with ``profile_memory=True``
records every allocation of the CPU allocator, scratch memory inside ATen kernels included, which
the tracker (operator outputs only) cannot see. ``allocator_peak`` replays those records; on the
4-bit QLoRA step it agrees with the tracker to a few bytes (``tests/test_memory_fidelity.py``):
bitsandbytes' CPU path dequantizes each weight with a PyTorch operator (a temporary the trace
counts), casts to the compute dtype with PyTorch operators, and its matmul saves no input for
backward (bitsandbytes >= 0.43.2); so on CPU the simulation misses nothing of QLoRA's step.

What this cannot check, and what to expect on CUDA instead (``device="cuda"`` models the first two):

* the optimizer PyTorch runs there: ``foreach`` AdamW, one more parameter-sized temporary in the
  step than CPU's single-tensor loop (PyTorch docs of ``torch.optim.AdamW``: foreach "uses more peak
  memory"); for a full fine-tune whose peak is the optimizer step that is +1 of the ~4 parameter
  sizes (fp32 AdamW: weights, grads, 2 moments), up to +25% of the peak; PEFT methods: < 1%;
* the allocator's 512-byte blocks: +0-511 bytes per tensor, nothing for large models;
* the attention kernel: CUDA's SDPA picks flash / memory-efficient kernels that keep the output
  and a ``(B, heads, S)`` log-sum-exp, nothing ``S x S``; the CPU trace runs PyTorch's CPU flash
  kernel (``aten._scaled_dot_product_flash_attention_for_cpu``, checked), which keeps the same, so
  we expect agreement up to the memory-efficient kernel's padding of that log-sum-exp (tens of
  bytes per head and row); ``attn_implementation="eager"`` keeps the ``S x S`` scores on both;
* bitsandbytes' 4-bit CUDA kernels: the same dequantize-then-matmul for training batches (its
  ``MatMul4Bit`` dequantizes the whole weight to the compute dtype, as the CPU path traced here),
  so the temporary of one dequantized weight is in the trace; before bitsandbytes 0.43.2 each
  layer also kept its input for backward (tens of percent more activations for QLoRA: the
  published QLoRA measurements in issue 17 were made with 0.41/0.42);
* outside ``memory_allocated`` altogether: the CUDA context (~0.3-0.5 GB), cuBLAS workspaces and
  the allocator's fragmentation (``reserved`` > ``allocated``): the planner's margin (``planner.py``).
"""
from __future__ import annotations

import random
import warnings

import torch

from peftbook.memory.options import StepOptions, with_adapter_dtype
from peftbook.memory.simulate import build_model, measure_memory, simulate_memory
from peftbook.methods import TRAINABLE_METHODS, make_config

# (label, options, dtype of the base): every option the simulator models, one at a time, on CPU
OPTION_GRID = (
    ("default", StepOptions(device="cpu"), "fp32"),
    ("grad checkpointing", StepOptions(grad_checkpointing=True, device="cpu"), "fp32"),
    ("adamw foreach", StepOptions(optimizer="adamw_foreach", device="cpu"), "fp32"),
    ("adamw fused", StepOptions(optimizer="adamw_fused", device="cpu"), "fp32"),
    ("adamw 8-bit", StepOptions(optimizer="adamw_8bit", device="cpu"), "fp32"),
    # bitsandbytes pages nothing on CPU (it says so and allocates plainly): the name runs, the bytes are 8-bit's
    ("paged adamw 8-bit", StepOptions(optimizer="paged_adamw_8bit", device="cpu"), "fp32"),
    ("sgd", StepOptions(optimizer="sgd", device="cpu"), "fp32"),
    # train's CPU step on a bf16 base: fp32 master weights for whatever trains, bf16 autocast (full fine-tuning too)
    ("bf16 base (fp32 masters, autocast)", StepOptions(device="cpu"), "bf16"),
)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def random_llama_shape(rng: random.Random):
    """A small Llama-like config and a batch: ``(config, batch_size, seq_len)``."""
    from transformers import LlamaConfig

    heads = rng.choice((2, 4, 6, 8))
    head_dim = rng.choice((8, 16, 24))
    kv_heads = rng.choice([k for k in (1, 2, heads) if heads % k == 0])
    hidden = heads * head_dim
    config = LlamaConfig(hidden_size=hidden, intermediate_size=rng.randrange(2 * hidden, 4 * hidden + 1, 8),
                         num_hidden_layers=rng.randint(2, 5), num_attention_heads=heads,
                         num_key_value_heads=kv_heads, vocab_size=rng.randrange(64, 1025, 16),
                         max_position_embeddings=256, tie_word_embeddings=rng.random() < 0.3)
    return config, rng.randint(1, 3), rng.randrange(8, 65, 8)


def applicable(method: str, options: StepOptions, dtype: str) -> bool:
    """Whether (method, options) runs today (the pairs ``check_method_options`` refuses do not)."""
    return not (options.adapter_dtype == "fp32" and dtype != "fp32" and method == "full")


def compare(config, method: str, options: StepOptions, dtype: str, batch_size: int, seq_len: int,
            seed: int = 0) -> dict:
    """Measure the real CPU step and simulate it: one row of the fidelity table."""
    method_config = with_adapter_dtype(None if method == "full" else make_config(method), options)
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers: use_cache under checkpointing
        model = build_model(config, DTYPES[dtype], method_config)
        measured = measure_memory(model, batch_size, seq_len, options=options)
        del model
        simulated = simulate_memory(config, method_config, batch_size, seq_len, dtype, options=options)
    return {"method": method, "shape": describe(config, batch_size, seq_len), "dtype": dtype,
            "measured_bytes": measured.peak_bytes, "simulated_bytes": simulated.peak_bytes,
            "error": simulated.peak_bytes / measured.peak_bytes - 1}


def allocator_peak(model, batch_size: int, seq_len: int, implementation: str = "adamw single-tensor") -> int:
    """Peak bytes the CPU allocator holds above the step's entry, replayed from the profiler's records.

    The same steady-state step as ``measure_memory`` (state primed first); counts every allocation
    PyTorch's CPU allocator makes, including scratch inside kernels.
    """
    from torch.profiler import ProfilerActivity, profile

    from peftbook.memory.simulate import prime_optimizer, step_optimizer, training_step

    optimizer = step_optimizer(implementation, model)
    prime_optimizer(optimizer)
    input_ids = torch.randint(0, model.config.vocab_size, (batch_size, seq_len))
    model.train()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        training_step(model, optimizer, input_ids)
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    live = peak = 0
    for _, nbytes in events:  # + allocation, - free
        live += nbytes
        peak = max(peak, live)
    return peak


def describe(config, batch_size: int, seq_len: int) -> str:
    return (f"h{config.hidden_size} L{config.num_hidden_layers} nh{config.num_attention_heads}/"
            f"{config.num_key_value_heads} ff{config.intermediate_size} V{config.vocab_size} "
            f"b{batch_size}x{seq_len}")


def fidelity_cases(seed: int = 0, draws_per_case: int = 1, methods=TRAINABLE_METHODS):
    """``(method, label, options, dtype, config, batch, seq)`` for every runnable method x option, each
    on ``draws_per_case`` shapes of its own (drawn from one seeded generator)."""
    rng = random.Random(seed)
    cases = []
    for method in methods:
        for label, options, dtype in OPTION_GRID:
            if not applicable(method, options, dtype):
                continue
            for _ in range(draws_per_case):
                cases.append((method, label, options, dtype, *random_llama_shape(rng)))
    return cases


def fidelity_table(seed: int = 0, draws_per_case: int = 1, methods=TRAINABLE_METHODS, progress=None) -> list[dict]:
    """Every case of ``fidelity_cases`` compared: rows with ``option`` and the ``compare`` fields."""
    rows = []
    for method, label, options, dtype, config, batch, seq in fidelity_cases(seed, draws_per_case, methods):
        rows.append({"option": label, **compare(config, method, options, dtype, batch, seq)})
        if progress is not None:
            progress(rows[-1])
    return rows


def format_fidelity(rows: list[dict]) -> str:
    """A markdown table: method x option, shape, simulated / measured MB, error %."""
    lines = ["| method | option | shape | simulated MB | measured MB | error |", "|---|---|---|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['method']} | {row['option']} | {row['shape']} | {row['simulated_bytes'] / 1e6:.3f} | "
                     f"{row['measured_bytes'] / 1e6:.3f} | {100 * row['error']:+.2f}% |")
    return "\n".join(lines)
