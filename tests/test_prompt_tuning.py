"""Prompt tuning (Lester et al. 2021): placement of the virtual tokens, gradients, save/load, HF PEFT
equivalence, generate with the KV cache and left padding, gradient checkpointing, bad input."""
from __future__ import annotations

import pytest
import torch
from conftest import generate_greedy, greedy_without_cache, make_tiny_model, make_word_tokenizer

import peftbook
from peftbook.methods import prompt_tuning
from peftbook.methods.prompt_tuning import PromptTuningConfig
from peftbook.zoo import TINY_MODEL_TYPES

pytestmark = pytest.mark.unit
N = 3  # virtual tokens in these tests


def prompt_model(model_type="llama", seed=0, **fields):
    return peftbook.apply(make_tiny_model(model_type, seed), PromptTuningConfig(num_virtual_tokens=N, **fields))


def ids_batch(batch=2, length=6, seed=1):
    torch.manual_seed(seed)
    return torch.randint(3, 128, (batch, length))


@pytest.mark.parametrize("model_type", TINY_MODEL_TYPES)
def test_virtual_tokens_act_as_tokens_prepended_to_the_input(model_type):
    """With the prompt set to the embeddings of real tokens p, the model on x is the base model on [p, x]."""
    base = make_tiny_model(model_type)
    model = prompt_model(model_type)
    p, x = torch.tensor([[5, 17, 42]]), ids_batch()
    with torch.no_grad():
        model.prompt_embeddings.copy_(model.get_input_embeddings()(p[0]))  # Gemma scales in the module
    out = model(input_ids=x, labels=x)
    expected = base(input_ids=torch.cat([p.expand(2, -1), x], 1), labels=torch.cat([torch.full((2, N), -100), x], 1))
    assert out.logits.shape == (2, N + x.shape[1], 128)  # like HF PEFT: virtual positions included
    torch.testing.assert_close(out.logits, expected.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.loss, expected.loss)  # no loss on virtual positions
    with torch.no_grad():  # inputs_embeds instead of input_ids: the prompt goes in front just the same
        from_embeds = model(inputs_embeds=model.get_input_embeddings()(x)).logits
    torch.testing.assert_close(from_embeds, out.logits.detach())


@pytest.mark.parametrize("model_type", TINY_MODEL_TYPES)
def test_only_the_prompt_trains_and_the_count_matches_the_formula(model_type):
    model = prompt_model(model_type)
    trainable, total = peftbook.trainable_parameters(model)
    assert trainable == prompt_tuning.num_trainable(model.config, model.peftbook_config)
    assert trainable == N * model.config.get_text_config().hidden_size  # n x hidden
    x = ids_batch()
    model(input_ids=x, labels=x).loss.backward()
    with_grad = [name for name, p in model.named_parameters() if p.grad is not None]
    assert with_grad == ["prompt_embeddings"]
    assert model.prompt_embeddings.grad.abs().sum() > 0


def test_save_load_gives_identical_logits_and_a_different_base_fails(tmp_path):
    model = prompt_model("qwen2")
    x = ids_batch()
    peftbook.save_adapter(model, tmp_path)
    loaded = peftbook.load_adapter(make_tiny_model("qwen2"), tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=x).logits, model(input_ids=x).logits, atol=0, rtol=0)
    with pytest.raises(ValueError, match=r"\(3, 64\).*\(3, 32\)"):
        peftbook.load_adapter(make_tiny_model("qwen2", hidden_size=32, head_dim=8), tmp_path)


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "gemma2"])
def test_same_logits_and_gradients_as_hf_peft(tmp_path, model_type):
    from peft import PeftModel, TaskType, get_peft_model
    from peft import PromptTuningConfig as PeftPromptTuningConfig

    ours = prompt_model(model_type)
    ref = get_peft_model(make_tiny_model(model_type),
                         PeftPromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=N))
    reference_prompt = ref.prompt_encoder.default.embedding.weight
    with torch.no_grad():
        reference_prompt.copy_(ours.prompt_embeddings)
    x = ids_batch()
    mask = torch.ones_like(x)
    out = ours(input_ids=x, attention_mask=mask, labels=x)
    expected = ref(input_ids=x, attention_mask=mask, labels=x)
    torch.testing.assert_close(out.logits, expected.logits, atol=1e-5, rtol=1e-5)
    out.loss.backward()
    expected.loss.backward()
    torch.testing.assert_close(ours.prompt_embeddings.grad, reference_prompt.grad, atol=1e-5, rtol=1e-5)

    peftbook.save_adapter(ours, tmp_path)  # our folder loads in HF PEFT
    loaded = PeftModel.from_pretrained(make_tiny_model(model_type), tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=x, attention_mask=mask).logits, out.logits, atol=1e-5, rtol=1e-5)






