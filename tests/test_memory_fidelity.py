"""The simulator against real CPU steps on random Llama-like shapes: every method x step option within 5%.

Each case draws its own small shape from one seeded generator (hidden, layers, heads, key/value
heads, MLP width, vocabulary, tied embeddings, batch, sequence), builds the real model, measures its
steady-state step (``measure_memory``) and simulates the same step on fake tensors. QLoRA also runs
on several more shapes with train's defaults.
"""
from __future__ import annotations

import random

import pytest

from peftbook.memory.fidelity import OPTION_GRID, compare, fidelity_cases, random_llama_shape
from peftbook.memory.options import StepOptions

pytestmark = pytest.mark.unit

SEED = 17
CASES = fidelity_cases(seed=SEED)


def test_every_method_and_option_is_covered():
    from peftbook.methods import TRAINABLE_METHODS

    covered = {(method, label) for method, label, *_ in CASES}
    assert {method for method, _ in covered} == set(TRAINABLE_METHODS)
    assert {label for _, label in covered} == {label for label, *_ in OPTION_GRID}
    assert ("prefix_tuning", "grad checkpointing") in covered  # prefix tuning trains under checkpointing
    assert len({(c[4].hidden_size, c[4].num_hidden_layers, c[4].vocab_size) for c in CASES}) > len(CASES) // 2


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{c[1].replace(' ', '_')}" for c in CASES])
def test_simulated_within_5_percent_of_measured(case):
    method, _, options, dtype, config, batch, seq = case
    row = compare(config, method, options, dtype, batch, seq)
    assert abs(row["error"]) <= 0.05, row


@pytest.mark.parametrize("draw", range(3))
def test_qlora_on_more_shapes(draw):
    rng = random.Random(SEED + 100 + draw)
    config, batch, seq = random_llama_shape(rng)
    row = compare(config, "qlora", StepOptions(device="cpu"), "fp32", batch, seq)
    assert abs(row["error"]) <= 0.05, row


@pytest.mark.parametrize("method", ["qlora", "full"])
def test_the_cpu_allocator_sees_no_more_than_the_tracker(method):
    """PyTorch's profiler (every CPU allocation, kernel scratch included) against the tracker, on a real step."""
    import torch

    from peftbook.memory import measure_memory
    from peftbook.memory.fidelity import allocator_peak
    from peftbook.memory.simulate import build_model
    from peftbook.methods import make_config

    config, batch, seq = random_llama_shape(random.Random(SEED))
    torch.manual_seed(0)
    model = build_model(config, torch.float32, None if method == "full" else make_config(method))
    report = measure_memory(model, batch, seq)
    tracked = report.peak_bytes - report.timeline[0]  # above what existed on entry, as the profiler counts
    assert abs(allocator_peak(model, batch, seq) - tracked) <= 0.01 * tracked
