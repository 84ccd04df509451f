"""LLaMA-Adapter: zero-init invariance, gradients, generate, checkpointing, save/load, and HF PEFT equivalence."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import peftbook.methods as methods
from peftbook.methods.llama_adapter import AdaptedAttention, LlamaAdapterConfig, copy_into_hf_peft, num_trainable
from peftbook.models import decoder_layers, get_architecture, model_dims
from conftest import make_tiny_model

pytestmark = pytest.mark.unit

ADAPTER_LEN, ADAPTER_LAYERS = 4, 2


def adapted(model_type: str, gate: str = "per_head_tanh", seed: int = 0, **overrides):
    model = make_tiny_model(model_type, seed, **overrides)
    return methods.apply(model, LlamaAdapterConfig(adapter_len=ADAPTER_LEN, adapter_layers=ADAPTER_LAYERS, gate=gate))


def wrappers(model) -> list[AdaptedAttention]:
    return [m for m in model.modules() if isinstance(m, AdaptedAttention)]


def open_gates(model, seed: int = 3) -> None:
    """Give every gate a distinct non-zero value (training would), so the adapter shows in the output."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for wrapper in wrappers(model):
            wrapper.adaption_gate.copy_(torch.rand(wrapper.adaption_gate.shape, generator=generator) + 0.5)


def next_token_loss(logits, input_ids):
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), input_ids[:, 1:].reshape(-1))


# --- bad input ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [("adapter_len", 0), ("adapter_len", -3), ("adapter_layers", 0),
                                          ("adapter_layers", 1.5), ("adapter_layers", 0.0), ("adapter_layers", True),
                                          ("adapter_len", 2.5), ("gate", "sigmoid")])
def test_bad_config_raises_naming_the_value(field, value):
    with pytest.raises(ValueError, match=f"{field}={value!r}"):
        methods.make_config("llama_adapter", **{field: value}).validate()


@pytest.mark.parametrize("layers, depth, adapted", [(0.5, 4, 2), (30 / 32, 4, 4), (30 / 32, 30, 28),
                                                    (30 / 32, 32, 30), (0.01, 4, 1), (3, 30, 3)])
def test_adapter_layers_as_a_fraction_of_depth(layers, depth, adapted):
    """The default, the paper's 30 of 32, scales with the model; a count stays a count."""
    from peftbook.methods.llama_adapter import layer_count

    assert layer_count(LlamaAdapterConfig(adapter_layers=layers), depth) == adapted


def test_the_default_adapts_the_top_layers_the_paper_share_gives(input_ids):
    model = make_tiny_model("llama")  # 4 layers
    methods.apply(model, LlamaAdapterConfig())
    assert len(wrappers(model)) == 4 and LlamaAdapterConfig().adapter_layers == 30 / 32


def test_more_adapter_layers_than_the_model_has_raises():
    model = make_tiny_model("llama")  # 4 layers
    with pytest.raises(ValueError, match=r"adapter_layers=5 .* 4 layers"):
        methods.apply(model, LlamaAdapterConfig(adapter_layers=5))
    assert not wrappers(model)


def test_an_attention_it_cannot_express_is_refused_before_any_change():
    from transformers import AutoModelForCausalLM, MambaConfig

    model = AutoModelForCausalLM.from_config(MambaConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2))
    with pytest.raises(ValueError, match="LLaMA-Adapter cannot adapt mamba: its config has no attention heads"):
        methods.apply(model, LlamaAdapterConfig(adapter_layers=1))
    assert not wrappers(model)


@pytest.mark.parametrize("model_type", ["gpt_neox", "olmo2", "stablelm", "cohere"])
def test_architectures_outside_the_table_keep_the_base_outputs_at_step_0(model_type, input_ids):
    """Inferred structure: fused per-head qkv (gpt_neox), a q/k norm over the whole projection (olmo2),
    per-head LayerNorms with partial rotary (stablelm with qk_layernorm), per-head (heads, hd) norms (cohere)."""
    from peftbook.coverage import tiny_config
    from transformers import AutoModelForCausalLM

    config = tiny_config(model_type)
    for key in ("qk_layernorm", "use_qk_norm"):
        if hasattr(config, key):
            setattr(config, key, True)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        base = model(input_ids).logits
    methods.apply(model, LlamaAdapterConfig(adapter_layers=2, adapter_len=4))
    with torch.no_grad():
        assert torch.allclose(model(input_ids).logits, base, atol=1e-6)
        for wrapper in wrappers(model):
            wrapper.adaption_gate.fill_(0.5)
        assert not torch.allclose(model(input_ids).logits, base, atol=1e-4)


@pytest.mark.parametrize("model_type, style", [("llama", "halves"), ("cohere", "pairs"), ("glm", "pairs_from_half"),
                                               ("gpt_oss", "halves_short"), ("nanochat", "halves_backwards")])
def test_the_rotary_style_is_read_off_the_model(model_type, style):
    """Each model rotates its own channel pairs; the adapter's queries must be the layer's own queries."""
    from peftbook.coverage import tiny_model

    model = tiny_model(model_type)
    methods.apply(model, LlamaAdapterConfig(adapter_layers=2, adapter_len=4))
    assert {wrapper.rotary_style for wrapper in wrappers(model)} == {style}


