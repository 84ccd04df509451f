"""The benchmark runner and the train/eval/bench commands, on a tiny random model and a word task."""
from __future__ import annotations

import contextlib
import io
import json

import pytest

from conftest import save_tiny_model
from test_train import write_word_task


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    save_tiny_model(root / "model", "llama")
    write_word_task(root / "task")
    return root


def cli(*argv) -> tuple[int, str, str]:
    from peftbook.__main__ import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def smoke(world):
    """One smoke bench of every method (3 steps), through the CLI with --json."""
    out = world / "out"
    code, stdout, stderr = cli("bench", "--model", world / "model", "--task", world / "task", "--methods", "all",
                               "--steps", 3, "--max-examples", 8, "--out", out, "--json")
    assert code == 0, stderr[-3000:]
    return out, json.loads(stdout)["records"]


@pytest.mark.integration
def test_smoke_bench_runs_every_method_with_the_record_fields(smoke):
    from peftbook.methods import ALL_METHODS
    from peftbook.results import RECORD_FIELDS

    out, records = smoke
    assert [r["method"] for r in records] == list(ALL_METHODS)
    for record in records:
        assert not record.get("error"), record
        assert set(RECORD_FIELDS) <= set(record), set(RECORD_FIELDS) - set(record)
        assert 0.0 <= record["value"] <= 1.0 and record["metric"] == "accuracy"
        assert record["peak_memory_bytes"] > 0 and record["latency_s"] > 0
        # the measured count of trainable parameters is the method's closed form
        assert record["trainable_params"] == record["trainable_closed_form"], record["method"]
        if record["method"] != "few_shot":
            assert record["step_time_s"] > 0 and record["tokens_per_s"] > 0
            assert sum(record["memory_by_category"].values()) == record["peak_memory_bytes"]
    by_method = {r["method"]: r for r in records}
    assert by_method["full"]["trainable_params"] == by_method["full"]["total_params"]
    assert by_method["few_shot"]["trainable_params"] == 0
    assert by_method["lora"]["trainable_params"] == by_method["qlora"]["trainable_params"]
    assert by_method["lora"]["latency_merged_s"] > 0
    # full fine-tuning keeps gradients and AdamW state for every weight: the most optimizer memory
    optimizer_bytes = {m: r["memory_by_category"]["optimizer"] for m, r in by_method.items() if m != "few_shot"}
    assert max(optimizer_bytes, key=optimizer_bytes.get) == "full"
    saved = json.loads((out / "results.json").read_text())
    assert [r["method"] for r in saved["records"]] == list(ALL_METHODS)
    assert (out / "results.csv").read_text().count("\n") == len(ALL_METHODS) + 1
    for name in ("metric_vs_params.png", "peak_memory.png", "step_time.png", "latency.png"):
        assert (out / name).stat().st_size > 1000, name


@pytest.mark.integration
def test_same_configuration_resumes_and_a_different_one_is_refused(world, smoke):
    out, records = smoke
    code, stdout, stderr = cli("bench", "--model", world / "model", "--task", world / "task", "--methods", "lora",
                               "--steps", 3, "--max-examples", 8, "--out", out, "--json")
    assert code == 0 and "reusing" in stderr
    assert json.loads(stdout)["records"] == json.loads(json.dumps(records))  # nothing rerun, nothing lost
    before = (out / "results.json").read_text()
    code, _, stderr = cli("bench", "--model", world / "model", "--task", world / "task", "--methods", "lora",
                          "--steps", 4, "--out", out)
    assert code == 2 and "different configuration" in stderr and "steps" in stderr
    assert (out / "results.json").read_text() == before


@pytest.mark.integration
def test_ctrl_c_in_the_bench_keeps_finished_runs(world, tmp_path, monkeypatch):
    import peftbook.bench as bench

    real = bench.run_trained

    def interrupt_lora(model, task, method, *args, **kwargs):
        if method == "lora":
            raise KeyboardInterrupt
        return real(model, task, method, *args, **kwargs)

    monkeypatch.setattr(bench, "run_trained", interrupt_lora)
    out = tmp_path / "out"
    code, _, stderr = cli("bench", "--model", world / "model", "--task", world / "task", "--methods",
                          "prompt_tuning,lora", "--steps", 2, "--max-examples", 4, "--out", out)
    assert code == 130 and "interrupted" in stderr
    saved = json.loads((out / "results.json").read_text())
    assert [r["method"] for r in saved["records"]] == ["prompt_tuning"]


