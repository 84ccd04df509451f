"""The planner: which methods fit in a GPU's memory, with which options, and the largest batch.

Tiny models and budgets of a few MB keep every case to about a second; the answers are checked
against simulations made here (the planner must agree with the simulator it stands on).
"""
from __future__ import annotations

import json

import pytest

from peftbook.memory import StepOptions, simulate_memory
from peftbook.memory.planner import Margin, largest_batch, ladder, parse_memory, plan

pytestmark = pytest.mark.unit

NO_MARGIN = Margin(context_bytes=0, fraction=0)
SEQ = 32


@pytest.mark.parametrize("text, expected", [
    ("24GB", 24e9), ("24 gb", 24e9), ("80GiB", 80 * 2 ** 30), ("1.5TB", 1.5e12), ("16000MB", 16e9), ("512MiB", 2 ** 29),
])
def test_parse_memory(text, expected):
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text", ["24XB", "GB", "24", "-1GB", "twenty GB", ""])
def test_parse_memory_refuses(text):
    with pytest.raises(ValueError, match="is not a memory size; write a number and a unit, e.g. 24GB"):
        parse_memory(text)
    with pytest.raises(ValueError, match="must be more than zero"):
        parse_memory("0GB")


@pytest.mark.parametrize("fixed, slopes", [(10, (3,)), (50, (0, 2)), (5, (1, 7)), (100, (0,))])
def test_largest_batch_is_the_brute_force_answer(fixed, slopes):
    """A peak that is a maximum of phases, each linear in the batch (constant, then steeper)."""
    calls = []

    def peak(batch):
        calls.append(batch)
        return max(fixed + s * batch * (i + 1) for i, s in enumerate(slopes))

    for budget in (9, 10, 11, 57, 120, 999, 10_000):
        calls.clear()
        expected = max([b for b in range(1, 300) if peak(b) <= budget], default=0)
        calls.clear()
        assert largest_batch(peak, budget, limit=299) == min(expected, 299)
        assert len(set(calls)) <= 20  # a handful of simulations, not a scan


def test_ladder():
    assert [label for label, _ in ladder("lora", StepOptions(device="cuda"))][:3] == [
        "defaults", "gradient checkpointing", "8-bit AdamW"]
    assert "gradient checkpointing" in [label for label, _ in ladder("prefix_tuning", StepOptions())]
    assert "8-bit AdamW" not in [label for label, _ in ladder("qlora", StepOptions())]  # paged 8-bit already


@pytest.fixture(scope="module")
def lora_peaks():
    """Batch-1 peaks of LoRA on tiny-llama: defaults, and with gradient checkpointing."""
    default = simulate_memory("tiny-llama", "lora", 1, SEQ, "bf16").peak_bytes
    checkpointed = simulate_memory("tiny-llama", "lora", 1, SEQ, "bf16",
                                   options=StepOptions(grad_checkpointing=True)).peak_bytes
    assert checkpointed < default
    return default, checkpointed


def test_plan_agrees_with_the_simulator(lora_peaks):
    default, checkpointed = lora_peaks
    budget = (default + checkpointed) // 2  # only checkpointing makes batch 1 fit
    row, = plan("tiny-llama", budget, SEQ, methods=["lora"], margin=NO_MARGIN)["methods"]
    assert row["fits"] and row["needs"] == ["gradient checkpointing"] and row["batch1_bytes"] == checkpointed
    options = StepOptions(**row["options"])
    batch = row["largest_batch"]
    assert batch >= 1
    assert simulate_memory("tiny-llama", "lora", batch, SEQ, "bf16", options=options).peak_bytes <= budget
    assert simulate_memory("tiny-llama", "lora", batch + 1, SEQ, "bf16", options=options).peak_bytes > budget
    assert row["largest_batch_all_savings"] >= batch


