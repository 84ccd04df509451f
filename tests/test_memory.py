"""Memory: the tracker (measure), the fake-tensor simulator, the closed form, the table, the CLI, plots.

Expected numbers are derived independently of the tracker: from tensor shapes (numel * element
size), from the method files' closed-form parameter counts, or from the real run (measured) that
the simulation must reproduce.
"""
from __future__ import annotations

import importlib
import json
import math
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from peftbook.memory import (CATEGORIES, estimate_memory, measure_memory, simulate_by_depth, simulate_memory,
                             track_memory)
from peftbook.memory.simulate import build_model
from peftbook.methods import TRAINABLE_METHODS, make_config
from peftbook.models import TINY_DIR
from peftbook.zoo import tiny_random_config

pytestmark = pytest.mark.unit

ARCHS = ("llama", "gpt2", "gemma2")  # different shapes, norms, MLPs, attention kernels
SETTINGS = ((2, 16), (3, 48))  # (batch, seq)


def method_config_or_skip(name: str):
    try:
        importlib.import_module(f"peftbook.methods.{name}")
    except ModuleNotFoundError as error:
        if error.name == f"peftbook.methods.{name}":
            pytest.skip(f"method module peftbook.methods.{name} does not exist yet")
        raise
    return make_config(name)


def assert_sums_to_peak(report) -> None:
    by_category = report.by_category if hasattr(report, "by_category") else report["by_category"]
    peak = report.peak_bytes if hasattr(report, "peak_bytes") else report["peak_bytes"]
    assert set(by_category) == set(CATEGORIES)
    assert sum(by_category.values()) == peak
    assert all(v >= 0 for v in by_category.values())


# -- measure ---------------------------------------------------------------------------------
def test_track_memory_counts_a_known_allocation():
    with track_memory("cpu") as mem:
        a = torch.empty(1000, dtype=torch.float32)  # 4000 bytes
        b = torch.empty(500, dtype=torch.float64)  # 4000 bytes
        del a
        c = torch.empty(250, dtype=torch.float16)  # 500 bytes, after a is freed
        del b, c
    assert mem.peak_bytes == 8000
    assert mem.by_category["activations"] == 8000
    assert mem.report.timeline[0] == 0 and mem.report.timeline[-1] == 0
    assert_sums_to_peak(mem)


def test_views_share_one_storage():
    with track_memory("cpu") as mem:
        x = torch.zeros(64, 64)
        y = x.view(-1)[:10]  # a view: no new storage
        z = x.t()
        del x, y, z
    assert mem.peak_bytes == 64 * 64 * 4


def test_weights_gradients_optimizer_by_identity():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32, bias=False), nn.ReLU(), nn.Linear(32, 16, bias=False))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(8, 64)
    model(x).sum().backward()
    optimizer.step()  # creates AdamW state: exp_avg, exp_avg_sq (+ a scalar step per parameter)
    optimizer.zero_grad(set_to_none=True)
    weight_bytes = (64 * 32 + 32 * 16) * 4
    with track_memory("cpu", model=model, optimizer=optimizer, extra=[x]) as mem:
        loss = model(x).sum()
        mem.mark("backward")
        loss.backward()
        mem.mark("optimizer")
        optimizer.step()
        mem.mark("zero_grad")
        optimizer.zero_grad(set_to_none=True)
    assert mem.by_category["weights"] == weight_bytes
    assert mem.by_category["optimizer"] == 2 * weight_bytes + 2 * 4  # two moments + two fp32 step counters
    assert mem.by_category["other"] == x.numel() * 4
    assert mem.by_category["gradients"] == weight_bytes  # the peak is in the optimizer step, grads alive
    assert_sums_to_peak(mem)
    assert [label for _, label in mem.report.markers] == ["backward", "optimizer", "zero_grad"]


def test_bad_device():
    with pytest.raises(ValueError, match="not supported"):
        track_memory("mps")


# -- simulate vs measure, every method -------------------------------------------------------
_measured: dict = {}


