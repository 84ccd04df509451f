"""Nothing the user had is lost, however a run ends (issue 18): SIGTERM, existing folders and files,
``--overwrite``, a crash in the middle of a checkpoint, saving over an adapter."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import make_tiny_model, save_tiny_model
from test_train import write_word_task

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("model") / "tiny"
    save_tiny_model(directory, "llama")
    return directory


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    return write_word_task(tmp_path_factory.mktemp("task") / "words")


def train_argv(model_dir, task_dir, out, *extra) -> list[str]:
    return ["train", "--model", str(model_dir), "--method", "lora", "--task", str(task_dir), "--out", str(out),
            "--batch-size", "4", "--warmup", "1", "--device", "cpu", "--json", *extra]


@pytest.mark.integration
def test_sigterm_saves_like_ctrl_c_and_resume_continues(tmp_path, model_dir, task_dir, capsys):
    """A real SIGTERM to a training process: exit 143, adapter + history + checkpoint saved, --resume goes on."""
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "peftbook", *train_argv(model_dir, task_dir, out, "--steps",
                                                                              "100000", "--checkpoint-every", "2")],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not (out / "checkpoints" / "step-2" / "state.json").exists():
            assert process.poll() is None, process.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "training did not reach step 2"
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 143, stderr[-3000:]
    assert "interrupted (SIGTERM)" in stderr and "--resume" in stderr
    summary = json.loads(stdout)
    history = json.loads((out / "history.json").read_text())
    done = history["steps_done"]
    assert history["interrupted"] and history["interrupted_by"] == "SIGTERM" and done >= 2
    assert summary["steps_done"] == done and len(history["history"]) == done
    assert (out / "adapter" / "adapter_model.safetensors").exists()
    from peftbook.train import latest_checkpoint

    assert latest_checkpoint(out).name == f"step-{done}"
    assert not [p.name for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]  # no half checkpoint

    from peftbook.__main__ import main

    code = main(train_argv(model_dir, task_dir, out, "--steps", str(done + 2), "--resume"))
    assert code == 0, capsys.readouterr().err
    resumed = json.loads((out / "history.json").read_text())
    assert resumed["steps_done"] == done + 2 and not resumed["interrupted"]
    assert resumed["history"][:done] == history["history"]


@pytest.mark.integration
def test_overwrite_replaces_an_earlier_run_without_mixing_checkpoints(tmp_path, model_dir, task_dir, capsys):
    from peftbook.__main__ import main
    from peftbook.train import latest_checkpoint

    out = tmp_path / "run"
    stale = out / "checkpoints" / "step-5"  # a crashed earlier run got further than the new one will
    stale.mkdir(parents=True)
    (stale / "state.json").write_text("{}")
    (out / "history.json").write_text("{}")
    before = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    assert main(train_argv(model_dir, task_dir, out, "--steps", "2", "--checkpoint-every", "2")) == 2
    assert "already holds" in capsys.readouterr().err
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == before  # refused: nothing touched
    assert main(train_argv(model_dir, task_dir, out, "--steps", "2", "--checkpoint-every", "2", "--overwrite")) == 0
    assert latest_checkpoint(out).name == "step-2"
    assert not stale.exists()
    assert json.loads((out / "history.json").read_text())["steps_done"] == 2


@pytest.mark.integration
def test_refused_outputs_cost_no_training_and_touch_nothing(tmp_path, model_dir, task_dir, capsys):
    from peftbook.__main__ import main

    existing = tmp_path / "results.txt"
    existing.write_text("mine")
    user_dir = tmp_path / "mine"
    (user_dir / "adapter").mkdir(parents=True)
    (user_dir / "adapter" / "adapter_config.json").write_text('{"peft_type": "PREFIX_TUNING"}')
    start = time.perf_counter()
    for out in (existing, user_dir):
        assert main(train_argv(model_dir, task_dir, out, "--steps", "50")) == 2
    assert "error:" in capsys.readouterr().err
    assert time.perf_counter() - start < 30  # refused before loading a model or training
    assert existing.read_text() == "mine"
    assert (user_dir / "adapter" / "adapter_config.json").read_text() == '{"peft_type": "PREFIX_TUNING"}'
    assert main(["bench", "--model", str(model_dir), "--task", str(task_dir), "--out", str(existing)]) == 2
    assert "results.txt" in capsys.readouterr().err and existing.read_text() == "mine"


@pytest.mark.unit
def test_a_checkpoint_half_written_by_a_crash_is_never_resumed(tmp_path):
    from peftbook.train import latest_checkpoint

    complete = tmp_path / "checkpoints" / "step-2"
    complete.mkdir(parents=True)
    (complete / "state.json").write_text("{}")
    half = tmp_path / "checkpoints" / ".step-4.tmp"  # the crash came before the rename
    half.mkdir()
    (half / "state.json").write_text("{}")
    no_state = tmp_path / "checkpoints" / "step-6"  # an older layout's crash: state.json is written last
    no_state.mkdir()
    assert latest_checkpoint(tmp_path) == complete


@pytest.mark.unit
def test_save_adapter_replaces_an_adapter_whole_and_refuses_other_folders(tmp_path):
    from peftbook import LoRAConfig, apply, load_adapter, make_config, save_adapter
    from peftbook.errors import OutputError

    model = make_tiny_model("llama")
    apply(model, make_config("prompt_tuning", num_virtual_tokens=2))
    target = save_adapter(model, tmp_path / "adapter")
    (target / "stale.bin").write_bytes(b"old")
    lora_model = make_tiny_model("llama")
    apply(lora_model, LoRAConfig(rank=2))
    save_adapter(lora_model, target)
    assert not (target / "stale.bin").exists()
    assert json.loads((target / "adapter_config.json").read_text())["peft_type"] == "LORA"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left
    load_adapter(make_tiny_model("llama"), target)

    users = tmp_path / "notes"
    users.mkdir()
    (users / "todo.txt").write_text("keep")
    a_file = tmp_path / "file.txt"
    a_file.write_text("keep")
    for destination in (users, a_file):
        with pytest.raises(OutputError, match=destination.name):
            save_adapter(lora_model, destination)
    assert (users / "todo.txt").read_text() == "keep" and a_file.read_text() == "keep"


@pytest.mark.unit
def test_failed_qlora_apply_quantizes_nothing():
    pytest.importorskip("bitsandbytes")
    from peftbook import apply, make_config

    model = make_tiny_model("llama")
    linear_types = {n: type(m) for n, m in model.named_modules()}
    with pytest.raises(ValueError, match="nomatch"):
        apply(model, make_config("qlora", targets=["nomatch"]))
    assert {n: type(m) for n, m in model.named_modules()} == linear_types


def test_strict_json_writes_null_for_nan_and_infinity():
    """What train writes history.json and state.json with: a strict parser reads it, non-finite values are null."""
    import json as strict

    from peftbook.errors import strict_json

    text = strict_json({"losses": [1.0, float("nan")], "latency_s": float("inf")})
    assert strict.loads(text, parse_constant=lambda name: (_ for _ in ()).throw(ValueError(name))) == {
        "losses": [1.0, None], "latency_s": None}


@pytest.mark.integration
@pytest.mark.parametrize("when", ["checkpoint", "adapter"])
def test_a_second_signal_while_saving_waits_for_the_files(tmp_path, model_dir, task_dir, monkeypatch, when):
    """Ctrl-C at step 2, then SIGTERM (or Ctrl-C again) while the run is being saved: the save finishes,
    the signal is recorded, nothing is half-written."""
    import peftbook

    training = sys.modules["peftbook.train"]  # the module (peftbook.train the attribute is the function)

    model, tokenizer = peftbook.load_model(str(model_dir), device="cpu")
    peftbook.apply(model, peftbook.LoRAConfig(rank=2))
    real = {"checkpoint": training.save_checkpoint, "adapter": training.save_adapter}[when]
    second = {"checkpoint": signal.SIGTERM, "adapter": signal.SIGINT}[when]

    def save_and_get_signalled(*args, **kwargs):
        os.kill(os.getpid(), second)  # arrives at once, in the middle of the save
        return real(*args, **kwargs)
    monkeypatch.setattr(training, {"checkpoint": "save_checkpoint", "adapter": "save_adapter"}[when],
                        save_and_get_signalled)

    def ctrl_c_at_step_2(step, result):
        if step == 2:
            raise KeyboardInterrupt

    config = peftbook.TrainConfig(steps=50, batch_size=4, warmup=1, out_dir=str(tmp_path / "run"), progress=False)
    result = peftbook.train(model, tokenizer, str(task_dir), config, callbacks=[ctrl_c_at_step_2])
    assert result.interrupted and result.steps_done == 2
    assert result.signals_while_saving and set(result.signals_while_saving) == {signal.Signals(second).name}
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history["signals_while_saving"] == result.signals_while_saving
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").exists()
    assert (tmp_path / "run" / "checkpoints" / "step-2" / "state.json").exists()
