"""The rule-of-thumb table: what fine-tuning Llama 3 models of 1B-405B parameters costs, by method.

Each cell is a fake-tensor simulation (``simulate_memory``) next to the closed form and the
article's "16 GB per 1B parameters". To fit the whole table in well under a minute on 2 cores, a
cell simulates the model at two small depths and extrapolates to the real one (``simulate_by_depth``):
the decoder layers are identical, so every category is exactly linear in the number of layers
(a test checks the extrapolation against the full-depth simulation, byte for byte).
"""
from __future__ import annotations

import copy

from peftbook.memory.estimate import RULE_OF_THUMB_BYTES_PER_PARAM, estimate_memory
from peftbook.memory.measure import CATEGORIES, MemoryReport
from peftbook.memory.simulate import resolve_config, simulate_memory
from peftbook.methods import TRAINABLE_METHODS, make_config
from peftbook.zoo import llama_config

TABLE_SIZES = ("1B", "8B", "70B", "405B")
TABLE_SEQ_LENS = (512, 2048)


def simulate_by_depth(model_or_config, method_config=None, batch_size=1, seq_len=512, dtype="bf16",
                      optimizer=None, *, device=None, options=None) -> MemoryReport:
    """``simulate_memory`` at two small depths, extrapolated linearly to the model's real depth."""
    config = resolve_config(model_or_config)
    depth = config.num_hidden_layers
    top = getattr(method_config, "adapter_layers", 0)  # a count of top layers, or a fraction that scales with depth
    shallow = max(4, top + 2) if isinstance(top, int) else 4  # deeper than a fixed count of top-layer adapters
    if depth <= shallow + 2:
        return simulate_memory(config, method_config, batch_size, seq_len, dtype, optimizer, device=device,
                               options=options)
    reports = []
    for layers in (shallow, shallow + 2):
        probe = copy.deepcopy(config)
        probe.num_hidden_layers = layers
        reports.append(simulate_memory(probe, method_config, batch_size, seq_len, dtype, optimizer, device=device,
                                       options=options))
    a, b = reports
    scale = (depth - shallow) / 2

    def extrapolate(x, y):
        return int(round(x + scale * (y - x)))

    return MemoryReport(device=a.device, peak_bytes=extrapolate(a.peak_bytes, b.peak_bytes),
                        by_category={k: extrapolate(a.by_category[k], b.by_category[k]) for k in CATEGORIES},
                        simulated=True,
                        notes=a.notes + [f"extrapolated from {shallow} and {shallow + 2} layers to {depth}"])


def default_method_config(name: str):
    """The method's default config; full fine-tuning as ``None`` (every parameter trains)."""
    return None if name == "full" else make_config(name)


def rule_of_thumb_table(sizes=TABLE_SIZES, seq_lens=TABLE_SEQ_LENS, methods=TRAINABLE_METHODS, *, batch_size=1,
                        dtype="bf16", optimizer=None, device=None, options=None, progress=None) -> list[dict]:
    """One row per (size, method, seq_len): simulated and estimated bytes, GB per 1B parameters."""
    rows = []
    for size in sizes:
        config = llama_config(size)
        for name in methods:
            for seq_len in seq_lens:
                method_config = default_method_config(name)
                sim = simulate_by_depth(config, method_config, batch_size, seq_len, dtype, optimizer, device=device,
                                        options=options)
                est = estimate_memory(config, method_config, batch_size, seq_len, dtype, optimizer, device=device,
                                      options=options)
                params = est["num_params"]
                rows.append({
                    "model": f"llama-{size.lower()}", "params": params, "method": name, "batch": batch_size,
                    "seq": seq_len, "dtype": dtype, "simulated_bytes": sim.peak_bytes,
                    "simulated_by_category": sim.by_category, "estimated_bytes": est["peak_bytes"],
                    "rule_of_thumb_bytes": params * RULE_OF_THUMB_BYTES_PER_PARAM,
                    "gb_per_1b_params": sim.peak_bytes / params,  # (bytes / 1e9) / (params / 1e9)
                })
                if progress is not None:
                    progress(rows[-1])
    return rows


def format_table(rows: list[dict]) -> str:
    header = (f"{'model':<11} {'params':>7} {'method':<14} {'seq':>5} {'simulated GB':>12} {'GB/1B':>6} "
              f"{'closed form GB':>14} {'16 GB/1B rule':>13}")
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(f"{row['model']:<11} {row['params'] / 1e9:>6.2f}B {row['method']:<14} {row['seq']:>5} "
                     f"{row['simulated_bytes'] / 1e9:>12.1f} {row['gb_per_1b_params']:>6.1f} "
                     f"{row['estimated_bytes'] / 1e9:>14.1f} {row['rule_of_thumb_bytes'] / 1e9:>13.1f}")
    return "\n".join(lines)