def measured_report(arch, method, batch, seq, dtype="fp32"):
    key = (arch, method, batch, seq, dtype)
    if key not in _measured:
        torch.manual_seed(0)
        model = build_model(tiny_random_config(arch), torch.float32, make_config(method))
        _measured[key] = measure_memory(model, batch, seq, dtype=dtype)
    return _measured[key]


@pytest.mark.parametrize("batch,seq", SETTINGS)
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method", TRAINABLE_METHODS)
def test_simulated_matches_measured_on_cpu(method, arch, batch, seq):
    method_config = method_config_or_skip(method)
    measured = measured_report(arch, method, batch, seq)
    simulated = simulate_memory(tiny_random_config(arch), method_config, batch, seq, "fp32", device="cpu")
    assert_sums_to_peak(measured)
    assert_sums_to_peak(simulated)
    assert abs(simulated.peak_bytes - measured.peak_bytes) <= 0.05 * measured.peak_bytes, (
        simulated.by_category, measured.by_category)
    estimated = estimate_memory(tiny_random_config(arch), method_config, batch, seq, "fp32", device="cpu")
    assert_sums_to_peak(estimated)
    assert abs(estimated["peak_bytes"] - measured.peak_bytes) <= 0.25 * measured.peak_bytes, (
        estimated["by_category"], measured.by_category)


@pytest.mark.parametrize("method", ["full", "lora"])
def test_mixed_precision_simulated_matches_measured(method):
    method_config_or_skip(method)
    measured = measured_report("llama", method, 2, 16, dtype="mixed")
    simulated = simulate_memory(tiny_random_config("llama"), make_config(method), 2, 16, "mixed", device="cpu")
    assert abs(simulated.peak_bytes - measured.peak_bytes) <= 0.05 * measured.peak_bytes


@pytest.mark.skipif(not (TINY_DIR / "config.json").exists(), reason="the embedded tiny base (data/tiny) is not built")
@pytest.mark.parametrize("method", TRAINABLE_METHODS)
def test_simulated_matches_measured_on_tiny_base(method):
    from peftbook import apply, load_model

    method_config = method_config_or_skip(method)
    model, _ = load_model("tiny", dtype="fp32", device="cpu")
    if method == "full":
        model.requires_grad_(True)
    apply(model, method_config) if method != "full" else apply(model, make_config("full"))
    measured = measure_memory(model, 2, 32)
    simulated = simulate_memory("tiny", make_config(method), 2, 32, "fp32", device="cpu")
    assert abs(simulated.peak_bytes - measured.peak_bytes) <= 0.05 * measured.peak_bytes


