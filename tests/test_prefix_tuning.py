"""Prefix tuning (Li & Liang 2021): the prefix is the start of every layer's KV cache, gradients,
folding the reparameterisation MLP, save/load, HF PEFT equivalence, generate with the KV cache and
left padding, gradient checkpointing (and where it cannot work), bad input."""
from __future__ import annotations

import pytest
import torch
from conftest import generate_greedy, greedy_without_cache, make_tiny_model

import peftbook
from peftbook.methods import prefix_tuning
from peftbook.methods.prefix_tuning import PrefixTuningConfig
from peftbook.models import model_dims
from peftbook.zoo import TINY_MODEL_TYPES

pytestmark = pytest.mark.unit
N = 3  # virtual tokens in these tests


def prefix_model(model_type="llama", seed=0, **fields):
    fields.setdefault("projection_hidden_size", 8)
    return peftbook.apply(make_tiny_model(model_type, seed), PrefixTuningConfig(num_virtual_tokens=N, **fields))


def ids_batch(batch=2, length=6, seed=1):
    torch.manual_seed(seed)
    return torch.randint(3, 128, (batch, length))


def flat_prefix_of_real_tokens(base, tokens) -> torch.Tensor:
    """The keys/values ``base`` computes for ``tokens`` (1, n), in the flat (n, L*2*kv_dim) prefix layout."""
    with torch.no_grad():
        cache = base(input_ids=tokens, use_cache=True).cache
    per_layer = [torch.stack([layer.keys[0], layer.values[0]]) for layer in cache.layers]  # L x (2, kv_heads, n, hd)
    stacked = torch.stack(per_layer)  # (L, 2, kv_heads, n, hd)
    return stacked.permute(3, 0, 1, 2, 4).reshape(tokens.shape[1], -1)  # (n, L*2*kv_heads*hd)


@pytest.mark.parametrize("model_type", TINY_MODEL_TYPES)
def test_prefix_acts_as_the_activations_of_tokens_before_the_input(model_type):
    """A prefix equal to the keys/values of real tokens p makes the model on x the base model on [p, x]:
    the prefix is the start of every layer's cache and the real tokens sit at positions n, n+1, ..."""
    base = make_tiny_model(model_type)
    model = prefix_model(model_type)
    p, x = torch.tensor([[5, 17, 42]]), ids_batch()
    with torch.no_grad():
        model.prefix_encoder.prefix.copy_(flat_prefix_of_real_tokens(base, p))
    out = model(input_ids=x, attention_mask=torch.ones_like(x), labels=x)
    expected = base(input_ids=torch.cat([p.expand(2, -1), x], 1))
    assert out.logits.shape == (2, x.shape[1], 128)  # the prefix has no logits of its own
    torch.testing.assert_close(out.logits, expected.logits[:, N:], atol=1e-5, rtol=1e-5)
    assert out.cache.get_seq_length() == N + x.shape[1]


@pytest.mark.parametrize("model_type", TINY_MODEL_TYPES)
def test_vocab_init_starts_from_the_models_own_keys_and_values_of_real_tokens(model_type):
    base = make_tiny_model(model_type)
    torch.manual_seed(5)
    tokens = torch.randint(0, base.config.vocab_size, (1, N))
    expected = flat_prefix_of_real_tokens(base, tokens)
    torch.manual_seed(5)  # the same draw inside apply
    model = peftbook.apply(base, PrefixTuningConfig(num_virtual_tokens=N, init="vocab"))
    assert torch.allclose(model.prefix_encoder.prefix, expected, atol=1e-6)
    assert model.prefix_encoder.prefix.requires_grad
    torch.manual_seed(5)
    random = prefix_model(model_type, seed=0)  # the default: N(0, 1), HF PEFT's
    assert not torch.allclose(random.prefix_encoder.prefix, expected)


