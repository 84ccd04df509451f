"""QLoRA: 4-bit base (in place or via load_model), LoRA on top, 4-bit merge path, clear errors."""
from __future__ import annotations

import pytest
import torch
from conftest import randomize_lora, train_step, make_tiny_model, save_tiny_model

import peftbook
import peftbook.models as models
from peftbook.methods import lora, qlora
from peftbook.methods.qlora import QLoRAConfig, qlora_optimizer

pytestmark = [pytest.mark.unit,
              pytest.mark.skipif(not models.bnb_4bit_available(), reason="bitsandbytes has no 4-bit backend here")]






def test_in_place_quantization_matches_transformers_4bit_loading(tmp_path, input_ids):
    """apply(fp_model, QLoRAConfig()) == load_model(quantize='nf4') + QLoRA, and both equal the 4-bit base."""
    save_tiny_model(tmp_path, "llama")
    loaded, _ = models.load_model(tmp_path, quantize="nf4", device="cpu", dtype="fp32")
    with torch.no_grad():  # train mode: bnb's CPU inference path (bf16 scales) would differ by ~1e-3
        base_4bit = loaded.train()(input_ids).logits
        fp_logits = make_tiny_model("llama")(input_ids).logits
    peftbook.apply(loaded, QLoRAConfig(rank=4))
    in_place = peftbook.apply(make_tiny_model("llama"), QLoRAConfig(rank=4)).eval()
    with torch.no_grad():
        assert torch.equal(loaded(input_ids).logits, base_4bit)  # zero-init B: nothing changes
        assert torch.equal(in_place(input_ids).logits, base_4bit)
    assert not torch.allclose(base_4bit, fp_logits, atol=1e-4)  # 4 bits really lose something...
    torch.testing.assert_close(base_4bit, fp_logits, atol=0.1, rtol=0)  # ...but not much
    layer = in_place.model.layers[0]
    assert qlora.is_4bit(layer.mlp.down_proj) and qlora.is_4bit(layer.self_attn.q_proj.base)
    assert layer.self_attn.q_proj.lora_A.weight.dtype == torch.float32
    assert not qlora.is_4bit(in_place.lm_head) and in_place.model.embed_tokens.weight.dtype == torch.float32


@pytest.mark.parametrize("quant_type", qlora.QUANT_TYPES)
def test_both_paths_keep_the_4bit_base_unchanged_in_eval_mode(tmp_path, input_ids, quant_type):
    """Issue 16: a 4-bit model that ran in eval mode (where bitsandbytes' CPU repacking would round the
    block scales to bf16) gives the same logits after apply(QLoRAConfig); so does the in-place path."""
    save_tiny_model(tmp_path, "llama")
    loaded, _ = models.load_model(tmp_path, quantize=quant_type, device="cpu", dtype="fp32")
    assert not loaded.training
    with torch.no_grad():
        before = loaded(input_ids).logits  # the first eval pass: no repacking, no second quantization
    codes = loaded.model.layers[0].self_attn.q_proj.weight.data.clone()
    peftbook.apply(loaded, QLoRAConfig(rank=4, quant_type=quant_type))
    in_place = peftbook.apply(make_tiny_model("llama"), QLoRAConfig(rank=4, quant_type=quant_type))
    with torch.no_grad():
        assert torch.equal(loaded(input_ids).logits, before)  # zero-init B, weights as loaded
        assert torch.equal(in_place(input_ids).logits, before)  # same settings: the same 4-bit model
    assert torch.equal(loaded.model.layers[0].self_attn.q_proj.base.weight.data, codes)
    assert qlora.quantization_settings(in_place.model.layers[0].mlp.up_proj) == (quant_type, True)


def test_in_place_path_quantizes_with_the_configs_settings(input_ids):
    model = peftbook.apply(make_tiny_model("llama"), QLoRAConfig(rank=4, quant_type="fp4", double_quant=False))
    layers = [m for m in model.modules() if qlora.is_4bit(m)]
    assert len(layers) == 4 * 7 and {qlora.quantization_settings(m) for m in layers} == {("fp4", False)}
    nf4 = peftbook.apply(make_tiny_model("llama"), QLoRAConfig(rank=4))
    with torch.no_grad():
        assert not torch.allclose(model(input_ids).logits, nf4(input_ids).logits)


def test_a_4bit_model_with_other_settings_than_the_config_is_refused(tmp_path):
    save_tiny_model(tmp_path, "llama")
    loaded, _ = models.load_model(tmp_path, quantize="fp4", device="cpu", dtype="fp32")
    with pytest.raises(ValueError, match="already 4-bit with quant_type='fp4', double_quant=True, but the config "
                                         "asks for quant_type='nf4', double_quant=True"):
        peftbook.apply(loaded, QLoRAConfig())