@pytest.mark.integration
def test_hf_peft_implementation_builds_the_shared_methods(world, tmp_path):
    from peftbook.bench import run_bench

    records = run_bench(str(world / "model"), str(world / "task"), ["lora", "prompt_tuning", "full"], steps=2,
                        impl="hf-peft", out=tmp_path / "hf", progress=False, eval_examples=4,
                        log=lambda *a, **k: None)
    assert [r["method"] for r in records] == ["prompt_tuning", "lora"]  # full is not a PEFT method
    for record in records:
        assert not record.get("error") and record["impl"] == "hf-peft"
        assert record["trainable_params"] == record["trainable_closed_form"]
        assert record["versions"]["peft"]


@pytest.mark.integration
def test_train_then_eval_commands_roundtrip(world, tmp_path):
    out = tmp_path / "run"
    code, stdout, stderr = cli("train", "--model", world / "model", "--method", "lora", "--task", world / "task",
                               "--steps", 3, "--batch-size", 4, "--out", out, "--json")
    assert code == 0, stderr[-3000:]
    summary = json.loads(stdout)
    assert summary["steps_done"] == 3 and summary["trainable_params"] > 0
    assert (out / "adapter" / "adapter_config.json").exists()
    code, _, stderr = cli("train", "--model", world / "model", "--method", "lora", "--task", world / "task",
                          "--steps", 3, "--out", out)
    assert code == 2 and "already holds" in stderr  # never overwrite a run silently
    code, stdout, stderr = cli("eval", "--model", world / "model", "--adapter", out / "adapter", "--task",
                               world / "task", "--split", "validation", "--json")
    assert code == 0, stderr[-3000:]
    result = json.loads(stdout)
    assert result["metric"] == "accuracy" and result["n_examples"] == 16
    assert result["value"] == pytest.approx(summary["validation"]["value"])  # eval --adapter == end of training
    code, stdout, _ = cli("eval", "--model", world / "model", "--task", world / "task", "--max-examples", 4)
    assert code == 0 and "accuracy" in stdout


@pytest.mark.unit
@pytest.mark.parametrize("argv, words", [
    (["bench", "--methods", "lora,dora"], "unknown method.*known: all, few_shot"),
    (["bench", "--steps", "0"], "steps must be >= 1"),
    (["bench", "--impl", "unsloth", "--methods", "lora"], "impl 'unsloth'.*allowed"),
    (["bench", "--task", "sentiment3", "--train-examples", "0"], "train_examples=0 is not allowed; use an integer from 1 to 2100"),
    (["bench", "--task", "sentiment3", "--train-examples", "5000"], "train_examples=5000 is not allowed"),
    (["train", "--method", "dora", "--task", "sentiment", "--out", "x"], "unknown method 'dora'"),
    (["train", "--method", "few_shot", "--task", "sentiment", "--out", "x"], "fewshot"),
    (["train", "--method", "lora", "--task", "sentiment", "--out", "x", "--lr", "0"], "learning rate must be > 0"),
    (["train", "--method", "lora", "--task", "sentiment", "--out", "x", "--batch-size", "0"], "batch_size must be >= 1"),
    (["train", "--method", "lora", "--task", "sentiment", "--out", "x", "--steps", "0"], "steps must be >= 1"),
    (["eval", "--task", "sentiment", "--split", "dev"], "split 'dev'"),
])
def test_bad_input_is_one_clear_error(argv, words, tmp_path):
    import re

    code, _, stderr = cli(*argv)
    assert code == 2 and re.search(words, stderr), stderr


@pytest.mark.unit
def test_unknown_task_lists_the_known_ones(world, tmp_path):
    code, _, stderr = cli("bench", "--model", world / "model", "--task", "sentimnt", "--methods", "lora",
                          "--out", tmp_path / "o")
    assert code == 2 and "unknown task 'sentimnt'" in stderr and "sentiment" in stderr


@pytest.mark.unit
def test_hf_peft_without_peft_installed_is_refused(world, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "peft", None)  # import peft -> ImportError
    code, _, stderr = cli("bench", "--model", world / "model", "--task", world / "task", "--methods", "lora",
                          "--impl", "hf-peft", "--out", tmp_path / "o")
    assert code == 2 and "needs the `peft` package" in stderr