@pytest.mark.parametrize("model_type", TINY_MODEL_TYPES)
def test_generate_with_kv_cache_and_left_padding(model_type):
    model = prompt_model(model_type)
    x = ids_batch()
    sequences, logits = generate_greedy(model, x, torch.ones_like(x))
    expected_sequences, expected_logits = greedy_without_cache(model, x, 4)
    assert torch.equal(sequences, expected_sequences)  # the prompt is not prepended again per step
    torch.testing.assert_close(logits, expected_logits, atol=1e-5, rtol=1e-5)
    padded, mask = x.clone(), torch.ones_like(x)
    padded[1, :2], mask[1, :2] = 0, 0
    batch_sequences, batch_logits = generate_greedy(model, padded, mask)
    alone_sequences, alone_logits = generate_greedy(model, x[1:, 2:], mask[1:, 2:])
    # a left-padded row generates what the same row does alone
    assert torch.equal(batch_sequences[1, -4:], alone_sequences[0, -4:])
    torch.testing.assert_close(batch_logits[1], alone_logits[0], atol=1e-5, rtol=1e-5)


def test_gradient_checkpointing_gives_the_same_gradient():
    x = ids_batch()
    grads = []
    for checkpointing in (False, True):
        model = prompt_model("llama").train()
        if checkpointing:
            model.gradient_checkpointing_enable()
            assert model.is_activation_checkpointing
        model(input_ids=x, labels=x).loss.backward()
        grads.append(model.prompt_embeddings.grad)
    torch.testing.assert_close(grads[0], grads[1])


def test_vocab_and_text_initialisation(tmp_path):
    with torch.no_grad():
        table = make_tiny_model("llama").get_input_embeddings().weight.clone()
    rows = prompt_model("llama", init="vocab").prompt_embeddings
    assert all((table == row).all(-1).any() for row in rows)  # every virtual token is some token's embedding

    make_word_tokenizer().save_pretrained(tmp_path)
    model = peftbook.apply(make_tiny_model("llama"), PromptTuningConfig(
        num_virtual_tokens=5, init="text", init_text="w10 w20", tokenizer_name_or_path=str(tmp_path)))
    torch.testing.assert_close(model.prompt_embeddings, table[[10, 20, 10, 20, 10]])  # repeated, truncated to 5
    peftbook.save_adapter(model, tmp_path / "adapter")  # HF PEFT accepts the TEXT-init config
    from peft import PeftModel
    x = ids_batch()
    with torch.no_grad():
        expected = model(input_ids=x).logits
        loaded = PeftModel.from_pretrained(make_tiny_model("llama"), tmp_path / "adapter")
        torch.testing.assert_close(loaded(input_ids=x).logits, expected, atol=1e-5, rtol=1e-5)
    truncated = peftbook.apply(make_tiny_model("llama"), PromptTuningConfig(
        num_virtual_tokens=2, init="text", init_text="w7 w8 w9", tokenizer_name_or_path=str(tmp_path)))
    torch.testing.assert_close(truncated.prompt_embeddings, table[[7, 8]])

    random_rows = prompt_model("llama", init="random").prompt_embeddings
    assert 0.5 < random_rows.std() / table.std() < 2  # on the scale of the model's own embeddings


@pytest.mark.parametrize("fields, message", [
    ({"num_virtual_tokens": 0}, "num_virtual_tokens=0"),
    ({"num_virtual_tokens": -2}, "num_virtual_tokens=-2"),
    ({"num_virtual_tokens": 2.5}, "num_virtual_tokens=2.5"),
    ({"init": "zeros"}, "init='zeros'.*random, vocab, text"),
    ({"init": "text"}, "init_text"),
    ({"init_text": "positive negative"}, "only used with init='text'"),
])
def test_bad_config_is_rejected_before_any_work(fields, message):
    model = make_tiny_model("llama")
    with pytest.raises(ValueError, match=message):
        peftbook.apply(model, PromptTuningConfig(**fields))
    assert not hasattr(model, "prompt_embeddings") and peftbook.trainable_parameters(model)[0] > 0


def test_text_init_without_a_tokenizer_and_applying_twice_fail():
    with pytest.raises(ValueError, match="tokenizer_name_or_path"):
        peftbook.apply(make_tiny_model("llama"), PromptTuningConfig(init="text", init_text="w5"))
    model = prompt_model("llama")
    with pytest.raises(ValueError, match="already applied"):
        peftbook.apply(model, PromptTuningConfig())