def test_a_model_repacked_before_apply_keeps_its_codes(tmp_path, input_ids):
    """A 4-bit model loaded without load_model may have been repacked by an eval pass: apply still
    trains it (keep_trainable_layout undoes the layout) and keeps its 4-bit codes."""
    save_tiny_model(tmp_path, "llama")
    loaded, _ = models.load_model(tmp_path, quantize="nf4", device="cpu", dtype="fp32")
    layer = loaded.model.layers[0].self_attn.q_proj
    codes = layer.weight.data.clone()
    for module in loaded.modules():  # as a model loaded by transformers alone has it
        if qlora.is_4bit(module):
            module.support_avx512bf16_for_cpu = True
    with torch.no_grad():
        loaded(input_ids)
    if not getattr(layer.weight.quant_state, "packing_format_for_cpu", False):
        pytest.skip("this CPU has no AVX512-BF16: bitsandbytes does not repack here")
    peftbook.apply(loaded, QLoRAConfig(rank=4))
    assert torch.equal(layer.weight.data, codes)
    randomize_lora(loaded)
    train_step(loaded, input_ids)
    assert all(m.lora_A.weight.grad is not None for m in lora.lora_modules(loaded).values())


def test_every_architecture_trains_generates_and_saves(tiny_model, model_type, input_ids, tmp_path):
    config = QLoRAConfig(rank=4, alpha=8)
    peftbook.apply(tiny_model, config)
    randomize_lora(tiny_model)
    train_step(tiny_model, input_ids)
    trainable = {n for n, p in tiny_model.named_parameters() if p.requires_grad}
    assert all(".lora_" in n for n in trainable)
    assert all(tiny_model.get_parameter(n).grad.abs().sum() > 0 for n in trainable)
    assert peftbook.trainable_parameters(tiny_model)[0] == qlora.num_trainable(tiny_model.config, config)
    tiny_model.eval()
    prompt = input_ids[:1, :5]
    with torch.no_grad():
        cached = tiny_model.generate(prompt, max_new_tokens=4, do_sample=False, use_cache=True, pad_token_id=0)
        uncached = tiny_model.generate(prompt, max_new_tokens=4, do_sample=False, use_cache=False, pad_token_id=0)
        logits = tiny_model(input_ids).logits
    assert torch.equal(cached, uncached)
    peftbook.save_adapter(tiny_model, tmp_path)
    fresh = peftbook.load_adapter(make_tiny_model(model_type), tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(fresh(input_ids).logits, logits)


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_merge_dequantizes_and_unmerge_restores_the_4bit_codes(model_type, input_ids):
    no_dropout = dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0) if model_type == "gpt2" else {}
    model = peftbook.apply(make_tiny_model(model_type, **no_dropout), QLoRAConfig(rank=4, targets="all-linear"))
    model.train()
    randomize_lora(model)
    dequantized_before = {n: qlora.dequantize_linear(m.base).weight for n, m in lora.lora_modules(model).items()}
    codes_before = {n: m.base.weight.data.clone() for n, m in lora.lora_modules(model).items()}
    with torch.no_grad():  # train mode keeps bnb's CPU inference repacking out of the comparison
        unmerged = model(input_ids).logits
        peftbook.merge(model)
        merged = model(input_ids).logits
    for module in lora.lora_modules(model).values():
        assert type(module.base) is torch.nn.Linear and module.base.weight.dtype == torch.float32
    # merged = dequant(W) + BA in fp32 vs dequant(W) x + B A x: only fp32 rounding apart
    torch.testing.assert_close(merged, unmerged, atol=1e-4, rtol=0)
    peftbook.unmerge(model)
    with torch.no_grad():
        again = model(input_ids).logits
    for name, module in lora.lora_modules(model).items():
        assert qlora.is_4bit(module.base)
        assert torch.equal(module.base.weight.data, codes_before[name])  # the same 4-bit codes...
        # ...but double quantization re-quantizes the block scales around a new mean: <= 1% drift
        drift = (qlora.dequantize_linear(module.base).weight - dequantized_before[name]).abs()
        assert (drift <= 0.01 * dequantized_before[name].abs() + 1e-7).all()
    torch.testing.assert_close(again, unmerged, atol=1e-3, rtol=0)


def test_merge_and_unload_gives_a_full_precision_model(input_ids):
    model = peftbook.apply(make_tiny_model("llama"), QLoRAConfig(rank=4))
    model.train()
    randomize_lora(model)
    with torch.no_grad():
        unmerged = model(input_ids).logits
        peftbook.merge(model, unload=True)
        unloaded = model(input_ids).logits
    assert not lora.lora_modules(model)
    q_proj = model.model.layers[0].self_attn.q_proj
    assert type(q_proj) is torch.nn.Linear and q_proj.weight.dtype == torch.float32
    torch.testing.assert_close(unloaded, unmerged, atol=1e-4, rtol=0)