@pytest.mark.parametrize("model_type", TINY_MODEL_TYPES)
@pytest.mark.parametrize("prefix_projection", [False, True])
def test_only_the_prefix_trains_and_the_count_matches_the_formula(model_type, prefix_projection):
    model = prefix_model(model_type, prefix_projection=prefix_projection)
    trainable, _ = peftbook.trainable_parameters(model)
    assert trainable == prefix_tuning.num_trainable(model.config, model.peftbook_config)
    dims = model_dims(model.config)
    if not prefix_projection:  # n x layers x (keys, values) x kv heads x head size
        assert trainable == N * dims["num_layers"] * 2 * dims["num_kv_heads"] * dims["head_dim"]
    x = ids_batch()
    model(input_ids=x, labels=x).loss.backward()
    with_grad = {name for name, p in model.named_parameters() if p.grad is not None}
    assert with_grad == {name for name, _ in model.named_parameters() if name.startswith("prefix_encoder.")}
    assert all(p.grad.abs().sum() > 0 for p in model.prefix_encoder.parameters())


def test_fold_keeps_the_logits_and_drops_the_mlp():
    model = prefix_model("llama", prefix_projection=True)
    x = ids_batch()
    with torch.no_grad():
        before = model(input_ids=x).logits
        prefix_tuning.fold(model)
        after = model(input_ids=x).logits
    torch.testing.assert_close(after, before, atol=1e-6, rtol=1e-6)
    assert not hasattr(model.prefix_encoder, "mlp") and model.peftbook_config.prefix_projection is False
    assert peftbook.trainable_parameters(model)[0] == prefix_tuning.num_trainable(model.config, model.peftbook_config)


@pytest.mark.parametrize("prefix_projection", [False, True])
def test_save_load_gives_identical_logits_and_a_different_base_fails(tmp_path, prefix_projection):
    model = prefix_model("mistral", prefix_projection=prefix_projection)
    x = ids_batch()
    peftbook.save_adapter(model, tmp_path)  # with the MLP: saved folded
    loaded = peftbook.load_adapter(make_tiny_model("mistral"), tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=x).logits, model(input_ids=x).logits, atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match=r"\(3, 256\).*\(3, 128\)"):  # 4 layers x 2 x kv_dim 32 vs 2 layers
        peftbook.load_adapter(make_tiny_model("mistral", num_hidden_layers=2), tmp_path)


def copy_into_peft(ours, reference, prefix_projection):
    encoder = reference.prompt_encoder.default
    with torch.no_grad():
        if prefix_projection:
            encoder.embedding.weight.copy_(ours.prefix_encoder.embedding)
            encoder.transform.load_state_dict(ours.prefix_encoder.mlp.state_dict())
        else:
            encoder.embedding.weight.copy_(ours.prefix_encoder.prefix)
    return [encoder.embedding.weight, *(encoder.transform.parameters() if prefix_projection else [])]


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "gemma2"])
@pytest.mark.parametrize("prefix_projection", [False, True])
def test_same_logits_and_gradients_as_hf_peft(tmp_path, model_type, prefix_projection):
    from peft import PeftModel, TaskType, get_peft_model
    from peft import PrefixTuningConfig as PeftPrefixTuningConfig

    ours = prefix_model(model_type, prefix_projection=prefix_projection)
    reference = get_peft_model(make_tiny_model(model_type), PeftPrefixTuningConfig(
        task_type=TaskType.CAUSAL_LM, num_virtual_tokens=N, prefix_projection=prefix_projection, encoder_hidden_size=8))
    reference_parameters = copy_into_peft(ours, reference, prefix_projection)
    x = ids_batch()
    mask = torch.ones_like(x)
    out = ours(input_ids=x, attention_mask=mask, labels=x)
    expected = reference(input_ids=x, attention_mask=mask, labels=x)
    torch.testing.assert_close(out.logits, expected.logits, atol=1e-5, rtol=1e-5)
    out.loss.backward()
    expected.loss.backward()
    for ours_parameter, reference_parameter in zip(ours.prefix_encoder.parameters(), reference_parameters, strict=True):
        torch.testing.assert_close(ours_parameter.grad, reference_parameter.grad, atol=1e-5, rtol=1e-5)

    peftbook.save_adapter(ours, tmp_path)  # our folder loads in HF PEFT
    loaded = PeftModel.from_pretrained(make_tiny_model(model_type), tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=x, attention_mask=mask).logits, out.logits, atol=1e-5, rtol=1e-5)






