"""Will it fit on my GPU? For each method: the options it needs and the largest batch, from the simulator.

For a model, a GPU memory size and a sequence length, each trainable method climbs a ladder of
memory-saving options until its batch-1 step fits, cheapest first (each rung keeps the ones below):

1. ``train``'s defaults on CUDA (AdamW ``foreach``; QLoRA: paged 8-bit AdamW);
2. + gradient checkpointing (recomputes each layer in backward: ~30% slower, much less activation
   memory; not for prefix tuning yet);
3. + 8-bit AdamW (bitsandbytes: 2 bytes of state per parameter instead of 2 x the weights' dtype);
4. + the chunked LM head and loss (``loss_chunk_tokens``), where ``peftbook.lm_loss`` exists.

QLoRA is a method of its own: "LoRA needs QLoRA" reads off LoRA not fitting where QLoRA does. For
the first rung that fits, the largest batch is searched with the simulator (``simulate_by_depth``:
two shallow fake-tensor steps extrapolated to the real depth, exact for identical layers); the peak
is convex in the batch (a maximum of phases, each linear in it), so a secant guess then bisection
finds it in a handful of simulations.

The margin, for what the simulator cannot see on a real GPU (``Margin``):

* ``context_bytes`` = 0.5 GB: the CUDA context and cuBLAS/cuDNN workspaces live outside PyTorch's
  allocator (``memory_allocated``); the context alone is ~0.3-0.5 GB on recent GPUs and drivers
  (PyTorch's CUDA semantics notes; nvidia-smi shows it for a process that allocated nothing);
* ``fraction`` = 8% of the GPU: the caching allocator's fragmentation (``reserved`` above
  ``allocated``, typically a few percent in a steady training loop, more with varying shapes) and
  the simulator's own error on GPUs (within ~3% of published LoRA / full fine-tuning measurements,
  issue 17), plus the CUDA kernels this CPU trace cannot reproduce exactly (``fidelity.py``).

A plan says "fits" when the simulated peak is at most ``usable = gpu - context - fraction * gpu``.
Memory sizes: ``GB`` = 1e9 bytes, ``GiB`` = 2**30. GPUs sold as "24 GB" have 24 GiB (25.8e9 bytes):
``--gpu-memory 24GB`` understates them by 7%, on the safe side; ``24GiB`` is exact.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace

from peftbook.memory.options import StepOptions
from peftbook.memory.simulate import resolve_config, resolve_method_config, resolve_step_dtype
from peftbook.memory.table import default_method_config, simulate_by_depth
from peftbook.methods import TRAINABLE_METHODS

UNITS = {"b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12, "kib": 2 ** 10, "mib": 2 ** 20, "gib": 2 ** 30,
         "tib": 2 ** 40}
UNIT_NAMES = ("B", "KB", "MB", "GB", "TB", "KiB", "MiB", "GiB", "TiB")  # as written; matched case-insensitively
MAX_BATCH = 4096
QUANTIZED_VARIANT = {"lora": "qlora"}  # a method -> the same method on a 4-bit base  # the search stops here: "at least 4096" is answer enough


@dataclass(frozen=True)
class Margin:
    """What the simulator cannot see on a real GPU (see the module docstring for the numbers' sources)."""

    context_bytes: float = 0.5e9  # CUDA context + cuBLAS workspaces, outside PyTorch's allocator
    fraction: float = 0.08  # allocator fragmentation (~5%) + the simulator's error on GPUs (~3%)

    def usable(self, gpu_bytes: float) -> float:
        return gpu_bytes * (1 - self.fraction) - self.context_bytes

    def describe(self, gpu_bytes: float) -> str:
        return (f"{gb(self.usable(gpu_bytes))} usable = {gb(gpu_bytes)} - {gb(self.context_bytes)} (CUDA context, "
                f"cuBLAS workspaces) - {self.fraction:.0%} ({gb(self.fraction * gpu_bytes)}: allocator "
                f"fragmentation, the simulator's error on GPUs)")


def gb(nbytes: float) -> str:
    return f"{nbytes / 1e9:.1f} GB"


def parse_memory(text) -> float:
    """Bytes from ``"24GB"``, ``"24 GB"``, ``"80GiB"``, ``"24000MB"`` (GB = 1e9 bytes, GiB = 2**30)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]+)\s*", str(text))
    unit = match and match.group(2).lower()
    if not match or unit not in UNITS:
        raise ValueError(f"GPU memory {text!r} is not a memory size; write a number and a unit, e.g. 24GB or "
                         f"80GiB (units: {', '.join(UNIT_NAMES)})")
    value = float(match.group(1)) * UNITS[unit]
    if value <= 0:
        raise ValueError(f"GPU memory {text!r} must be more than zero")
    return value


def ladder(method: str, base: StepOptions) -> list[tuple[str, StepOptions]]:
    """``(what it adds, options)`` from the defaults to every saving this method can use."""
    rungs = [("defaults", base), ("gradient checkpointing", replace(base, grad_checkpointing=True))]
    if method != "qlora":  # QLoRA's CUDA default is already paged 8-bit AdamW
        rungs.append(("8-bit AdamW", replace(rungs[-1][1], optimizer="adamw_8bit")))
    rungs.append(("chunked LM head", replace(rungs[-1][1], loss_chunk_tokens=1024)))
    return rungs


def largest_batch(peak, budget: float, limit: int = MAX_BATCH) -> int:
    """The largest batch ``b <= limit`` with ``peak(b) <= budget`` (0 if none), for a non-decreasing ``peak``."""
    if peak(1) > budget:
        return 0
    lo, hi = 1, None  # peak(lo) fits; peak(hi) does not
    previous = None
    while hi is None or hi - lo > 1:
        if hi is None:  # extrapolate the last secant (an over-estimate, the peak being convex)
            slope = (peak(lo) - peak(previous)) / (lo - previous) if previous else None
            guess = lo * 2 if not slope or slope <= 0 else lo + max(1, int((budget - peak(lo)) / slope))
            guess = min(max(guess, lo + 1), limit)
        else:
            guess = (lo + hi) // 2
        if peak(guess) <= budget:
            previous, lo = lo, guess
            if lo == limit:
                return limit
        else:
            hi = guess
    return lo


def plan_method(config, method: str, gpu_bytes: float, seq_len: int, dtype: str, margin: Margin,
                limit: int = MAX_BATCH) -> dict:
    """One method's answer: the first rung that fits at batch 1, its batch-1 peak and largest batch, and the
    largest batch with every saving of the ladder (rungs above the first that fits are simulated too)."""
    method_config = default_method_config(method)
    budget = margin.usable(gpu_bytes)
    tried, found = [], {}
    rungs = ladder(method, StepOptions(device="cuda"))
    for label, options in rungs:
        cache = {}

        def peak(batch, options=options):
            if batch not in cache:
                cache[batch] = simulate_by_depth(config, method_config, batch, seq_len, dtype,
                                                 options=options).peak_bytes
            return cache[batch]

        tried.append({"adds": label, "batch1_bytes": peak(1)})
        if peak(1) <= budget and "needs" not in found:
            found.update(needs=[t["adds"] for t in tried[1:]], options=options.to_dict(), batch1_bytes=peak(1),
                         largest_batch=largest_batch(peak, budget, limit))
        if "needs" in found and label == rungs[-1][0]:  # with every saving: the largest batch of all
            found["largest_batch_all_savings"] = largest_batch(peak, budget, limit)
    if "needs" in found:
        return {"method": method, "fits": True, **found, "tried": tried}
    return {"method": method, "fits": False, "needs": None, "options": None,
            "batch1_bytes": tried[-1]["batch1_bytes"], "largest_batch": 0, "largest_batch_all_savings": 0,
            "tried": tried}


def plan(model_or_config, gpu_memory, seq_len: int = 2048, dtype: str = "bf16", methods=TRAINABLE_METHODS,
         margin: Margin = Margin(), limit: int = MAX_BATCH, progress=None) -> dict:
    """For each method: does a training step fit in ``gpu_memory`` (bytes or ``"24GB"``), what it needs,
    the largest batch. Every argument is checked before the first simulation."""
    gpu_bytes = parse_memory(gpu_memory) if isinstance(gpu_memory, str) else float(gpu_memory)
    if gpu_bytes <= 0:
        raise ValueError(f"gpu_memory must be more than zero; got {gpu_memory!r}")
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
        raise ValueError(f"seq_len must be an integer >= 1; got {seq_len!r}")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be an integer >= 1; got {limit!r}")
    resolve_step_dtype(dtype)
    for method in methods:
        if method not in TRAINABLE_METHODS:
            raise ValueError(f"method {method!r} is not allowed; allowed: {', '.join(TRAINABLE_METHODS)}")
        resolve_method_config(default_method_config(method))
    config = resolve_config(model_or_config)
    if margin.usable(gpu_bytes) <= 0:
        raise ValueError(f"{gb(gpu_bytes)} leaves nothing after the margin ({margin.describe(gpu_bytes)})")
    rows = []
    for method in methods:
        rows.append(plan_method(config, method, gpu_bytes, seq_len, dtype, margin, limit))
        if progress is not None:
            progress(rows[-1])
    by_method = {row["method"]: row for row in rows}
    for method, row in by_method.items():  # "LoRA needs QLoRA": a method that does not fit, its 4-bit variant does
        quantized = QUANTIZED_VARIANT.get(method)
        row["instead"] = quantized if not row["fits"] and by_method.get(quantized, {}).get("fits") else None
    from peftbook.methods.full import num_parameters

    return {"model": str(model_or_config) if isinstance(model_or_config, str) else config.model_type,
            "parameters": num_parameters(config), "gpu_bytes": gpu_bytes, "usable_bytes": margin.usable(gpu_bytes),
            "margin": {"context_bytes": margin.context_bytes, "fraction": margin.fraction,
                       "why": margin.describe(gpu_bytes)},
            "seq_len": seq_len, "dtype": dtype, "device": "cuda (simulated)", "max_batch_searched": limit,
            "methods": rows}


def format_plan(result: dict) -> str:
    """The plan as a table, with the margin stated."""
    lines = [f"{result['model']} ({result['parameters'] / 1e9:.2f}B parameters), sequence {result['seq_len']}, "
             f"{result['dtype']}, on a {gb(result['gpu_bytes'])} GPU (simulated CUDA steps)",
             f"margin: {result['margin']['why']}", "",
             f"{'method':<14} {'fits':<5} {'needs':<58} {'batch 1':>9} {'largest batch':>14} "
             f"{'with every saving':>18}"]
    lines.append("-" * len(lines[-1]))
    for row in result["methods"]:
        if row["fits"]:
            needs = " + ".join(row["needs"]) or "nothing beyond the defaults"
        else:
            needs = "no fit, even with " + " + ".join(t["adds"] for t in row["tried"][1:]) if len(row["tried"]) > 1 \
                else "no fit"
            if row.get("instead"):
                needs = f"no fit; {row['instead']} fits"
        batch, most = (f">= {b}" if b == result["max_batch_searched"] else str(b)
                       for b in (row["largest_batch"], row["largest_batch_all_savings"]))
        lines.append(f"{row['method']:<14} {'yes' if row['fits'] else 'no':<5} {needs:<58} "
                     f"{gb(row['batch1_bytes']):>9} {batch:>14} {most:>18}")
    lines += ["", "batch 1: the simulated peak of one step with the options listed (the last tried if none fits);",
              "largest batch: with those options; with every saving: gradient checkpointing, 8-bit AdamW (and a",
              "chunked LM head where available) too, at some speed; both searched with the simulator."]
    return "\n".join(lines)
