"""LoRA: zero-init invariance, trainable count, save/load, merge, HF PEFT equivalence, every architecture."""
from __future__ import annotations

import copy

import pytest
import torch

import peftbook
from peftbook.methods import lora
from peftbook.methods.lora import LoRAConfig, LoRALinear
from conftest import randomize_lora, train_step, make_tiny_model

pytestmark = pytest.mark.unit






def test_zero_init_leaves_logits_unchanged(tiny_model, input_ids):
    with torch.no_grad():
        before = tiny_model(input_ids).logits
        peftbook.apply(tiny_model, LoRAConfig(targets="all-linear"))
        after = tiny_model(input_ids).logits
    assert torch.equal(before, after)  # B = 0 exactly, so the branch adds exact zeros


@pytest.mark.parametrize("targets", [None, "all-linear", ["o_proj", "down_proj", "c_fc"]])
def test_only_lora_parameters_get_gradients_and_count_matches_formula(model_type, targets, input_ids):
    model = make_tiny_model(model_type)
    if targets and targets != "all-linear":
        targets = [t for t in targets if any(n.endswith(t) for n, _ in model.named_modules())]
    config = LoRAConfig(rank=4, targets=targets)
    peftbook.apply(model, config)
    randomize_lora(model)
    train_step(model, input_ids)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == trainable
    assert all(model.get_parameter(n).grad.abs().sum() > 0 for n in trainable)
    count, _ = peftbook.trainable_parameters(model)
    assert count == lora.num_trainable(model.config, config)


def test_every_architecture_forward_backward_generate_save_load(tiny_model, input_ids, tmp_path, model_type):
    peftbook.apply(tiny_model, LoRAConfig(rank=4, alpha=8))
    randomize_lora(tiny_model)
    train_step(tiny_model, input_ids)
    tiny_model.eval()
    prompt = input_ids[:1, :5]
    with torch.no_grad():
        cached = tiny_model.generate(prompt, max_new_tokens=4, do_sample=False, use_cache=True, pad_token_id=0)
        uncached = tiny_model.generate(prompt, max_new_tokens=4, do_sample=False, use_cache=False, pad_token_id=0)
        logits = tiny_model(input_ids).logits
    assert torch.equal(cached, uncached)
    peftbook.save_adapter(tiny_model, tmp_path)
    fresh = peftbook.load_adapter(make_tiny_model(model_type), tmp_path)
    with torch.no_grad():
        assert torch.equal(fresh(input_ids).logits, logits)


def test_load_into_a_different_base_names_both_shapes(tmp_path):
    model = peftbook.apply(make_tiny_model("llama"), LoRAConfig(rank=4))
    peftbook.save_adapter(model, tmp_path)
    wider = make_tiny_model("llama", hidden_size=96, intermediate_size=160)
    with pytest.raises(ValueError, match=r"\(4, 64\).*\(4, 96\)"):
        peftbook.load_adapter(wider, tmp_path)


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "phi3"])
def test_merge_matches_unmerged_and_unmerge_restores(model_type, input_ids):
    model = peftbook.apply(make_tiny_model(model_type), LoRAConfig(rank=4, targets="all-linear"))
    randomize_lora(model)
    base_weights = {n: m.base.weight.detach().clone() for n, m in lora.lora_modules(model).items()}
    with torch.no_grad():
        unmerged = model(input_ids).logits
        peftbook.merge(model)
        merged = model(input_ids).logits
        for name, module in lora.lora_modules(model).items():  # the weights really changed
            assert not torch.allclose(module.base.weight, base_weights[name])
        peftbook.unmerge(model)
        again = model(input_ids).logits
    torch.testing.assert_close(merged, unmerged, atol=1e-4, rtol=0)
    torch.testing.assert_close(again, unmerged, atol=1e-5, rtol=0)
    for name, module in lora.lora_modules(model).items():
        # (W + d) - d is W up to one fp32 rounding of W + d: |error| <= ulp(|W| + |d|)
        weight, delta = base_weights[name], module.delta_weight()
        bound = torch.finfo(torch.float32).eps * (weight.abs() + delta.abs())
        assert ((module.base.weight - weight).abs() <= bound).all()


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_merge_and_unload_leaves_a_plain_model_with_the_merged_logits(model_type, input_ids):
    model = peftbook.apply(make_tiny_model(model_type), LoRAConfig(rank=4, targets="all-linear"))
    randomize_lora(model)
    with torch.no_grad():
        unmerged = model(input_ids).logits
        peftbook.merge(model, unload=True)
        unloaded = model(input_ids).logits
    base_tree = {name: type(module) for name, module in make_tiny_model(model_type).named_modules()}
    assert {name: type(module) for name, module in model.named_modules()} == base_tree  # no wrapper left
    assert peftbook.methods.applied_config(model) is None
    torch.testing.assert_close(unloaded, unmerged, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="applies to lora, qlora only"):  # nothing left to unmerge
        peftbook.unmerge(model)
    peftbook.apply(model, LoRAConfig(rank=2))  # a plain model again: a new method applies


