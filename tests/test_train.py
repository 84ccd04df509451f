"""The training loop: loss masking, determinism, resume, Ctrl-C, bad input, 2-process Accelerate."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import make_word_tokenizer, save_tiny_model

REPO = Path(__file__).resolve().parent.parent


def write_word_task(directory, kind: str = "classification", n_train: int = 48, n_val: int = 16, n_test: int = 16):
    """A tiny word-level task as JSONL (words w4..w127 of the test tokenizer); returns the directory.

    classification: the label is w5 when w10 occurs in the input, else w6 (learnable).
    generation: the output repeats the first two input words (a copy task).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(123)
    for split, n in (("train", n_train), ("validation", n_val), ("test", n_test)):
        rows = []
        for i in range(n):
            words = [f"w{int(w)}" for w in torch.randint(20, 120, (5,), generator=generator)]
            if kind == "classification":
                if i % 2 == 0:
                    words[int(torch.randint(0, 5, (1,), generator=generator))] = "w10"
                label = "w5" if "w10" in words else "w6"
                rows.append({"input": " ".join(words), "output": label, "label": label})
            else:
                rows.append({"input": " ".join(words), "output": " ".join(words[:2])})
        (directory / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return directory


def word_task(directory, kind: str = "classification"):
    from peftbook.tasks import load_task

    return load_task(str(write_word_task(directory, kind)))


@pytest.fixture
def tiny_dir(tmp_path):
    save_tiny_model(tmp_path / "model", "llama")
    return tmp_path / "model"


@pytest.fixture
def cls_task(tmp_path):
    return word_task(tmp_path / "task_cls", "classification")


def fresh(model_dir):
    from peftbook import load_model

    return load_model(str(model_dir), device="cpu", dtype="fp32")


def lora(model):
    from peftbook import apply, make_config

    torch.manual_seed(0)  # LoRA's A is random: the caller seeds the method's init
    return apply(model, make_config("lora", rank=4, alpha=8, dropout=0.1))


def cfg(**overrides):
    from peftbook.train import TrainConfig

    base = dict(steps=6, batch_size=4, lr=1e-2, warmup=1, eval_examples=8, memory_steps=0, progress=False,
                final_eval=False)
    base.update(overrides)
    return TrainConfig(**base)


def trainable(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.unit
def test_encode_masks_prompt_and_appends_eos_for_generation(tmp_path):
    from peftbook.train import encode_example

    tokenizer = make_word_tokenizer()
    cls = word_task(tmp_path / "c", "classification")
    example = cls.examples("train")[0]
    ids, labels = encode_example(tokenizer, cls, example, max_length=256)
    prompt_len = len(tokenizer(cls.prompt(example))["input_ids"])
    assert labels[:prompt_len] == [-100] * prompt_len
    assert labels[prompt_len:] == ids[prompt_len:] and len(ids) > prompt_len
    assert tokenizer.eos_token_id not in ids[prompt_len:]
    gen = word_task(tmp_path / "g", "generation")
    ids, labels = encode_example(tokenizer, gen, gen.examples("train")[0], max_length=256)
    assert ids[-1] == tokenizer.eos_token_id and labels[-1] == tokenizer.eos_token_id
    ids, labels = encode_example(tokenizer, gen, gen.examples("train")[0], max_length=4)
    assert len(ids) == 4 and labels[-1] == tokenizer.eos_token_id  # truncation keeps the target


@pytest.mark.unit
def test_loss_ignores_prompt_tokens():
    from peftbook.lm_loss import target_token_loss

    logits = torch.randn(1, 5, 11)
    labels = torch.tensor([[-100, -100, 3, 4, -100]])
    expected = -(torch.log_softmax(logits[0, 1], -1)[3] + torch.log_softmax(logits[0, 2], -1)[4])
    assert torch.allclose(target_token_loss(logits, labels), expected)
    # prepended virtual tokens: the last T logits are the real ones
    longer = torch.cat([torch.randn(1, 3, 11), logits], dim=1)
    assert torch.allclose(target_token_loss(longer, labels), expected)


@pytest.mark.unit
def test_schedule_warmup_then_cosine_to_zero():
    from peftbook.train import TrainConfig, lr_lambda

    factor = lr_lambda(TrainConfig(steps=10, warmup=2, schedule="cosine"))
    values = [factor(s) for s in range(10)]
    assert values[0] < values[1] < values[2] == 1.0
    assert all(a >= b for a, b in zip(values[2:], values[3:])) and values[-1] < 0.05
    linear = lr_lambda(TrainConfig(steps=10, warmup=0, schedule="linear"))
    assert linear(5) == pytest.approx(0.5)


@pytest.mark.unit
@pytest.mark.parametrize("field, value, words", [
    ("steps", 0, "steps"), ("lr", 0.0, "learning rate"), ("lr", -1e-3, "learning rate"),
    ("batch_size", 0, "batch_size"), ("schedule", "step", "cosine"), ("optimizer", "adam", "adamw_fused"),
    ("loss_chunk_tokens", 0, "loss_chunk_tokens"), ("loss_chunk_tokens", "512", "loss_chunk_tokens"),
    ("grad_checkpointing_every", 0, "grad_checkpointing_every"),
    ("keep_best", True, "keep_best needs eval_every"),
])
def test_bad_config_raises(field, value, words):
    from peftbook.train import TrainConfig

    with pytest.raises(ValueError, match=words):
        TrainConfig(**{field: value}).validate()


@pytest.mark.integration
def test_training_lowers_loss_and_is_deterministic(tiny_dir, cls_task):
    from peftbook.train import train

    runs = []
    for _ in range(2):
        model, tokenizer = fresh(tiny_dir)
        lora(model)
        result = train(model, tokenizer, cls_task, cfg(steps=12, eval_every=6, final_eval=True))
        runs.append((result, trainable(model)))
    (first, weights1), (second, weights2) = runs
    assert first.losses == second.losses  # bitwise on CPU
    assert [e["value"] for e in first.evals] == [e["value"] for e in second.evals]
    assert [e["step"] for e in first.evals] == [6, 12]
    assert all(torch.equal(weights1[k], weights2[k]) for k in weights1)
    assert sum(first.losses[-3:]) / 3 < sum(first.losses[:3]) / 3
    assert first.step_time_s > 0 and first.tokens_per_s > 0


@pytest.mark.integration
def test_keep_best_ends_with_the_weights_of_the_best_validation_score(tiny_dir, cls_task):
    """The weights seen at each evaluation are kept by a callback; the run must end with the best one's."""
    from peftbook.train import train

    model, tokenizer = fresh(tiny_dir)
    lora(model)
    seen = {}
    # lr 0.5 overshoots: validation 0.5, 0.875, 0.75, 0.625 at steps 3..12, so the best is not the last
    result = train(model, tokenizer, cls_task, cfg(steps=12, eval_every=3, final_eval=True, keep_best=True, lr=0.5),
                   callbacks=[lambda step, r: seen.__setitem__(step, trainable(model))])
    values = [e["value"] for e in result.evals]
    first_best = next(e for e in result.evals if e["value"] == max(values))
    assert result.best == {"step": first_best["step"], "value": first_best["value"]}
    assert result.best["step"] < 12, "the test needs a run whose best evaluation is not its last"
    kept = seen[result.best["step"]]
    assert all(torch.equal(kept[name], weight) for name, weight in trainable(model).items())
    model, tokenizer = fresh(tiny_dir)
    lora(model)
    plain = train(model, tokenizer, cls_task, cfg(steps=12, eval_every=3, final_eval=True, lr=0.5))
    assert plain.best is None and all(torch.equal(seen[12][n], w) for n, w in trainable(model).items())


@pytest.mark.integration
def test_grad_accum_matches_one_big_batch(tiny_dir, cls_task):
    """4 micro-batches of 2 == one batch of 8: the loss is normalised by the global target count."""
    from peftbook.train import train

    results = []
    for batch_size, accum in ((8, 1), (2, 4)):
        model, tokenizer = fresh(tiny_dir)
        for p in model.parameters():  # no dropout, all weights: exercises plain full training
            p.requires_grad_(True)
        result = train(model, tokenizer, cls_task, cfg(steps=3, batch_size=batch_size, grad_accum=accum, lr=1e-3))
        results.append((result.losses, trainable(model)))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-5)
    for key in results[0][1]:
        assert torch.allclose(results[0][1][key], results[1][1][key], atol=1e-6)


@pytest.mark.integration
def test_resume_matches_uninterrupted_run_and_ctrl_c_keeps_results(tmp_path, tiny_dir, cls_task):
    from peftbook.train import latest_checkpoint, train

    model, tokenizer = fresh(tiny_dir)
    lora(model)
    straight = train(model, tokenizer, cls_task, cfg(steps=8))
    reference = trainable(model)

    def interrupt_at_5(step, result):
        if step == 5:
            raise KeyboardInterrupt

    out = tmp_path / "run"
    model, tokenizer = fresh(tiny_dir)
    lora(model)
    partial = train(model, tokenizer, cls_task, cfg(steps=8, out_dir=str(out), checkpoint_every=2),
                    callbacks=[interrupt_at_5])
    assert partial.interrupted and partial.steps_done == 5
    assert partial.losses == straight.losses[:5]  # nothing computed is lost
    assert latest_checkpoint(out).name == "step-5"
    saved = json.loads((out / "history.json").read_text())
    assert saved["interrupted"] and [h["loss"] for h in saved["history"]] == partial.losses

    model, tokenizer = fresh(tiny_dir)
    lora(model)
    resumed = train(model, tokenizer, cls_task, cfg(steps=8, out_dir=str(out), checkpoint_every=2, resume=True))
    assert not resumed.interrupted and resumed.steps_done == 8
    assert resumed.losses == pytest.approx(straight.losses, rel=1e-6)
    weights = trainable(model)
    for key in reference:
        assert torch.allclose(weights[key], reference[key], atol=1e-6), key
    assert (out / "adapter" / "adapter_model.safetensors").exists()


@pytest.mark.integration
def test_resume_without_checkpoint_and_no_trainable_params_raise(tmp_path, tiny_dir, cls_task):
    from peftbook.train import train

    model, tokenizer = fresh(tiny_dir)
    lora(model)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(model, tokenizer, cls_task, cfg(out_dir=str(tmp_path / "empty"), resume=True))
    model, tokenizer = fresh(tiny_dir)
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        train(model, tokenizer, cls_task, cfg())


_TWO_PROCESS_SCRIPT = """
import json, sys
sys.path.insert(0, {tests!r})
import torch
from peftbook import load_model, apply, make_config
from test_train import word_task
from peftbook.train import TrainConfig, train
torch.set_num_threads(1)
torch.manual_seed(0)
model, tokenizer = load_model({model!r}, device="cpu", dtype="fp32")
apply(model, make_config("lora", rank=4, alpha=8, dropout=0.0))
result = train(model, tokenizer, word_task({task!r}), TrainConfig(steps=4, batch_size=4, lr=1e-2, warmup=1,
               memory_steps=0, progress=False, final_eval=False, **{options!r}))
if int(__import__("os").environ.get("RANK", "0")) == 0:
    json.dump({{"losses": result.losses, "world": result.num_processes,
               "weights": {{n: p.detach().flatten()[:50].tolist() for n, p in model.named_parameters() if p.requires_grad}}}},
              open({out!r}, "w"))
"""


@pytest.mark.integration
def test_two_process_accelerate_run_follows_one_process(tmp_path, tiny_dir):
    task_dir = write_word_task(tmp_path / "task")
    runs = {}
    for nproc in (1, 2):
        out = tmp_path / f"out{nproc}.json"
        script = tmp_path / f"run{nproc}.py"
        # the 2-process run also takes the memory-saving step (chunked loss under DDP, checkpointing)
        options = {} if nproc == 1 else {"loss_chunk_tokens": 5, "grad_checkpointing": True}
        script.write_text(_TWO_PROCESS_SCRIPT.format(tests=str(REPO / "tests"), model=str(tiny_dir),
                                                     task=str(task_dir), out=str(out), options=options))
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
                   "--standalone", str(script)]
        completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert completed.returncode == 0, completed.stderr[-3000:]
        runs[nproc] = json.loads(out.read_text())
    assert runs[1]["world"] == 1 and runs[2]["world"] == 2
    assert runs[2]["losses"] == pytest.approx(runs[1]["losses"], rel=1e-4)
    for key, values in runs[1]["weights"].items():
        assert runs[2]["weights"][key] == pytest.approx(values, abs=1e-5), key


