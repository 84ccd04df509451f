"""The memory-saving options of a training step, method by method: gradient checkpointing gives the
same loss and gradients with less activation memory; the chunked loss inside ``train``; the optimizer
choices of ``TrainConfig.optimizer``."""
from __future__ import annotations

import warnings

import pytest
import torch

from conftest import make_tiny_model

from peftbook.train import enable_gradient_checkpointing

METHOD_SETTINGS = {
    "prompt_tuning": {"num_virtual_tokens": 4},
    "prefix_tuning": {"num_virtual_tokens": 3},
    "llama_adapter": {"adapter_layers": 4},
    "lora": {"rank": 4, "alpha": 8},
    "qlora": {"rank": 4, "alpha": 8},
    "full": {},
}


def applied(method: str, **overrides):
    from peftbook import apply, make_config

    model = make_tiny_model("llama", **overrides)
    torch.manual_seed(0)
    apply(model, make_config(method, **METHOD_SETTINGS[method]))
    return model.train()


def step(model, ids, **options):
    """Loss, trainable gradients and the peak activation bytes of one forward + backward."""
    from peftbook.lm_loss import causal_lm_loss
    from peftbook.memory import track_memory

    model.zero_grad(set_to_none=True)
    with track_memory("cpu", model=model) as memory:
        loss = causal_lm_loss(model, ids, ids, **options)
        loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}
    return float(loss), grads, memory.by_category["activations"]


@pytest.mark.unit
@pytest.mark.parametrize("method", list(METHOD_SETTINGS))
def test_gradient_checkpointing_same_gradients_less_activation_memory(method):
    model = applied(method, num_hidden_layers=6)
    ids = torch.randint(3, 128, (2, 64), generator=torch.Generator().manual_seed(1))
    expected, expected_grads, plain = step(model, ids)
    enable_gradient_checkpointing(model)  # as train does
    assert not getattr(model, "_require_grads_hooks", None)  # backward stops below the lowest trainable part
    loss, grads, checkpointed = step(model, ids)
    assert loss == pytest.approx(expected, rel=1e-6)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[name], rtol=1e-5, atol=1e-7, msg=name)
    assert checkpointed < 0.8 * plain, (checkpointed, plain)


@pytest.mark.unit
def test_checkpointing_a_fraction_of_the_layers_saves_a_fraction():
    model = applied("lora", num_hidden_layers=6)
    ids = torch.randint(3, 128, (2, 64), generator=torch.Generator().manual_seed(1))
    activations = {}
    for every in (None, 3, 1):
        if every:
            enable_gradient_checkpointing(model, every)
        activations[every] = step(model, ids)[2]
    assert activations[1] < activations[3] < activations[None]


@pytest.mark.unit
@pytest.mark.parametrize("choice, method, device, implementation", [
    ("auto", "lora", "cpu", "adamw_single_tensor"), ("auto", "lora", "cuda", "adamw_foreach"),
    ("auto", "qlora", "cpu", "adamw_single_tensor"), ("auto", "qlora", "cuda", "paged_adamw_8bit"),
    ("auto", None, "cuda", "adamw_foreach"), ("adamw", "qlora", "cuda", "adamw_foreach"),
    ("adamw_fused", "lora", "cpu", "adamw_fused"), ("adamw_8bit", "full", "cuda", "adamw_8bit"),
    ("sgd", "prompt_tuning", "cpu", "sgd"),
])
def test_optimizer_choice_resolves_per_method_and_device(choice, method, device, implementation):
    from peftbook.train import resolve_optimizer

    assert resolve_optimizer(choice, method, device) == implementation


@pytest.mark.unit
def test_bad_optimizer_or_device_names_what_is_allowed():
    from peftbook.train import resolve_optimizer

    with pytest.raises(ValueError, match="'adam' is not allowed.*adamw_8bit"):
        resolve_optimizer("adam")
    with pytest.raises(ValueError, match="'mps'.*cpu, cuda"):
        resolve_optimizer("adamw", device_type="mps")