def test_queries_it_cannot_reproduce_are_refused_at_apply(monkeypatch):
    """The check can fail: with only the llama rotation to try, cohere's neighbouring-pair rotary is refused."""
    from peftbook.coverage import tiny_model
    from peftbook.methods import llama_adapter

    model = tiny_model("cohere")
    monkeypatch.setattr(llama_adapter, "ROTARY_STYLES", ("halves",))
    with pytest.raises(ValueError, match="cannot adapt cohere: layer 0: the queries the adapter recomputes differ"):
        methods.apply(model, LlamaAdapterConfig(adapter_layers=2, adapter_len=4))
    assert not wrappers(model)


@pytest.mark.parametrize("model_type, reason", [
    ("gptj", "the queries the adapter recomputes differ"),  # rotates inside its attention
    ("diffllama", "the keys or values the adapter computes differ"),  # differential attention
    ("llama4_text", r"not a \(cos, sin\) pair"),  # complex rotary
])
def test_attention_it_cannot_express_is_refused_with_the_reason(model_type, reason):
    from peftbook.coverage import tiny_model

    with pytest.raises(ValueError, match=reason):
        methods.apply(tiny_model(model_type), LlamaAdapterConfig(adapter_layers=2, adapter_len=4))


def test_applying_twice_raises():
    model = adapted("llama")
    with pytest.raises(ValueError, match="already applied"):
        methods.apply(model, LlamaAdapterConfig())


# --- every architecture ------------------------------------------------------------------------------------

def test_zero_init_leaves_logits_exactly_unchanged(model_type, input_ids):
    base = make_tiny_model(model_type)
    with torch.no_grad():
        expected = base(input_ids).logits
        model = adapted(model_type)
        assert len(wrappers(model)) == ADAPTER_LAYERS
        assert torch.equal(model(input_ids).logits, expected)


def test_only_prompts_and_gates_are_trained_and_count_matches_formula(model_type, input_ids):
    model = adapted(model_type)
    config = methods.applied_config(model)
    dims = model_dims(model.config)
    gates_per_layer = dims["num_heads"]
    # the formula, written out independently of num_trainable
    expected = ADAPTER_LAYERS * (ADAPTER_LEN * dims["hidden_size"] + gates_per_layer)
    assert num_trainable(model.config, config) == expected
    assert methods.trainable_parameters(model)[0] == expected
    scalar = LlamaAdapterConfig(adapter_len=ADAPTER_LEN, adapter_layers=ADAPTER_LAYERS, gate="scalar")
    assert num_trainable(model.config, scalar) == ADAPTER_LAYERS * (ADAPTER_LEN * dims["hidden_size"] + 1)
    assert methods.trainable_parameters(adapted(model_type, gate="scalar"))[0] == num_trainable(model.config, scalar)

    # the adapted layers are the top ones
    layers = decoder_layers(model)
    attention = get_architecture(model).attention
    assert [isinstance(getattr(layer, attention), AdaptedAttention) for layer in layers] == [False, False, True, True]

    open_gates(model)
    with torch.no_grad():
        base_logits = make_tiny_model(model_type)(input_ids).logits
    logits = model(input_ids).logits
    assert not torch.allclose(logits, base_logits, atol=1e-4), "an open gate must change the output"
    next_token_loss(logits, input_ids).backward()
    for name, parameter in model.named_parameters():
        if name.rsplit(".", 1)[-1] in ("adaption_prompt", "adaption_gate"):
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
        else:
            assert parameter.grad is None, f"{name} got a gradient"


def test_generate_with_kv_cache_matches_full_forward(model_type):
    model = adapted(model_type)
    open_gates(model)
    prompt = torch.randint(3, 128, (2, 6), generator=torch.Generator().manual_seed(5))
    new_tokens = 4
    with torch.no_grad():
        out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens,
                             do_sample=False, use_cache=True, return_dict_in_generate=True, output_logits=True,
                             pad_token_id=0)
        # no cache: one forward over the whole generated sequence (causal, so position t sees what step t saw)
        full = model(out.sequences, use_cache=False).logits
    cached = torch.stack(out.logits, dim=1)  # (B, new_tokens, vocab)
    uncached = full[:, prompt.shape[1] - 1:-1]  # the logits that predicted each generated token
    torch.testing.assert_close(cached, uncached, atol=1e-4, rtol=1e-4)
    assert torch.equal(out.sequences[:, prompt.shape[1]:], uncached.argmax(-1))


def test_gradient_checkpointing_gives_the_same_gradients(model_type, input_ids):
    grads = []
    for checkpointing in (False, True):
        model = adapted(model_type)
        open_gates(model)
        model.train()
        for module in model.modules():  # same numbers with and without checkpointing
            if isinstance(module, nn.Dropout):
                module.p = 0.0
        if checkpointing:
            model.gradient_checkpointing_enable()
            assert any(getattr(m, "gradient_checkpointing", False) for m in model.modules())
        next_token_loss(model(input_ids).logits, input_ids).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-6, rtol=1e-5)


