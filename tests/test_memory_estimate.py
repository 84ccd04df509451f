"""The closed form (``estimate_memory``) against the simulation, for what the issue found it missing.

LoRA's dropout (each adapted layer's dropped copy and mask), QLoRA without double quantization,
LLaMA-Adapter's own attention over its prompt, and the step options. The simulation is the
reference (it matches real steps, ``test_memory_fidelity.py``); Llama 3.2 1B's shape, simulated at
two depths and extrapolated (exact, ``test_memory.py``), keeps each case around a second.
"""
from __future__ import annotations

import pytest

from peftbook.memory import StepOptions, estimate_memory
from peftbook.memory.table import simulate_by_depth
from peftbook.methods import make_config

pytestmark = pytest.mark.unit


def both(method, fields=None, batch=2, seq=512, dtype="bf16", **options):
    config = None if method == "full" else make_config(method, **(fields or {}))
    options = StepOptions(**options)
    simulated = simulate_by_depth("llama-1b", config, batch, seq, dtype, options=options)
    estimated = estimate_memory("llama-1b", config, batch, seq, dtype, options=options)
    return simulated, estimated


def assert_close(simulated, estimated, tolerance=0.03):
    error = estimated["peak_bytes"] / simulated.peak_bytes - 1
    assert abs(error) <= tolerance, (error, simulated.by_category, estimated["by_category"])


@pytest.mark.parametrize("device", ["cuda", "cpu"])  # dropout's mask: 1 byte on CUDA, the input's dtype on CPU
def test_lora_dropout(device):
    without = both("lora", {"dropout": 0.0}, device=device)
    with_dropout = both("lora", {"dropout": 0.05}, device=device)
    assert_close(*with_dropout)
    simulated_cost = with_dropout[0].peak_bytes - without[0].peak_bytes
    estimated_cost = with_dropout[1]["peak_bytes"] - without[1]["peak_bytes"]
    assert simulated_cost > 0.02 * without[0].peak_bytes  # 2.4% on CUDA, 5% on CPU at this shape
    assert estimated_cost == pytest.approx(simulated_cost, rel=0.1)


def test_qlora_without_double_quantization():
    single = both("qlora", {"double_quant": False}, batch=1, seq=64)
    double = both("qlora", {"double_quant": True}, batch=1, seq=64)
    assert_close(*single)
    simulated_saving = single[0].by_category["weights"] - double[0].by_category["weights"]
    estimated_saving = single[1]["by_category"]["weights"] - double[1]["by_category"]["weights"]
    assert estimated_saving == pytest.approx(simulated_saving, rel=0.01)


@pytest.mark.parametrize("adapter_len", [10, 100])
def test_llama_adapter_attention(adapter_len):
    assert_close(*both("llama_adapter", {"adapter_len": adapter_len, "adapter_layers": 8}))


@pytest.mark.parametrize("method, options", [
    ("lora", {"grad_checkpointing": True}), ("full", {"grad_checkpointing": True}),
    ("lora", {"adapter_dtype": "fp32"}), ("qlora", {"adapter_dtype": "fp32"}),
    ("full", {"optimizer": "adamw_8bit"}), ("full", {"optimizer": "adamw_fused"}), ("full", {"optimizer": "sgd"}),
    ("qlora", {}),  # paged 8-bit AdamW, train's QLoRA default on CUDA
    ("full", {"optimizer": "adamw", "device": "cpu"}),
])
def test_options(method, options):
    assert_close(*both(method, batch=1, **options), tolerance=0.05)