@pytest.mark.parametrize("model_type", TINY_MODEL_TYPES)
def test_generate_with_kv_cache_and_left_padding(model_type):
    model = prefix_model(model_type)
    x = ids_batch()
    sequences, logits = generate_greedy(model, x, torch.ones_like(x))
    expected_sequences, expected_logits = greedy_without_cache(model, x, 4)
    assert torch.equal(sequences, expected_sequences)  # the prefix is not re-added per step
    torch.testing.assert_close(logits, expected_logits, atol=1e-5, rtol=1e-5)
    padded, mask = x.clone(), torch.ones_like(x)
    padded[1, :2], mask[1, :2] = 0, 0
    batch_sequences, batch_logits = generate_greedy(model, padded, mask)
    alone_sequences, alone_logits = generate_greedy(model, x[1:, 2:], mask[1:, 2:])
    # a left-padded row generates what the same row does alone
    assert torch.equal(batch_sequences[1, -4:], alone_sequences[0, -4:])
    torch.testing.assert_close(batch_logits[1], alone_logits[0], atol=1e-5, rtol=1e-5)


def loss_and_grads(model, x):
    model.zero_grad(set_to_none=True)
    loss = model(input_ids=x, labels=x).loss
    loss.backward()
    return float(loss), {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("model_type, prefix_projection", [("llama", False), ("llama", True), ("gemma2", True)])
def test_gradient_checkpointing_keeps_the_prefix_in_every_layer(model_type, prefix_projection):
    # gemma2 with a 4-token window: its sliding layers' cache class is kept read-only too
    model = peftbook.apply(make_tiny_model(model_type, sliding_window=4) if model_type == "gemma2"
                           else make_tiny_model(model_type), PrefixTuningConfig(
                               num_virtual_tokens=N, prefix_projection=prefix_projection, projection_hidden_size=8))
    model.train()
    x = ids_batch(length=10)
    expected, expected_grads = loss_and_grads(model, x)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    loss, grads = loss_and_grads(model, x)
    assert loss == pytest.approx(expected, rel=1e-6)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[name], rtol=1e-5, atol=1e-7, msg=name)
    with torch.no_grad():  # without gradients nothing is checkpointed: generate keeps its growing cache
        out = model.generate(x[:1, :4], max_new_tokens=3, do_sample=False)
    assert out.shape == (1, 7)


def test_gradient_checkpointing_cases_that_cannot_carry_the_prefix_say_so():
    x = ids_batch()
    gpt2 = prefix_model("gpt2").train()  # GPT2Model itself passes no cache to checkpointed blocks
    gpt2.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    with pytest.raises(ValueError, match="cannot train gpt2 with gradient checkpointing"):
        gpt2(input_ids=x, labels=x)
    model = prefix_model("llama").train()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    with pytest.raises(ValueError, match="use_reentrant"):
        model(input_ids=x, labels=x)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    from transformers import DynamicCache
    with pytest.raises(ValueError, match="takes no KV cache"):
        model(input_ids=x, labels=x, past_key_values=DynamicCache(config=model.config))


@pytest.mark.parametrize("fields, message", [
    ({"num_virtual_tokens": 0}, "num_virtual_tokens=0"),
    ({"num_virtual_tokens": -1}, "num_virtual_tokens=-1"),
    ({"num_virtual_tokens": "20"}, "num_virtual_tokens='20'"),
    ({"prefix_projection": True, "projection_hidden_size": 0}, "projection_hidden_size=0"),
    ({"init": "zeros"}, "init='zeros' is not allowed; allowed: random, vocab"),
    ({"init": "vocab", "prefix_projection": True}, "with prefix_projection=True the prefix is an MLP's output"),
])
def test_bad_config_is_rejected_before_any_work(fields, message):
    model = make_tiny_model("llama")
    with pytest.raises(ValueError, match=message):
        peftbook.apply(model, PrefixTuningConfig(**fields))
    assert not hasattr(model, "prefix_encoder") and peftbook.trainable_parameters(model)[0] > 0