def test_plan_says_when_nothing_fits(lora_peaks):
    result = plan("tiny-llama", 1000, SEQ, methods=["lora", "prefix_tuning"], margin=NO_MARGIN)
    assert [row["fits"] for row in result["methods"]] == [False, False]
    assert [t["adds"] for t in result["methods"][1]["tried"]] == ["defaults", "gradient checkpointing",
                                                                  "8-bit AdamW", "chunked LM head"]


def test_lora_that_does_not_fit_points_to_qlora():
    from transformers import LlamaConfig

    wide = LlamaConfig(hidden_size=512, intermediate_size=1024, num_hidden_layers=2, num_attention_heads=4,
                       vocab_size=256, max_position_embeddings=64)  # weights outweigh a short step's activations
    lora = simulate_memory(wide, "lora", 1, 8, "bf16", options=StepOptions(grad_checkpointing=True,
                                                                           optimizer="adamw_8bit")).peak_bytes
    qlora = simulate_memory(wide, "qlora", 1, 8, "bf16").peak_bytes
    assert qlora < lora
    rows = plan(wide, (lora + qlora) // 2, 8, methods=["lora", "qlora"], margin=NO_MARGIN, limit=2)["methods"]
    assert [(r["method"], r["fits"], r["instead"]) for r in rows] == [("lora", False, "qlora"), ("qlora", True, None)]


def test_the_margin_is_taken_off():
    margin = Margin()
    assert margin.usable(24e9) == pytest.approx(24e9 * 0.92 - 0.5e9)
    assert "0.5 GB (CUDA context" in margin.describe(24e9) and "8%" in margin.describe(24e9)
    with pytest.raises(ValueError, match="leaves nothing after the margin"):
        plan("tiny-llama", "0.5GB", SEQ, methods=["lora"])


def test_a_llama_3_size():
    row, = plan("llama-1b", "2.5GB", 64, methods=["qlora"], limit=4)["methods"]
    assert row["fits"] and row["needs"] == [] and row["largest_batch"] == 4  # 4-bit 1B: ~1 GB


def test_a_config_json(tmp_path):
    from peftbook.zoo import tiny_random_config

    tiny_random_config("llama").save_pretrained(tmp_path)
    by_path, = plan(str(tmp_path / "config.json"), 3e6, SEQ, methods=["lora"], margin=NO_MARGIN,
                     limit=8)["methods"]
    by_name, = plan("tiny-llama", 3e6, SEQ, methods=["lora"], margin=NO_MARGIN, limit=8)["methods"]
    assert by_path == by_name


@pytest.mark.parametrize("argv, words", [
    (["--gpu-memory", "24XB"], "GPU memory '24XB' is not a memory size"),
    (["--gpu-memory", "24GB", "--seq", "0"], "seq_len must be an integer >= 1; got 0"),
    (["--gpu-memory", "24GB", "--methods", "dora"], "method 'dora' is not allowed"),
    (["--gpu-memory", "24GB", "--dtype", "int3"], "int3"),
])
def test_cli_refuses_bad_input_before_work(argv, words, capsys, monkeypatch):
    import peftbook.memory.planner as planner
    from peftbook.__main__ import main

    monkeypatch.setattr(planner, "plan_method", lambda *a, **k: pytest.fail("simulated before checking"))
    assert main(["plan", "--model", "llama-8b", *argv]) != 0
    assert words in capsys.readouterr().err


def test_cli(capsys):
    from peftbook.__main__ import main

    assert main(["plan", "--model", "tiny-llama", "--gpu-memory", "1GB", "--seq", "32", "--methods", "lora",
                 "--max-batch", "4", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["methods"][0]["method"] == "lora" and result["usable_bytes"] == pytest.approx(1e9 * 0.92 - 0.5e9)
    assert main(["plan", "--model", "tiny-llama", "--gpu-memory", "1GB", "--seq", "32", "--methods", "qlora",
                 "--max-batch", "8"]) == 0
    out = capsys.readouterr().out
    assert "margin: 0.4 GB usable = 1.0 GB - 0.5 GB (CUDA context" in out
    assert "nothing beyond the defaults" in out and ">= 8" in out