@pytest.mark.integration
def test_memory_of_first_steps_is_measured_by_category(tiny_dir, cls_task):
    from peftbook.train import train

    model, tokenizer = fresh(tiny_dir)
    lora(model)
    result = train(model, tokenizer, cls_task, cfg(steps=3, memory_steps=2))
    memory = result.memory
    assert memory is not None and memory["peak_bytes"] > 0
    categories = memory["by_category"]
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    assert categories["weights"] >= weight_bytes * 0.9
    assert categories["optimizer"] > 0 and categories["activations"] > 0  # grads may be freed at the peak
    assert sum(categories.values()) == memory["peak_bytes"]
    assert result.step_time_s is not None  # from the untracked step


@pytest.mark.integration
def test_gradient_checkpointing_gives_the_same_losses(tiny_dir, cls_task):
    from peftbook.train import train

    losses = []
    for checkpointing in (False, True):
        model, tokenizer = fresh(tiny_dir)
        lora(model)
        losses.append(train(model, tokenizer, cls_task, cfg(steps=3, grad_checkpointing=checkpointing)).losses)
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)


@pytest.mark.gpu
def test_cuda_training_uses_bf16_autocast_and_paged_adamw_for_qlora(tmp_path, cls_task):
    from peftbook import apply, load_model, make_config
    from peftbook.train import make_optimizer, train

    save_tiny_model(tmp_path / "model", "llama")
    model, tokenizer = load_model(str(tmp_path / "model"), device="cuda")
    torch.manual_seed(0)
    apply(model, make_config("qlora", rank=4, alpha=8))
    assert type(make_optimizer(model, cfg(), torch.device("cuda"))).__name__ == "PagedAdamW8bit"
    result = train(model, tokenizer, cls_task, cfg(steps=4, memory_steps=2))
    assert all(math.isfinite(loss) for loss in result.losses)
    assert result.memory["peak_bytes"] > 0