def test_qlora_weights_are_four_bit():
    method_config_or_skip("qlora")
    config = tiny_random_config("llama")
    lora = simulate_memory(config, make_config("lora"), 1, 8, "fp32", device="cpu")
    qlora = simulate_memory(config, make_config("qlora"), 1, 8, "fp32", device="cpu")
    from peftbook.surgery import linear_shapes

    # per quantized layer of n weights: n/2 packed bytes, an 8-bit absmax per block of 64, an fp32
    # absmax per 256 of those (double quantization), the NF4 code (16 fp32), the 8-bit code of the
    # nested quantization (256 fp32) and its fp32 offset -- instead of 4n bytes of fp32 weight
    expected = 0
    for d_in, d_out in linear_shapes(config).values():
        n = d_in * d_out
        expected += 4 * n - (n // 2 + n // 64 + 4 * math.ceil(n / 64 / 256) + 16 * 4 + 256 * 4 + 4)
    saved = lora.by_category["weights"] - qlora.by_category["weights"]
    assert saved == expected * config.num_hidden_layers


def test_full_finetune_categories_are_bytes_per_parameter():
    from peftbook.methods.full import num_parameters

    config = tiny_random_config("llama")
    params = num_parameters(config)
    report = simulate_memory(config, None, 1, 4, "fp32", optimizer="adamw", device="cpu")
    assert report.by_category["weights"] >= params * 4  # + rotary buffers
    assert report.by_category["weights"] - params * 4 < 1024
    step_counters = 4 * len(list(build_model(config, torch.float32).parameters()))
    assert report.by_category["optimizer"] == 2 * params * 4 + step_counters


def test_depth_extrapolation_is_exact():
    config = tiny_random_config("llama", num_hidden_layers=12)
    method = make_config("lora")
    full = simulate_memory(config, method, 2, 32, "bf16")
    extrapolated = simulate_by_depth(config, method, 2, 32, "bf16")
    assert extrapolated.peak_bytes == full.peak_bytes
    assert extrapolated.by_category == full.by_category


def test_8b_full_finetuning_per_billion_parameters():
    """Pure bf16 AdamW: 2 + 2 + 4 bytes + a bf16 foreach temporary = 10 B/param; mixed precision: 16 + 4."""
    from peftbook.methods.full import num_parameters
    from peftbook.zoo import llama_config

    params = num_parameters(llama_config("8B"))
    bf16 = simulate_by_depth("llama-8b", None, 1, 512, "bf16")
    mixed = simulate_by_depth("llama-8b", None, 1, 512, "mixed")
    assert 9.9 < bf16.peak_bytes / params < 10.5
    assert 19.9 < mixed.peak_bytes / params < 20.5
    # the rule's 16 bytes are exactly the mixed-precision weights + gradients + Adam states
    by = mixed.by_category
    assert abs((by["weights"] + by["gradients"] + by["optimizer"]) / params - 16) < 0.01


def test_qlora_saving_grows_with_model_size():
    """benchmarks/qlora_crossover.py: activations dominate the tiny base's step, weights dominate 8B's."""
    ratios, shares = [], []
    for model in ("tiny", "llama-1b", "llama-8b"):
        lora, qlora = (simulate_by_depth(model, make_config(m, targets="all-linear"), 16, 96, "bf16")
                       for m in ("lora", "qlora"))
        ratios.append(qlora.peak_bytes / lora.peak_bytes)
        shares.append(lora.by_category["weights"] / lora.by_category["activations"])
    assert ratios[0] > 0.9 and ratios[0] > ratios[1] > ratios[2], ratios
    assert ratios[2] < 0.7, ratios
    assert shares[0] < 0.2 and shares[2] > 1, shares


@pytest.mark.slow
def test_70b_simulation_is_fast_and_allocates_nothing():
    code = textwrap.dedent("""
        import json, resource, time
        from pathlib import Path
        from peftbook.memory import simulate_memory
        start = time.process_time()  # CPU time: the machine may be shared, wall time is not ours
        report = simulate_memory("llama-70b", None, 1, 512, "bf16")
        status = Path("/proc/self/status")  # VmHWM: this program's peak; ru_maxrss also counts the forked parent
        hwm = [line for line in status.read_text().splitlines() if line.startswith("VmHWM")] if status.exists() else []
        rss_mb = int(hwm[0].split()[1]) / 1024 if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({"seconds": time.process_time() - start, "peak": report.peak_bytes, "rss_mb": rss_mb}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["peak"] > 500e9  # a 70B full fine-tune, in bf16
    assert result["rss_mb"] < 1000
    assert result["seconds"] < 30


# -- bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,match", [
    (dict(batch_size=0), "batch_size"), (dict(seq_len=0), "seq_len"), (dict(dtype="int8"), "dtype"),
    (dict(optimizer="lion"), "optimizer"), (dict(device="tpu"), "device"),
])
def test_bad_arguments(kwargs, match):
    args = dict(model_or_config="tiny-llama", method_config=None, batch_size=1, seq_len=8, dtype="fp32")
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        simulate_memory(**args)
    with pytest.raises(ValueError, match=match):
        estimate_memory(**args)


def test_unbuildable_configs(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "no_such_architecture"}')
    with pytest.raises(ValueError, match="no_such_architecture"):
        simulate_memory(str(tmp_path), None, 1, 8)
    from transformers import T5Config

    with pytest.raises(ValueError, match="cannot build a causal LM"):
        simulate_memory(T5Config(d_model=8), None, 1, 8)
    with pytest.raises(FileNotFoundError, match="could not get a config"):
        simulate_memory("/no/such/dir", None, 1, 8)


def test_unknown_method():
    with pytest.raises(ValueError, match="unknown method"):
        make_config("adapterfusion")


# -- table, CLI, plots -----------------------------------------------------------------------
def test_table_rows():
    from peftbook.memory.table import format_table, rule_of_thumb_table

    rows = rule_of_thumb_table(sizes=("1B",), seq_lens=(128,), methods=("full", "lora"))
    assert [r["method"] for r in rows] == ["full", "lora"]
    full, lora = rows
    assert full["simulated_bytes"] > lora["simulated_bytes"]
    assert full["rule_of_thumb_bytes"] == 16 * full["params"]
    assert "llama-1b" in format_table(rows)


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    from peftbook.__main__ import main

    code = main(["memory", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_json(capsys):
    code, out, _ = run_cli(capsys, "--model", "tiny-llama", "--method", "lora", "--rank", "4", "--batch", "2",
                           "--seq", "16", "--dtype", "fp32", "--simulate-device", "cpu", "--measure", "--json")
    assert code == 0
    result = json.loads(out)
    assert set(result) >= {"simulated", "estimated", "measured"}
    assert result["measured"]["peak_bytes"] == result["simulated"]["peak_bytes"]
    assert_sums_to_peak(result["estimated"])


def test_cli_human_and_errors(capsys):
    code, out, _ = run_cli(capsys, "--model", "tiny-gpt2", "--batch", "1", "--seq", "8")
    assert code == 0 and "activations" in out and "peak" in out
    for argv, match in [(("--method", "nope"), "unknown method"), (("--batch", "0"), "batch_size"),
                        (("--dtype", "int4"), "dtype"), (("--method", "prompt_tuning", "--rank", "4"), "--rank")]:
        code, out, err = run_cli(capsys, "--model", "tiny-llama", *argv)
        assert code == 2 and match in err and out == ""


def test_plots():
    from matplotlib.figure import Figure

    from peftbook import plots

    reports = {m: simulate_memory("tiny-llama", make_config(m), 1, 16, "fp32", device="cpu") for m in ("full", "lora")}
    assert isinstance(plots.plot_memory_by_category(reports), Figure)
    assert isinstance(plots.plot_memory_timeline(reports["full"]), Figure)
    assert isinstance(plots.plot_simulated_vs_measured([("full", 2e6, 2.1e6)]), Figure)
    with pytest.raises(ValueError, match="timeline"):
        plots.plot_memory_timeline(simulate_by_depth("tiny-llama", None, 1, 8, "fp32", device="cpu").to_dict())


@pytest.mark.gpu
@pytest.mark.parametrize("method", ["full", "lora", "qlora"])
def test_simulated_matches_measured_on_cuda(method):
    method_config = method_config_or_skip(method)
    config = tiny_random_config("llama")
    with torch.device("cuda"):
        model = build_model(config, torch.bfloat16, method_config)
    measured = measure_memory(model, 2, 64)
    simulated = simulate_memory(config, make_config(method), 2, 64, "bf16", device="cuda")
    assert abs(simulated.peak_bytes - measured.peak_bytes) <= 0.05 * measured.peak_bytes


@pytest.mark.gpu
def test_cuda_snapshot_for_the_memory_viewer(tmp_path):
    import pickle

    model = nn.Linear(256, 256, device="cuda")
    path = tmp_path / "step.pickle"
    with track_memory("cuda", model=model, snapshot=path) as mem:
        model(torch.randn(64, 256, device="cuda")).sum().backward()
    assert mem.peak_bytes >= 256 * 256 * 4 and mem.report.reserved_bytes >= mem.peak_bytes
    assert "segments" in pickle.loads(path.read_bytes())