@pytest.mark.unit
@pytest.mark.parametrize("choice, kind", [
    ("adamw", "AdamW"), ("adamw_foreach", "AdamW"), ("adamw_fused", "AdamW"), ("adamw_8bit", "AdamW8bit"),
    ("paged_adamw_8bit", "PagedAdamW8bit"), ("sgd", "SGD"),
])
def test_every_optimizer_runs_a_step_on_cpu(choice, kind):
    """Each choice builds what it names and moves the weights; the AdamW kernels agree with each other."""
    from peftbook.train import TrainConfig, make_optimizer

    updates = {}
    for name in dict.fromkeys(("adamw", choice)):
        model = applied("full", vocab_size=4096)  # the embedding has > 4096 values: bnb keeps it in 8 bits
        optimizer = make_optimizer(model, TrainConfig(optimizer=name, lr=1e-3, weight_decay=0.1), torch.device("cpu"))
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # bnb: "paged optimizers are not supported on CPU"
            for _ in range(2):
                step(model, torch.randint(3, 4096, (2, 16), generator=torch.Generator().manual_seed(1)))
                optimizer.step()
        updates[name] = {n: p.detach() - before[n] for n, p in model.named_parameters()}
    assert type(optimizer).__name__ == kind
    assert all(float(u.abs().max()) > 0 for u in updates[choice].values())
    if choice in ("adamw_foreach", "adamw_fused"):
        for name, update in updates[choice].items():
            torch.testing.assert_close(update, updates["adamw"][name], rtol=1e-4, atol=1e-7, msg=name)
    if choice == "adamw_8bit":  # 8-bit moments: the embedding's state is uint8
        state = optimizer.state[model.get_input_embeddings().weight]
        assert state["state1"].dtype == torch.uint8


@pytest.mark.integration
@pytest.mark.parametrize("method", ["prefix_tuning", "lora"])
def test_train_with_the_memory_saving_step_follows_the_default_one(tmp_path, method):
    """Chunked loss + gradient checkpointing + another AdamW kernel: the same losses, step after step."""
    from conftest import save_tiny_model
    from test_train import cfg, fresh, word_task

    from peftbook import apply, make_config
    from peftbook.train import train

    save_tiny_model(tmp_path / "model", "llama")
    task = word_task(tmp_path / "task", "classification")
    losses = []
    for options in ({}, {"loss_chunk_tokens": 7, "grad_checkpointing": True, "optimizer": "adamw_foreach"}):
        model, tokenizer = fresh(tmp_path / "model")
        torch.manual_seed(0)
        apply(model, make_config(method, **METHOD_SETTINGS[method]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            losses.append(train(model, tokenizer, task, cfg(steps=4, **options)).losses)
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)


# ---------------------------------------------------------------- adapter dtype on a 16-bit base

def bf16_model(method: str, **fields):
    from peftbook import apply, make_config

    model = make_tiny_model("llama").to(torch.bfloat16)
    torch.manual_seed(0)
    apply(model, make_config(method, **{**METHOD_SETTINGS[method], **fields}))
    return model.train()


@pytest.mark.unit
@pytest.mark.parametrize("method", ["lora", "qlora", "llama_adapter"])
@pytest.mark.parametrize("adapter_dtype, expected", [("base", torch.bfloat16), ("fp32", torch.float32)])
def test_adapter_weights_take_the_dtype_asked_for_and_train(method, adapter_dtype, expected):
    model = bf16_model(method, adapter_dtype=adapter_dtype)
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and {p.dtype for p in trainable.values()} == {expected}
    ids = torch.randint(3, 128, (2, 12), generator=torch.Generator().manual_seed(1))
    loss, grads, _ = step(model, ids)
    assert torch.isfinite(torch.tensor(loss))
    assert all(g.dtype == expected for g in grads.values())
    assert any(float(g.abs().max()) > 0 for g in grads.values())


@pytest.mark.unit
def test_fp32_lora_on_a_bf16_base_is_hf_peft_default_and_costs_an_fp32_input_copy():
    """HF PEFT's get_peft_model up-casts LoRA to fp32 on a bf16 base (autocast_adapter_dtype=True):
    adapter_dtype="fp32" gives its logits; backward then keeps an fp32 copy of each adapted input."""
    import peft

    from peftbook.methods import lora

    ours = bf16_model("lora", adapter_dtype="fp32", targets="all-linear")
    with torch.no_grad():  # B = 0 would hide any difference in the LoRA path
        for module in lora.lora_modules(ours).values():
            module.lora_B.weight.normal_(0, 0.02)
    base = make_tiny_model("llama").to(torch.bfloat16)
    theirs = peft.get_peft_model(base, peft.LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    assert {p.dtype for n, p in theirs.named_parameters() if "lora_" in n} == {torch.float32}
    peft.set_peft_model_state_dict(theirs, {k: v.detach().clone() for k, v in lora.adapter_state(ours).items()})
    ids = torch.randint(3, 128, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(ids).logits, theirs.eval()(ids).logits, rtol=0, atol=0)
    activations = {}
    for adapter_dtype in ("base", "fp32"):
        _, _, activations[adapter_dtype] = step(bf16_model("lora", adapter_dtype=adapter_dtype), ids)
    assert activations["fp32"] > activations["base"]


@pytest.mark.unit
def test_bad_adapter_dtype_is_refused_naming_the_choices():
    from peftbook import apply, make_config

    for method in ("lora", "llama_adapter"):
        with pytest.raises(ValueError, match="adapter_dtype='bf16'.*base, fp32"):
            apply(make_tiny_model("llama"), make_config(method, adapter_dtype="bf16"))