def test_unload_refuses_unmerged_wrappers():
    model = peftbook.apply(make_tiny_model("llama"), LoRAConfig(rank=4))
    with pytest.raises(ValueError, match="not merged"):
        lora.unload(model)


def test_conv1d_merge_uses_the_transposed_layout():
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(0)
    conv = Conv1D(12, 8)  # nf=12 outputs, nx=8 inputs; weight (8, 12)
    wrapped = LoRALinear(conv, rank=2, alpha=4)
    torch.nn.init.normal_(wrapped.lora_B.weight)
    x = torch.randn(3, 8)
    with torch.no_grad():
        expected = x @ conv.weight + conv.bias + 2.0 * x @ wrapped.lora_A.weight.T @ wrapped.lora_B.weight.T
        torch.testing.assert_close(wrapped(x), expected)
        wrapped.merge()
        torch.testing.assert_close(wrapped(x), expected, atol=1e-5, rtol=0)


def test_rslora_and_dropout_only_on_the_lora_branch():
    base = torch.nn.Linear(8, 8)
    assert LoRALinear(base, rank=4, alpha=8, use_rslora=True).scaling == pytest.approx(8 / 2)
    assert LoRAConfig(rank=16, alpha=8, use_rslora=True).scaling == pytest.approx(2.0)
    wrapped = LoRALinear(base, rank=4, alpha=8, dropout=0.9).train()
    x = torch.randn(5, 8)
    with torch.no_grad():
        torch.testing.assert_close(wrapped(x), base(x))  # B = 0: dropout cannot touch the base path


def test_gradient_checkpointing_training_step(input_ids):
    model = peftbook.apply(make_tiny_model("llama"), LoRAConfig(rank=4))
    reference = copy.deepcopy(model)
    randomize_lora(model)
    randomize_lora(reference)
    model.gradient_checkpointing_enable()
    train_step(model, input_ids)
    train_step(reference, input_ids)
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        if p.requires_grad:
            torch.testing.assert_close(p.grad, q.grad, atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.parametrize("fields, message", [
    ({"rank": 0}, "rank=0"), ({"rank": -2}, "rank=-2"), ({"alpha": 0}, "alpha=0"),
    ({"dropout": 1.0}, r"dropout=1.0.*\[0, 1\)"), ({"dropout": -0.1}, "dropout=-0.1"),
    ({"targets": "everything"}, "targets='everything'"), ({"targets": []}, "targets=")])
def test_bad_config_raises_naming_the_value(fields, message):
    with pytest.raises(ValueError, match=message):
        peftbook.apply(make_tiny_model("llama"), LoRAConfig(**fields))


def test_target_matching_nothing_lists_candidates():
    with pytest.raises(ValueError, match=r"'c_attn' matches no.*candidates: .*down_proj.*q_proj"):
        peftbook.apply(make_tiny_model("llama"), LoRAConfig(targets=["q_proj", "c_attn"]))


# ---- equivalence with HF PEFT (same weights -> same logits and gradients) ----

NO_DROPOUT = {"gpt2": dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)}  # train mode must be deterministic


def _peft_pair(model_type, config):
    peft = pytest.importorskip("peft")
    ours = peftbook.apply(make_tiny_model(model_type, **NO_DROPOUT.get(model_type, {})), config)
    randomize_lora(ours)
    targets = lora.peft_adapter_config(ours, config)["target_modules"]
    theirs = peft.get_peft_model(make_tiny_model(model_type, **NO_DROPOUT.get(model_type, {})), peft.LoraConfig(
        r=config.rank, lora_alpha=config.alpha, lora_dropout=0.0, target_modules=targets,
        use_rslora=config.use_rslora, fan_in_fan_out=model_type == "gpt2"))
    peft.set_peft_model_state_dict(theirs, {k: v.detach().clone() for k, v in lora.adapter_state(ours).items()})
    return ours, theirs


