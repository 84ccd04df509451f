"""Bad inputs, as a new user makes them: every one gives one clear line naming the bad value, and nothing
the user had is lost (issue 18).

The CLI cases run in-process (``peftbook.__main__.main``) and fail before any model is trained; each
asserts exit code 2, ``error: <one line>`` (or argparse's usage line) naming the value, and no traceback.
The API cases assert the exception type (a ``peftbook.errors`` class where one applies, always a
``ValueError``/``OSError`` that older callers catch) and the value in the message.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch

from conftest import make_tiny_model, save_tiny_model
from peftbook.errors import AdapterError, ConfigError, DataError, OutputError, PeftbookError, strict_json

REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def word_task_dir(tmp_path_factory):
    from test_train import write_word_task

    return write_word_task(tmp_path_factory.mktemp("task") / "words")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("model") / "tiny"
    save_tiny_model(directory, "llama")
    return directory


def fake_checkpoint(out: Path, step: int = 2, **config) -> Path:
    """A checkpoint folder with just the state.json that ``--resume`` checks first."""
    from dataclasses import asdict

    from peftbook.train import TrainConfig

    directory = out / "checkpoints" / f"step-{step}"
    directory.mkdir(parents=True)
    saved = {**asdict(TrainConfig()), **config}
    (directory / "state.json").write_text(json.dumps({"step": step, "config": saved, "num_processes": 1}))
    return directory


def cli(argv: list[str], capsys) -> tuple[int, str]:
    from peftbook.__main__ import main

    try:
        code = main(argv)
    except SystemExit as stop:  # argparse: usage + one line
        code = stop.code
    captured = capsys.readouterr()
    return code, captured.err


# ---------------------------------------------------------------- the CLI

# (argv, what the message must contain): "{task}" is a small word task, "{tmp}" a fresh folder.
TRAIN = ["train", "--method", "lora", "--task", "{task}", "--model", "{model}"]
CLI_CASES = [
    # train: values
    (["train", "--method", "dora", "--task", "{task}", "--out", "{tmp}/o"], "'dora'"),
    (["train", "--method", "few_shot", "--task", "{task}", "--out", "{tmp}/o"], "'few_shot' trains nothing"),
    (["train", "--method", "lora", "--task", "nosuchtask", "--out", "{tmp}/o"], "'nosuchtask'"),
    (["train", "--method", "lora", "--task", "{tmp}/missing", "--out", "{tmp}/o"], "missing"),
    ([*TRAIN, "--out", "{tmp}/o", "--steps", "0"], "steps must be >= 1, got 0"),
    ([*TRAIN, "--out", "{tmp}/o", "--steps", "-5"], "got -5"),
    ([*TRAIN, "--out", "{tmp}/o", "--batch-size", "0"], "batch_size must be >= 1, got 0"),
    ([*TRAIN, "--out", "{tmp}/o", "--grad-accum", "0"], "grad_accum must be >= 1, got 0"),
    ([*TRAIN, "--out", "{tmp}/o", "--optimizer", "adam"], "optimizer 'adam' is not allowed"),
    ([*TRAIN, "--out", "{tmp}/o", "--loss-chunk-tokens", "0"], "loss_chunk_tokens"),
    ([*TRAIN, "--out", "{tmp}/o", "--grad-checkpointing-every", "0"], "grad_checkpointing_every"),
    ([*TRAIN, "--out", "{tmp}/o", "--lr", "0"], "learning rate must be > 0, got 0"),
    ([*TRAIN, "--out", "{tmp}/o", "--lr", "-0.01"], "-0.01"),
    ([*TRAIN, "--out", "{tmp}/o", "--lr", "nan"], "nan"),
    ([*TRAIN, "--out", "{tmp}/o", "--lr", "inf"], "inf"),
    ([*TRAIN, "--out", "{tmp}/o", "--warmup", "-1"], "warmup must be >= 0, got -1"),
    ([*TRAIN, "--out", "{tmp}/o", "--schedule", "step"], "'step'"),
    ([*TRAIN, "--out", "{tmp}/o", "--max-length", "1"], "max_length must be >= 2, got 1"),
    ([*TRAIN, "--out", "{tmp}/o", "--eval-every", "-1"], "eval_every must be >= 0, got -1"),
    ([*TRAIN, "--out", "{tmp}/o", "--checkpoint-every", "-1"], "checkpoint_every must be >= 0, got -1"),
    ([*TRAIN, "--out", "{tmp}/o", "--seed", "-3"], "seed must be >= 0, got -3"),
    ([*TRAIN, "--out", "{tmp}/o", "--set", "rank=0"], "rank=0"),
    ([*TRAIN, "--out", "{tmp}/o", "--set", "rank=-4"], "rank=-4"),
    ([*TRAIN, "--out", "{tmp}/o", "--set", "rank=2.5"], "rank=2.5"),
    ([*TRAIN, "--out", "{tmp}/o", "--set", "alpha=0"], "alpha=0"),
    ([*TRAIN, "--out", "{tmp}/o", "--set", "alpha=big"], "alpha='big'"),
    ([*TRAIN, "--out", "{tmp}/o", "--set", "dropout=1.5"], "dropout=1.5"),
    ([*TRAIN, "--out", "{tmp}/o", "--set", "targets=qproj"], "targets='qproj'"),
    ([*TRAIN, "--out", "{tmp}/o", "--set", "targets=[]"], r"targets=\[\]"),
    ([*TRAIN, "--out", "{tmp}/o", "--set", "nosuchfield=1"], "nosuchfield"),
    ([*TRAIN, "--out", "{tmp}/o", "--set", "rank"], "FIELD=VALUE, got 'rank'"),
    (["train", "--method", "prompt_tuning", "--task", "{task}", "--out", "{tmp}/o", "--set", "init=zeros"],
     "init='zeros'"),
    (["train", "--method", "prompt_tuning", "--task", "{task}", "--out", "{tmp}/o", "--set",
      "num_virtual_tokens=0"], "num_virtual_tokens=0"),
    (["train", "--method", "prefix_tuning", "--task", "{task}", "--out", "{tmp}/o", "--set",
      "num_virtual_tokens=-1"], "num_virtual_tokens=-1"),
    (["train", "--method", "llama_adapter", "--task", "{task}", "--out", "{tmp}/o", "--set", "gate=sigmoid"],
     "gate='sigmoid'"),
    (["train", "--method", "llama_adapter", "--task", "{task}", "--out", "{tmp}/o", "--set", "adapter_len=0"],
     "adapter_len=0"),
    (["train", "--method", "qlora", "--task", "{task}", "--out", "{tmp}/o", "--set", "quant_type=int4"],
     "quant_type='int4'"),
    # train: where the results go
    ([*TRAIN, "--out", ""], "out_dir is empty"),
    ([*TRAIN, "--out", "{tmp}/a_file.txt"], "a_file.txt' is an existing file"),
    ([*TRAIN, "--out", "{tmp}/full"], "full' already holds notes.txt"),
    ([*TRAIN, "--out", "{tmp}/full", "--overwrite"], "notes.txt"),
    ([*TRAIN, "--out", "{tmp}/empty", "--resume"], "holds no checkpoint"),
    ([*TRAIN, "--out", "{tmp}/run", "--resume", "--overwrite"], "resume and overwrite"),
    ([*TRAIN, "--out", "{tmp}/run", "--resume", "--lr", "0.5"], "lr 0.5"),
    ([*TRAIN, "--out", "{tmp}/run", "--resume", "--batch-size", "4"], "batch_size 4"),
    ([*TRAIN, "--out", "{tmp}/run", "--resume", "--seed", "7"], "seed 7"),
    (["train", "--method", "lora", "--task", "{task}", "--model", "{tmp}/nomodel", "--out", "{tmp}/o"], "nomodel"),
    # train: argparse
    ([*TRAIN, "--out", "{tmp}/o", "--steps", "ten"], "invalid int value: 'ten'"),
    ([*TRAIN, "--out", "{tmp}/o", "--lr", "fast"], "invalid float value: 'fast'"),
    (["train", "--task", "{task}", "--out", "{tmp}/o"], "--method"),
    (["train", "--method", "lora", "--task", "{task}"], "--out"),
    (["trian"], "invalid choice: 'trian'"),
    # memory
    (["memory", "--model", "llama-8b", "--method", "dora"], "'dora'"),
    (["memory", "--model", "llama-8b", "--method", "few_shot"], "few_shot"),
    (["memory", "--model", "llama-8b", "--method", "lora", "--batch", "0"], "batch_size must be an integer >= 1; got 0"),
    (["memory", "--model", "llama-8b", "--method", "lora", "--seq", "0"], "got 0"),
    (["memory", "--model", "llama-8b", "--method", "lora", "--seq", "-8"], "got -8"),
    (["memory", "--model", "llama-8b", "--method", "lora", "--dtype", "int3"], "int3"),
    (["memory", "--model", "llama-8b", "--method", "lora", "--optimizer", "lion"], "lion"),
    (["memory", "--model", "llama-8b", "--method", "lora", "--simulate-device", "tpu"], "tpu"),
    (["memory", "--model", "llama-8b", "--method", "lora", "--rank", "0"], "rank=0"),
    (["memory", "--model", "{tmp}/nomodel", "--method", "lora"], "nomodel"),
    (["memory", "--model", "llama-8b", "--batch", "one"], "invalid int value: 'one'"),
    # eval
    (["eval", "--model", "{tmp}/configonly", "--task", "{task}"], "configonly holds config.json but lacks weights"),
    (["eval", "--model", "{tmp}/noconfig", "--task", "{task}"], "noconfig is a directory but holds no config.json"),
    (["eval", "--model", "{model}", "--task", "{task}", "--adapter", "{tmp}/noadapter"], "noadapter"),
    (["eval", "--model", "{model}", "--task", "{task}", "--adapter", "{tmp}/truncated"], "adapter_model.safetensors"),
    (["eval", "--model", "{model}", "--task", "{task}", "--adapter", "{tmp}/badjson"], "peftbook_adapter.json"),
    (["eval", "--model", "{model}", "--task", "{task}", "--split", "dev"], "'dev'"),
    (["eval", "--model", "{model}", "--task", "{task}", "--max-examples", "0"], "--max-examples 0 is not allowed"),
    (["eval", "--model", "{model}", "--task", "{task}", "--batch-size", "-2"], "--batch-size -2 is not allowed"),
    (["eval", "--model", "{model}", "--task", "nosuchtask"], "'nosuchtask'"),
    (["eval", "--model", "{model}", "--task", "{tmp}/ints"], "label 1 is a int"),
    (["eval", "--model", "{model}", "--task", "{tmp}/latin1"], "not UTF-8"),
    (["eval", "--model", "{model}", "--task", "{tmp}/brokenjson"], "not valid JSON"),
    # fewshot
    (["fewshot", "--model", "{model}", "--task", "nosuchtask"], "'nosuchtask'"),
    (["fewshot", "--model", "{model}", "--task", "{task}", "--selection", "best"], "invalid choice: 'best'"),
    (["fewshot", "--model", "{model}", "--task", "{task}", "--shots", "two"], "invalid int value: 'two'"),
    (["fewshot", "--model", "{model}", "--task", "{task}", "--examples", "-1"], "--examples -1 is not allowed"),
    (["fewshot", "--model", "{model}", "--task", "{task}", "--draws", "0"], "--draws 0 is not allowed"),
    (["fewshot", "--model", "{model}", "--task", "data2text", "--chat"], "--chat is for classification tasks"),
    (["fewshot", "--model", "{model}", "--task", "{task}", "--chat"], "--chat needs a model whose tokenizer has a chat"),
    # bench
    (["bench", "--methods", "dora", "--out", "{tmp}/b"], "dora"),
    (["bench", "--steps", "0", "--out", "{tmp}/b"], "steps must be >= 1, got 0"),
    (["bench", "--impl", "peft2", "--out", "{tmp}/b"], "peft2"),
    (["bench", "--task", "nosuchtask", "--out", "{tmp}/b"], "'nosuchtask'"),
    (["bench", "--out", "{tmp}/a_file.txt"], "a_file.txt"),
    # notebooks
    (["notebooks", "--only", "05_lora", "-p", "BATCHSIZE", "2", "--out", "{tmp}/nb"], "BATCHSIZE"),
    (["notebooks", "--only", "05_lora", "-p", "steps", "2", "--out", "{tmp}/nb"], "'steps'"),
    (["notebooks", "--only", "99_nope", "--out", "{tmp}/nb"], "99_nope"),
    (["notebooks", "--only", "05_lora", "07_benchmark", "-p", "RANKK", "2", "--out", "{tmp}/nb"], "RANKK"),
]


def prepare(tmp: Path, model_dir: Path) -> None:
    """The folders the CLI cases point at."""
    (tmp / "a_file.txt").write_text("the user's notes\n")
    (tmp / "full").mkdir()
    (tmp / "full" / "notes.txt").write_text("keep me\n")
    (tmp / "empty").mkdir()
    fake_checkpoint(tmp / "run", lr=3e-3, batch_size=16, warmup=max(1, 200 // 10))
    (tmp / "noadapter").mkdir()
    (tmp / "configonly").mkdir()
    (tmp / "configonly" / "config.json").write_text((model_dir / "config.json").read_text())
    (tmp / "noconfig").mkdir()
    for name in ("truncated", "badjson"):
        (tmp / name).mkdir()
        (tmp / name / "peftbook_adapter.json").write_text(json.dumps({"method": "lora", "config": {"rank": 4}}))
        (tmp / name / "adapter_model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":")
    (tmp / "badjson" / "peftbook_adapter.json").write_text("{\"method\": \"lora\", ")
    for name, line in (("ints", b'{"input": "w10 w11", "output": "w5", "label": 1}\n'),
                       ("latin1", '{"input": "caf\u00e9", "output": "w5", "label": "w5"}\n'.encode("latin-1")),
                       ("brokenjson", b'{"input": "w10", "output": \n')):
        (tmp / name).mkdir()
        for split in ("train", "validation", "test"):
            (tmp / name / f"{split}.jsonl").write_bytes(b'{"input": "w7", "output": "w6", "label": "w6"}\n' + line)


@pytest.mark.unit
@pytest.mark.parametrize("argv, words", CLI_CASES, ids=lambda v: " ".join(v)[:60] if isinstance(v, list) else None)
def test_cli_bad_input_gives_one_line(argv, words, tmp_path, word_task_dir, model_dir, capsys):
    prepare(tmp_path, model_dir)
    argv = [a.format(tmp=tmp_path, task=word_task_dir, model=model_dir) for a in argv]
    code, err = cli(argv, capsys)
    assert code == 2, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error:") or "error:" in last, err
    assert re.search(words, last), (words, err)
    # nothing the user had was touched
    assert (tmp_path / "a_file.txt").read_text() == "the user's notes\n"
    assert (tmp_path / "full" / "notes.txt").read_text() == "keep me\n"
    assert sorted(p.name for p in (tmp_path / "full").iterdir()) == ["notes.txt"]


@pytest.mark.unit
def test_debug_shows_the_traceback(tmp_path, word_task_dir, capsys):
    from peftbook.__main__ import main

    with pytest.raises(ConfigError, match="steps must be >= 1"):
        main(["--debug", "train", "--method", "lora", "--task", str(word_task_dir), "--out", str(tmp_path / "o"),
              "--steps", "0"])


# ---------------------------------------------------------------- the API

def train_config_cases():
    from peftbook.train import TrainConfig

    cases = [("max_grad_norm", 0, "max_grad_norm must be > 0 or None"), ("max_grad_norm", -1.0, "got -1.0"),
             ("max_grad_norm", float("nan"), "got nan"), ("eval_every", -1, "eval_every must be >= 0, got -1"),
             ("checkpoint_every", -2, "got -2"), ("eval_examples", 0, "eval_examples"),
             ("memory_steps", -1, "memory_steps"), ("weight_decay", -0.1, "weight_decay must be >= 0, got -0.1"),
             ("steps", 1.5, "steps must be an integer >= 1, got 1.5"), ("steps", "10", "got '10'"),
             ("batch_size", True, "got True"), ("lr", "1e-3", "got '1e-3'"), ("lr", float("inf"), "got inf"),
             ("schedule", "Cosine", "'Cosine'"), ("optimizer", "adam", "'adam'"), ("max_length", 0, "got 0"),
             ("warmup", -1, "got -1"), ("grad_accum", 0, "got 0"), ("seed", -1, "got -1")]
    return [pytest.param(TrainConfig, field, value, words, id=f"{field}={value!r}") for field, value, words in cases]


@pytest.mark.unit
@pytest.mark.parametrize("cls, field, value, words", train_config_cases())
def test_train_config_bad_values(cls, field, value, words):
    with pytest.raises(ConfigError, match=re.escape(words) if "(" in words else words):
        cls(**{field: value}).validate()


@pytest.mark.unit
def test_train_config_combinations():
    from peftbook.train import TrainConfig

    with pytest.raises(ConfigError, match="need out_dir"):
        TrainConfig(resume=True).validate()
    with pytest.raises(ConfigError, match="resume and overwrite"):
        TrainConfig(resume=True, overwrite=True, out_dir="x").validate()
    TrainConfig(max_grad_norm=None).validate()  # None still turns clipping off


METHOD_CASES = [
    ("lora", {"rank": 0}, "rank=0"), ("lora", {"rank": "8"}, "rank='8'"), ("lora", {"alpha": -1}, "alpha=-1"),
    ("lora", {"alpha": "x"}, "alpha='x'"), ("lora", {"dropout": 1.0}, "dropout=1.0"),
    ("lora", {"dropout": None}, "dropout=None"), ("lora", {"targets": "q"}, "targets='q'"),
    ("lora", {"targets": [""]}, "targets=\\[''\\]"), ("lora", {"ranks": 4}, "ranks"),
    ("qlora", {"quant_type": "int8"}, "quant_type='int8'"), ("qlora", {"double_quant": "yes"}, "double_quant='yes'"),
    ("prompt_tuning", {"num_virtual_tokens": 0}, "num_virtual_tokens=0"),
    ("prompt_tuning", {"init": "text"}, "init_text"), ("prompt_tuning", {"init": "zeros"}, "init='zeros'"),
    ("prompt_tuning", {"init_text": "hi"}, "init='random'"),
    ("prefix_tuning", {"num_virtual_tokens": -3}, "num_virtual_tokens=-3"),
    ("prefix_tuning", {"projection_hidden_size": 0}, "projection_hidden_size=0"),
    ("llama_adapter", {"adapter_len": 0}, "adapter_len=0"), ("llama_adapter", {"adapter_layers": True}, "True"),
    ("llama_adapter", {"gate": "scalar_tanh"}, "gate='scalar_tanh'"),
]


@pytest.mark.unit
@pytest.mark.parametrize("method, fields, words", METHOD_CASES, ids=[f"{m}-{f}" for m, f, _ in METHOD_CASES])
def test_method_config_bad_values(method, fields, words):
    from peftbook import make_config

    with pytest.raises(ValueError, match=words):
        make_config(method, **fields).validate()


def bad_apply_calls():
    from peftbook import LoRAConfig, make_config

    return [pytest.param(lambda model: (model, "lora"), "'lora' is not a method config", id="name"),
            pytest.param(lambda model: (model, LoRAConfig), "not the class LoRAConfig", id="class"),
            pytest.param(lambda model: (model, make_config("few_shot")), "trains nothing", id="few_shot"),
            pytest.param(lambda model: ("model", LoRAConfig()), "got str", id="not-a-model"),
            pytest.param(lambda model: (model, LoRAConfig(targets=["nomatch"])), "nomatch", id="lora-targets"),
            pytest.param(lambda model: (model, make_config("qlora", targets=["nomatch"])), "nomatch",
                         id="qlora-targets"),
            pytest.param(lambda model: (model, make_config("llama_adapter", adapter_layers=99)), "99",
                         id="adapter-layers")]


def state_of(model) -> dict:
    return {"modules": [(n, type(m).__name__) for n, m in model.named_modules()],
            "params": {n: (p.detach().clone(), p.requires_grad) for n, p in model.named_parameters()},
            "attributes": sorted(model.__dict__)}


def assert_same(before, model):
    after = state_of(model)
    assert after["modules"] == before["modules"]
    assert after["attributes"] == before["attributes"]
    assert after["params"].keys() == before["params"].keys()
    for name, (tensor, flag) in before["params"].items():
        assert after["params"][name][1] == flag and torch.equal(after["params"][name][0], tensor), name


@pytest.mark.unit
@pytest.mark.parametrize("call, words", bad_apply_calls())
def test_failed_apply_names_the_problem_and_leaves_the_model(call, words):
    from peftbook import apply
    from peftbook.surgery import applied_config

    model = make_tiny_model("llama")
    before = state_of(model)
    with pytest.raises(ValueError, match=words):
        apply(*call(model))
    assert_same(before, model)
    assert applied_config(model) is None
    apply(model, __import__("peftbook").LoRAConfig(rank=2))  # a retry works: nothing half-applied


@pytest.fixture
def saved_adapter(tmp_path):
    from peftbook import LoRAConfig, apply, save_adapter

    model = make_tiny_model("llama")
    apply(model, LoRAConfig(rank=2))
    return save_adapter(model, tmp_path / "adapter")


def break_adapter(directory: Path, how: str) -> None:
    weights, meta = directory / "adapter_model.safetensors", directory / "peftbook_adapter.json"
    if how == "no weights":
        weights.unlink()
    elif how == "truncated weights":
        weights.write_bytes(weights.read_bytes()[:100])
    elif how == "not json":
        meta.write_text("{broken")
    elif how == "unknown method":
        meta.write_text(json.dumps({"method": "dora", "config": {}}))
    elif how == "bad field":
        meta.write_text(json.dumps({"method": "lora", "config": {"rank": 2, "colour": "red"}}))
    elif how == "bad value":
        meta.write_text(json.dumps({"method": "lora", "config": {"rank": 0}}))
    elif how == "other shape":
        from peftbook import LoRAConfig, apply, save_adapter

        other = make_tiny_model("llama", hidden_size=32, intermediate_size=64)
        apply(other, LoRAConfig(rank=2))
        save_adapter(other, directory)
    elif how == "no meta":
        meta.unlink()


ADAPTER_CASES = [("no weights", AdapterError, "adapter_model.safetensors"),
                 ("truncated weights", AdapterError, "adapter_model.safetensors cannot be read"),
                 ("not json", AdapterError, "peftbook_adapter.json"), ("unknown method", AdapterError, "'dora'"),
                 ("bad field", AdapterError, "colour"), ("bad value", ValueError, "rank=0"),
                 ("other shape", AdapterError, "shape"), ("no meta", FileNotFoundError, "peftbook_adapter.json")]


@pytest.mark.unit
@pytest.mark.parametrize("how, error, words", ADAPTER_CASES, ids=[c[0] for c in ADAPTER_CASES])
def test_failed_load_adapter_names_the_file_and_leaves_the_model(saved_adapter, how, error, words):
    from peftbook import load_adapter

    break_adapter(saved_adapter, how)
    model = make_tiny_model("llama")
    before = state_of(model)
    with pytest.raises(error, match=words):
        load_adapter(model, saved_adapter)
    assert_same(before, model)


@pytest.mark.unit
@pytest.mark.parametrize("line, words", [
    (b'{"input": "a", "output": "b", "label": 1}', "label 1 is a int"),
    (b'{"input": "a", "output": "b", "label": [1]}', r"label \[1\]"),
    (b'{"input": "caf\xe9", "output": "b"}', "not UTF-8"),
    (b'{"input": "a"', "not valid JSON"),
    (b'["a", "b"]', "JSON object"),
    (b'{"input": 3, "output": "b"}', "'input'"),
    (b'{"text": "a"}', "'input', 'output'"),
], ids=["int-label", "list-label", "latin-1", "truncated", "array", "int-input", "other-columns"])
def test_bad_task_lines_name_file_and_line(tmp_path, line, words):
    from peftbook.tasks import read_jsonl

    path = tmp_path / "train.jsonl"
    path.write_bytes(b'{"input": "ok", "output": "fine", "label": "fine"}\n' + line + b"\n")
    with pytest.raises(DataError, match=words) as raised:
        read_jsonl(path)
    assert f"{path}:2" in str(raised.value)


@pytest.mark.unit
@pytest.mark.parametrize("args, kwargs, error, words", [
    (("llama-8b", "dora"), {}, ConfigError, "'dora'"),
    (("llama-8b", "few_shot"), {}, ValueError, "trains nothing"),
    (("llama-8b", object()), {}, ValueError, "is not a method config"),
    (("llama-8b", "lora"), {"batch_size": 0}, ValueError, "batch_size must be an integer >= 1; got 0"),
    (("llama-8b", "lora"), {"seq_len": 2.5}, ValueError, "got 2.5"),
    (("llama-8b", "lora"), {"optimizer": "lion"}, ValueError, "'lion'"),
    (("llama-8b", "lora"), {"dtype": "int3"}, ValueError, "int3"),
    ((42, "lora"), {}, ValueError, "got int"),
], ids=["unknown", "few_shot", "object", "batch", "seq", "optimizer", "dtype", "model"])
def test_estimate_memory_bad_arguments(args, kwargs, error, words):
    from peftbook import estimate_memory

    with pytest.raises(error, match=words):
        estimate_memory(*args, **kwargs)


@pytest.mark.unit
def test_estimate_memory_takes_a_method_name():
    from peftbook import estimate_memory, make_config

    assert estimate_memory("llama-1b", "lora") == estimate_memory("llama-1b", make_config("lora"))


@pytest.mark.unit
def test_merge_errors_say_why():
    from peftbook import LoRAConfig, apply, make_config, merge, unmerge

    model = make_tiny_model("llama")
    apply(model, LoRAConfig(rank=2))
    merge(model, unload=True)
    with pytest.raises(ValueError, match=r"unmerge\(\) .* merge\(unload=True\) removed"):
        unmerge(model)
    other = make_tiny_model("llama")
    apply(other, make_config("prompt_tuning", num_virtual_tokens=2))
    with pytest.raises(ValueError, match="this model has prompt_tuning"):
        merge(other)


@pytest.mark.unit
@pytest.mark.parametrize("parameters, words", [
    ({"BATCHSIZE": 2}, "BATCHSIZE"), ({"RANKS": [1]}, "RANKS"), ({"STEP": 1}, "STEP"),
], ids=["BATCHSIZE", "RANKS", "STEP"])
def test_unknown_notebook_parameters_are_errors(parameters, words, tmp_path):
    from peftbook.notebooks import run_notebooks

    with pytest.raises(ConfigError, match=words):
        run_notebooks(["05_lora"], out_dir=tmp_path, parameters=parameters)


@pytest.mark.unit
def test_a_notebook_stopped_by_a_bad_parameter_is_one_line(tmp_path, monkeypatch, capsys):
    """What papermill raises when a notebook's checking cell stops becomes ``error: <notebook, the line>``."""
    import papermill

    def stopped(*args, **kwargs):
        raise papermill.PapermillExecutionError(3, 2, "check_positive('RANK', RANK)", "ConfigError",
                                                "parameter RANK=0 is not allowed; it must be a number >= 1",
                                                ["Traceback (most recent call last):", "..."])

    monkeypatch.setattr(papermill, "execute_notebook", stopped)
    code, err = cli(["notebooks", "--only", "05_lora", "-p", "RANK", "0", "--out", str(tmp_path)], capsys)
    assert code == 2 and "Traceback" not in err
    assert re.search(r"error: notebook 05_lora stopped in cell 2: ConfigError: parameter RANK=0", err), err