def test_an_eval_pass_does_not_break_later_gradients(input_ids):
    """bnb repacks 4-bit weights for CPU inference on an eval forward; training after it must still work."""
    trained, evaluated_first = (randomize_lora(peftbook.apply(make_tiny_model("llama"), QLoRAConfig(rank=4)))
                                for _ in range(2))
    with torch.no_grad():
        evaluated_first.eval()(input_ids)
    train_step(trained, input_ids), train_step(evaluated_first, input_ids)
    for p, q in zip(trained.parameters(), evaluated_first.parameters()):
        if p.requires_grad:
            assert q.grad is not None and torch.equal(p.grad, q.grad)


def test_gradient_checkpointing_training_step(input_ids):
    model = peftbook.apply(make_tiny_model("llama"), QLoRAConfig(rank=4))
    randomize_lora(model)
    model.gradient_checkpointing_enable()
    train_step(model, input_ids)
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_same_logits_and_gradients_as_hf_peft_on_a_4bit_model(tmp_path, input_ids):
    peft = pytest.importorskip("peft")
    save_tiny_model(tmp_path, "llama")
    ours = peftbook.apply(models.load_model(tmp_path, quantize="nf4", device="cpu", dtype="fp32")[0], QLoRAConfig(rank=4))
    randomize_lora(ours)
    theirs, _ = models.load_model(tmp_path, quantize="nf4", device="cpu", dtype="fp32")
    theirs = peft.get_peft_model(theirs, peft.LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
    peft.set_peft_model_state_dict(theirs, {k: v.detach().clone() for k, v in lora.adapter_state(ours).items()})
    torch.testing.assert_close(train_step(ours, input_ids), train_step(theirs, input_ids), atol=1e-6, rtol=0)
    theirs_grads = {n.replace(".default", ""): p.grad for n, p in theirs.named_parameters() if p.requires_grad}
    for name, parameter in ours.named_parameters():
        if parameter.requires_grad:
            torch.testing.assert_close(parameter.grad, theirs_grads[f"base_model.model.{name}"], atol=1e-5, rtol=1e-5)


def test_optimizer_is_plain_adamw_on_cpu():
    model = peftbook.apply(make_tiny_model("llama"), QLoRAConfig(rank=4))
    optimizer = qlora_optimizer(model.parameters(), lr=1e-3)
    assert type(optimizer) is torch.optim.AdamW
    assert sum(p.numel() for g in optimizer.param_groups for p in g["params"]) == \
        peftbook.trainable_parameters(model)[0]


@pytest.mark.gpu
def test_optimizer_is_paged_8bit_adamw_on_cuda():
    import bitsandbytes as bnb

    model = peftbook.apply(make_tiny_model("llama").cuda(), QLoRAConfig(rank=4))
    assert isinstance(qlora_optimizer(model.parameters(), lr=1e-3), bnb.optim.PagedAdamW8bit)


def test_clear_error_without_a_4bit_backend(monkeypatch):
    monkeypatch.setattr(qlora, "bnb_4bit_available", lambda: False)  # the name QLoRAConfig.validate calls
    model = make_tiny_model("llama")
    with pytest.raises(RuntimeError, match="bitsandbytes with a working 4-bit backend"):
        peftbook.apply(model, QLoRAConfig())
    assert not any(qlora.is_4bit(m) for m in model.modules())  # raised before touching the model


@pytest.mark.parametrize("fields, message", [({"quant_type": "int4"}, "quant_type='int4'"),
                                             ({"rank": 0}, "rank=0"), ({"double_quant": "yes"}, "double_quant")])
def test_bad_config(fields, message):
    with pytest.raises(ValueError, match=message):
        peftbook.apply(make_tiny_model("llama"), QLoRAConfig(**fields))


def test_stored_bytes_per_weight_is_measured_from_the_4bit_layers():
    from peftbook.memory.estimate import NF4_BYTES_PER_PARAM

    def stored(double_quant, size=1024):
        layer = qlora.quantize_linear(torch.nn.Linear(size, size, bias=False), double_quant=double_quant)
        return qlora.stored_bytes_per_weight(torch.nn.Sequential(layer))

    # a large layer: codes and scales as the simulator counts them, its small lookup tables a rounding error
    assert stored(True) == pytest.approx(NF4_BYTES_PER_PARAM, rel=3e-3)
    assert stored(False) == pytest.approx(0.5 + 4 / 64, rel=3e-3)  # fp32 block scales instead of 8-bit ones
    assert stored(True, 64) > stored(True)  # on a tiny layer the tables weigh
    with pytest.raises(ValueError, match="no 4-bit layer"):
        qlora.stored_bytes_per_weight(make_tiny_model("llama"))