@pytest.mark.parametrize("model_type, config", [
    ("llama", LoRAConfig(rank=4, alpha=8)),
    ("qwen2", LoRAConfig(rank=8, alpha=4, targets="all-linear", use_rslora=True)),
    ("gpt2", LoRAConfig(rank=4, alpha=16, targets="all-linear")),
])
def test_same_logits_and_gradients_as_hf_peft(model_type, config, input_ids):
    ours, theirs = _peft_pair(model_type, config)
    ours_loss, theirs_loss = train_step(ours, input_ids), train_step(theirs, input_ids)
    torch.testing.assert_close(ours_loss, theirs_loss, atol=1e-6, rtol=0)
    theirs_grads = {n.replace(".default", ""): p.grad for n, p in theirs.named_parameters() if p.requires_grad}
    ours_grads = {f"base_model.model.{n}": p.grad for n, p in ours.named_parameters() if p.requires_grad}
    assert set(ours_grads) == set(theirs_grads) and ours_grads
    for name, grad in ours_grads.items():
        torch.testing.assert_close(grad, theirs_grads[name], atol=1e-5, rtol=1e-5, msg=name)
    ours.eval(), theirs.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(input_ids).logits, theirs(input_ids).logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_saved_adapter_loads_in_hf_peft(model_type, input_ids, tmp_path):
    peft = pytest.importorskip("peft")
    ours = peftbook.apply(make_tiny_model(model_type), LoRAConfig(rank=4, targets="all-linear"))
    randomize_lora(ours)
    peftbook.save_adapter(ours, tmp_path)
    theirs = peft.PeftModel.from_pretrained(make_tiny_model(model_type), tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(theirs(input_ids).logits, ours(input_ids).logits, atol=1e-5, rtol=0)


# ---- architectures outside the table: targets inferred from the modules (issue 16) ----

@pytest.mark.parametrize("model_type, expected", [
    ("gpt_neox", ["query_key_value"]), ("bloom", ["query_key_value"]), ("olmo2", ["q_proj", "v_proj"]),
    ("mamba", ["in_proj", "out_proj", "x_proj"]),  # no attention: every linear the layers call (not dt_proj)
])
def test_default_targets_are_inferred_from_the_modules(model_type, expected):
    from peftbook.coverage import tiny_model

    assert lora.default_targets(tiny_model(model_type)) == expected


def test_same_logits_and_gradients_as_hf_peft_on_a_fused_projection(input_ids):
    """gpt_neox (Pythia): LoRA on the fused query_key_value, our inferred default = PEFT's table default."""
    peft = pytest.importorskip("peft")
    from peftbook.coverage import tiny_model

    ours = randomize_lora(peftbook.apply(tiny_model("gpt_neox"), LoRAConfig(rank=4, alpha=8)))
    theirs = peft.get_peft_model(tiny_model("gpt_neox"), peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0))
    assert sorted(theirs.peft_config["default"].target_modules) == ["query_key_value"]
    peft.set_peft_model_state_dict(theirs, {k: v.detach().clone() for k, v in lora.adapter_state(ours).items()})
    torch.testing.assert_close(train_step(ours, input_ids), train_step(theirs, input_ids), atol=1e-6, rtol=0)
    theirs_grads = {n.replace(".default", ""): p.grad for n, p in theirs.named_parameters() if p.requires_grad}
    ours_grads = {f"base_model.model.{n}": p.grad for n, p in ours.named_parameters() if p.requires_grad}
    assert set(ours_grads) == set(theirs_grads) and len(ours_grads) == 4  # A and B on 2 layers
    for name, grad in ours_grads.items():
        torch.testing.assert_close(grad, theirs_grads[name], atol=1e-5, rtol=1e-5, msg=name)


def test_apply_to_a_model_in_eval_mode_keeps_it_deterministic(input_ids):
    # new modules (LoRA's dropout) take the model's mode: eval stays eval, so two forwards agree
    model = make_tiny_model("llama").eval()
    peftbook.apply(model, LoRAConfig(rank=4, dropout=0.5))
    randomize_lora(model)
    assert not any(m.training for m in model.modules())
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids).logits, model(input_ids).logits, atol=0, rtol=0)
    trained = peftbook.apply(make_tiny_model("llama").train(), LoRAConfig(rank=4, dropout=0.5))
    assert all(m.training for m in trained.modules())