def test_save_then_load_into_a_fresh_base_gives_identical_logits(model_type, input_ids, tmp_path):
    model = adapted(model_type)
    open_gates(model)
    with torch.no_grad():
        for wrapper in wrappers(model):
            wrapper.adaption_prompt.add_(0.1)  # not the fresh init the loaded model would start from
        expected = model(input_ids).logits
    methods.save_adapter(model, tmp_path)
    loaded = methods.load_adapter(make_tiny_model(model_type), tmp_path)
    assert methods.applied_config(loaded) == methods.applied_config(model)
    with torch.no_grad():
        assert torch.equal(loaded(input_ids).logits, expected)


# --- what the gate does ------------------------------------------------------------------------------------

def test_a_per_head_gate_only_touches_its_own_head(input_ids):
    """Opening head 0's gate changes the o_proj input in head 0's slice only."""
    model = adapted("llama")
    top = wrappers(model)[-1]
    captured = []
    # a forward (post) hook sees the o_proj input after the adapter's pre-hook has added to it
    top.attention.o_proj.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0].detach()))
    with torch.no_grad():
        model(input_ids)
        top.adaption_gate[0] = 0.8
        model(input_ids)
    head_dim = model_dims(model.config)["head_dim"]
    difference = (captured[1] - captured[0]).abs()
    assert difference[..., :head_dim].max() > 1e-3
    assert difference[..., head_dim:].max() == 0


def test_per_head_tanh_gates_all_equal_reduce_to_the_scalar_gate(input_ids):
    """tanh(g) on every head is PEFT's scalar gate of value tanh(g): the two variants share everything else."""
    per_head, scalar = adapted("llama", gate="per_head_tanh"), adapted("llama", gate="scalar")
    with torch.no_grad():
        for ours, theirs in zip(wrappers(per_head), wrappers(scalar)):
            theirs.adaption_prompt.copy_(ours.adaption_prompt)
            ours.adaption_gate.fill_(math.atanh(0.3))
            theirs.adaption_gate.fill_(0.3)
        torch.testing.assert_close(per_head(input_ids).logits, scalar(input_ids).logits, atol=1e-6, rtol=1e-5)


# --- equivalence with HF PEFT (gate="scalar") ----------------------------------------------------------------

@pytest.mark.parametrize("peft_model_type", ["llama", "mistral", "gpt2"])
def test_matches_hf_peft_adaption_prompt(peft_model_type, input_ids):
    peft = pytest.importorskip("peft")
    ours = adapted(peft_model_type, gate="scalar")
    base = make_tiny_model(peft_model_type)
    if peft_model_type == "gpt2":
        # PEFT's gpt2 path adds the adapter output after c_proj, unprojected; ours goes through c_proj like the
        # paper. With c_proj = identity (no bias) the two coincide, so everything else can be compared.
        for model in (ours, base):
            for layer in decoder_layers(model)[-ADAPTER_LAYERS:]:
                c_proj = layer.attn.attention.c_proj if model is ours else layer.attn.c_proj
                with torch.no_grad():
                    c_proj.weight.copy_(torch.eye(c_proj.weight.shape[0]))
                    c_proj.bias.zero_()
    theirs = peft.get_peft_model(base, peft.AdaptionPromptConfig(
        adapter_len=ADAPTER_LEN, adapter_layers=ADAPTER_LAYERS, task_type="CAUSAL_LM"))
    assert_matches_peft_adaption_prompt(ours, theirs, input_ids, ADAPTER_LAYERS)


def assert_matches_peft_adaption_prompt(ours, theirs, input_ids, layers: int, logits_tolerance: float = 1e-5):
    """Open our gates, give HF PEFT's adaption prompts and gates the same values, then compare the
    logits and the gradients of every prompt and gate (ours: ``gate="scalar"``, PEFT's kind)."""
    open_gates(ours)
    peft_modules = copy_into_hf_peft(ours, theirs)
    assert len(peft_modules) == layers

    our_logits, peft_logits = ours(input_ids=input_ids).logits, theirs(input_ids=input_ids).logits
    torch.testing.assert_close(our_logits, peft_logits, atol=logits_tolerance, rtol=logits_tolerance)
    next_token_loss(our_logits, input_ids).backward()
    next_token_loss(peft_logits, input_ids).backward()
    for mine, peft_module in zip(wrappers(ours), peft_modules):
        torch.testing.assert_close(mine.adaption_prompt.grad, peft_module.adaption_prompt.grad[0], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(mine.adaption_gate.grad, peft_module.adaption_gate.grad, atol=1e-5, rtol=1e-4)


def test_loading_into_a_different_base_names_both_shapes(tmp_path):
    methods.save_adapter(adapted("llama"), tmp_path)
    other = make_tiny_model("llama", hidden_size=32, head_dim=8, intermediate_size=64)
    with pytest.raises(ValueError, match=r"\(4, 64\).*\(4, 32\)"):
        methods.load_adapter(other, tmp_path)