@pytest.mark.unit
def test_memory_beyond_the_context_says_so(capsys):
    code, err = cli(["memory", "--model", "llama-8b", "--method", "lora", "--seq", "10000000", "--json"], capsys)
    assert code == 0 and "76.3x llama-8b's context of 131072 tokens" in err


@pytest.mark.unit
def test_errors_keep_the_old_types():
    for cls in (ConfigError, DataError, AdapterError):
        assert issubclass(cls, ValueError) and issubclass(cls, PeftbookError)
    assert issubclass(OutputError, FileExistsError)


@pytest.mark.unit
def test_json_output_is_strict_json():
    document = {"latency_s": float("nan"), "values": [1.0, float("inf")], "ok": 2}
    text = strict_json(document)
    assert json.loads(text, parse_constant=lambda c: pytest.fail(c)) == {"latency_s": None, "values": [1.0, None],
                                                                          "ok": 2}
    assert not math.isnan(json.loads(text)["ok"])


# ---------------------------------------------------------------- no pickle

@pytest.mark.unit
def test_no_pickle_anywhere_in_the_package():
    """Every load is safetensors or ``torch.load(..., weights_only=True)``: a checkpoint runs no code."""
    offenders = []
    for path in (REPO / "peftbook").rglob("*.py"):
        text = path.read_text()
        for number, line in enumerate(text.splitlines(), 1):
            if "weights_only=False" in line or re.search(r"import (cloud)?pickle|from pickle|\b(pickle|dill)\.", line):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
        for match in re.finditer(r"torch\.load\(([^)]*)\)", text):
            if "weights_only=True" not in match.group(1):
                offenders.append(f"{path.relative_to(REPO)}: torch.load without weights_only=True")
    assert offenders == []


