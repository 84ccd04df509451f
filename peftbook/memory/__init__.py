"""Memory: what one training step costs, in three views of one quantity.

"In half precision, we need 16 GB of GPU memory per 1B model parameters": PEFT exists to cut that
number. This package gives the real number, broken down, for any model, before renting a GPU.

1. **Measure** -- ``track_memory(device=None, model=..., optimizer=...)``, a context manager::

       with track_memory(model=model, optimizer=opt) as mem:
           loss = model(input_ids=ids, labels=ids).loss; mem.mark("backward")
           loss.backward(); mem.mark("optimizer"); opt.step(); mem.mark("zero_grad"); opt.zero_grad()
       mem.peak_bytes, mem.by_category  # weights, gradients, optimizer, activations, other (sum = peak)
       mem.report.timeline              # live bytes after each allocation/free, for plots

   CPU: exact accounting of live tensor storages (a ``TorchDispatchMode`` sees every allocation,
   weak references see every free; 4-bit bitsandbytes weights included). CUDA: the caching
   allocator's own peak (``max_memory_allocated``; ``reserved_bytes`` too) with the same categories;
   ``snapshot="step.pickle"`` writes a snapshot for https://pytorch.org/memory_viz.
   ``measure_memory(model, batch, seq)`` runs the standard step (below) on a real model.

2. **Simulate** -- ``simulate_memory(model_or_config, method_config, batch_size, seq_len, dtype,
   options=StepOptions(...))``: builds the real ``transformers`` model under ``FakeTensorMode``,
   applies the method, and runs one training step with the same tracker; nothing is allocated. A
   70B Llama step takes seconds and a few hundred MB. On CPU it matches ``measure_memory`` to the
   byte for every method (tests). The step: AdamW state is created first (as step 1 would), and
   the reported step is the steady-state second one. ``device="cuda"`` models the CUDA allocator's
   512-byte blocks and the optimizer CUDA runs (``foreach`` AdamW: one parameter-sized temporary,
   ``sqrt(v)``; QLoRA's default there: paged 8-bit AdamW);
   not modelled: flash-attention kernel choice differences, cuBLAS workspaces, the CUDA context,
   fragmentation. ``model_or_config``: a config, a model, ``"tiny"``, ``"tiny-<type>"``,
   ``"llama-1b|8b|70b|405b"`` (published Llama 3 shapes), a local directory/config.json, a hub id.

3. **Estimate** -- ``estimate_memory(...)``, same arguments: bytes per parameter for weights (QLoRA:
   NF4 + double-quantized scales), gradients, optimizer state, plus the activations autograd saves
   (after Korthikanti et al. 2022, adapted to Llama layers and to frozen layers). Within 25% of the
   measurement on small models; the gap is part of the lesson.

``rule_of_thumb_table()`` (``python -m peftbook memory --table``) puts the three side by side with
the article's 16 GB/1B for Llama 3 1B-405B. Why full fine-tuning lands at 10 GB/1B (pure bf16) or
20 GB/1B (``dtype="mixed"``) rather than 16: the rule counts fp32 master weights (4 B), fp32
gradients (4 B) and two fp32 Adam states (8 B), and nothing else; pure bf16 training keeps
2 + 2 + 4 B; and both pay a parameter-sized ``foreach`` temporary in the optimizer step, which
(like the activations, small next to 8B parameters at batch 1) the rule ignores.

dtypes: ``"bf16"``, ``"fp16"``, ``"fp32"`` (everything in that dtype) and ``"mixed"`` (fp32
weights/gradients/AdamW state, bf16 autocast forward).

Step options, the same for all three views and the CLI (``options.py``):
``StepOptions(grad_checkpointing, optimizer, adapter_dtype, loss_chunk_tokens, device)``, e.g.
``simulate_memory("llama-8b", "lora", 4, 2048, options=StepOptions(grad_checkpointing=True))``.
The defaults are what ``train`` does on the device; each optimizer name (``auto``, ``adamw``,
``adamw_foreach``, ``adamw_fused``, ``adamw_8bit``, ``paged_adamw_8bit``, ``sgd``) runs the
implementation that device runs (CPU AdamW: the single-tensor loop; CUDA: ``foreach``).

``plan("llama-8b", "24GB", seq_len=2048)`` (``python -m peftbook plan``, ``planner.py``): for each
method, whether a step fits, the options it needs and the largest batch, after a stated margin.
"""
from peftbook.memory.estimate import estimate_memory, rule_of_thumb_bytes
from peftbook.memory.measure import CATEGORIES, MemoryReport, track_memory
from peftbook.memory.options import StepOptions
from peftbook.memory.planner import plan
from peftbook.memory.simulate import measure_memory, simulate_memory
from peftbook.memory.table import rule_of_thumb_table, simulate_by_depth

__all__ = ["CATEGORIES", "MemoryReport", "StepOptions", "track_memory", "simulate_memory", "measure_memory",
           "estimate_memory", "rule_of_thumb_bytes", "rule_of_thumb_table", "simulate_by_depth", "plan"]