@pytest.mark.integration
def test_learning_rate_tuning_uses_validation_only(world, tmp_path):
    import shutil

    from peftbook.bench import tune_learning_rates

    no_test = tmp_path / "task"
    no_test.mkdir()
    for split in ("train", "validation"):  # no test split at all: touching it would raise
        shutil.copy(world / "task" / f"{split}.jsonl", no_test / f"{split}.jsonl")
    table = tune_learning_rates(str(world / "model"), str(no_test), ["lora"], steps=2, grid=(1e-3, 1e-2),
                                eval_examples=4, log=lambda *a, **k: None)
    assert set(table) == {"lora"} and set(table["lora"]) == {1e-3, 1e-2}
    assert all(0.0 <= v <= 1.0 for v in table["lora"].values())


@pytest.mark.integration
def test_generation_bench_reports_bleu_and_rouge_per_method(world, tmp_path):
    from peftbook.bench import run_bench

    write_word_task(tmp_path / "gen", "generation")
    records = run_bench(str(world / "model"), str(tmp_path / "gen"), ["few_shot", "prefix_tuning", "lora"], steps=2,
                        out=tmp_path / "out", progress=False, eval_examples=4, log=lambda *a, **k: None)
    assert [r["method"] for r in records] == ["few_shot", "prefix_tuning", "lora"]
    for record in records:
        assert not record.get("error"), record
        assert record["metric"] == "rougeL" and {"bleu", "rougeL"} <= set(record)
        assert record["value"] == pytest.approx(record["rougeL"]) and record["latency_s"] > 0


def test_method_defaults_apply_the_task_overrides():
    from peftbook.methods import METHODS, method_defaults

    lora = METHODS["lora"]
    assert method_defaults("lora", "sentiment") == {"config": lora.defaults, "lr": lora.lr}
    data2text = method_defaults("lora", "data2text")
    assert data2text["config"]["targets"] == "all-linear" and data2text["config"]["rank"] == 8
    assert method_defaults("full", "data2text")["lr"] != METHODS["full"].lr
    assert method_defaults("prompt_tuning", "some/folder") == {"config": METHODS["prompt_tuning"].defaults,
                                                               "lr": METHODS["prompt_tuning"].lr}
    assert "targets" not in lora.defaults  # the overrides did not leak


def test_a_large_model_takes_each_methods_large_model_settings_over_the_tasks():
    from peftbook.methods import LARGE_MODEL_PARAMETERS, METHODS, TRAINABLE_METHODS, method_defaults

    small, large = LARGE_MODEL_PARAMETERS - 1, LARGE_MODEL_PARAMETERS
    for name in TRAINABLE_METHODS:
        method = METHODS[name]
        for task in ("sentiment", "sentiment3", "data2text"):
            assert method_defaults(name, task, small) == method_defaults(name, task)  # the tiny base's
            chosen = method_defaults(name, task, large)
            assert chosen["lr"] == method.large_model.get("lr", method_defaults(name, task)["lr"])
            assert chosen["config"] == {**method_defaults(name, task)["config"], **method.large_model.get("config", {})}
    assert method_defaults("prefix_tuning", "sentiment", large)["config"]["init"] == "vocab"
    assert "init" not in method_defaults("prefix_tuning", "sentiment", small)["config"]  # N(0, 1), HF PEFT's
    assert method_defaults("lora", "data2text", large)["config"]["targets"] == "all-linear"  # the task's stays


def test_parameter_count_reads_the_config_without_loading_weights():
    from peftbook.models import load_model, parameter_count

    model, _ = load_model("tiny", device="cpu")
    assert parameter_count("tiny") == sum(p.numel() for p in model.parameters())
    with pytest.raises(FileNotFoundError, match="could not load model 'no/such/model-folder'"):
        parameter_count("no/such/model-folder")


@pytest.mark.integration
def test_bench_with_few_training_examples_records_them(world, tmp_path):
    from peftbook.bench import run_bench

    records = run_bench(str(world / "model"), str(world / "task"), ["few_shot", "lora"], steps=2, train_examples=8,
                        out=tmp_path / "out", progress=False, eval_examples=4, few_shot_draws=2,
                        log=lambda *a, **k: None)
    assert [r["method"] for r in records] == ["few_shot", "lora"]
    assert all(r["train_examples"] == 8 and not r.get("error") for r in records), records
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["settings"]["train_examples"] == 8