@pytest.mark.unit
@pytest.mark.parametrize("method", ["lora", "qlora"])
@pytest.mark.parametrize("unload", [False, True])
def test_failed_merge_leaves_the_model_as_it_was(method, unload, monkeypatch):
    from peftbook import apply, make_config, merge
    from peftbook.methods import lora

    model = make_tiny_model("llama")
    apply(model, make_config(method, rank=2))
    for wrapper in lora.lora_modules(model).values():  # a trained-looking update, so a merge changes weights
        torch.nn.init.normal_(wrapper.lora_B.weight, std=0.1)
    ids = torch.tensor([[3, 5, 7, 9]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    before = state_of(model)
    wrappers = list(lora.lora_modules(model).values())
    if unload:  # every layer merges, then taking the wrappers out fails part-way
        real = lora.replace_module
        calls = []

        def fail_third(*args):
            calls.append(args)
            if len(calls) == 3:
                raise RuntimeError("out of memory (simulated)")
            return real(*args)
        monkeypatch.setattr(lora, "replace_module", fail_third)
    else:  # the third layer's merge fails after two have merged
        original = lora.LoRALinear.merge

        def flaky(self):
            if self is wrappers[2]:
                raise RuntimeError("out of memory (simulated)")
            original(self)
        monkeypatch.setattr(lora.LoRALinear, "merge", flaky)
    with pytest.raises(RuntimeError, match="simulated"):
        merge(model, unload=unload)
    monkeypatch.undo()
    after = state_of(model)
    assert after["modules"] == before["modules"] and after["attributes"] == before["attributes"]
    for name, (tensor, flag) in before["params"].items():
        torch.testing.assert_close(after["params"][name][0], tensor, atol=1e-6, rtol=0)
    assert not any(w.merged for w in lora.lora_modules(model).values())
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, logits, atol=1e-5, rtol=0)
    merge(model)  # and a retry works


@pytest.mark.unit
def test_user_errors_show_as_one_line_in_jupyter():
    # IPython calls _render_traceback_ instead of printing the traceback: a notebook reader sees one line
    from IPython.core.interactiveshell import InteractiveShell

    from peftbook.notebooks import check_choice

    shell = InteractiveShell.instance()
    result = shell.run_cell("from peftbook.notebooks import check_choice\ncheck_choice('TASK', 'sentiment9', ('sentiment',))")
    assert isinstance(result.error_in_exec, ConfigError)
    assert result.error_in_exec._render_traceback_() == [
        "ConfigError: parameter TASK='sentiment9' is not allowed; allowed: 'sentiment'"]
    with pytest.raises(ValueError):  # still a ValueError for code that catches those
        check_choice("TASK", "x", ("y",))
