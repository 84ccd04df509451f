"""Full fine-tuning: all parameters train, closed-form count, full checkpoint save/load."""
from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_model

import peftbook
from peftbook.methods import full
from peftbook.methods.full import FullFinetuneConfig

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("train_embeddings", [True, False])
def test_count_matches_formula_and_gradients_flow(model_type, train_embeddings, input_ids):
    model = make_tiny_model(model_type)
    with torch.no_grad():
        before = model(input_ids).logits
    config = FullFinetuneConfig(train_embeddings=train_embeddings)
    peftbook.apply(model, config)
    with torch.no_grad():
        assert torch.equal(model(input_ids).logits, before)
    trainable, total = peftbook.trainable_parameters(model)
    assert total == full.num_parameters(model.config)
    assert trainable == full.num_trainable(model.config, config)
    model.train()
    model(input_ids=input_ids, labels=input_ids).loss.backward()
    embedding = model.get_input_embeddings().weight
    assert (embedding.grad is not None) == train_embeddings
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])  # gpt2 ties its output head to the embedding
def test_save_load_gives_identical_logits(model_type, input_ids, tmp_path):
    model = peftbook.apply(make_tiny_model(model_type), FullFinetuneConfig())
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
        logits = model(input_ids).logits
    peftbook.save_adapter(model, tmp_path)
    fresh = peftbook.load_adapter(make_tiny_model(model_type, seed=5), tmp_path)
    with torch.no_grad():
        assert torch.equal(fresh(input_ids).logits, logits)


def test_load_into_a_different_base_names_both_shapes(tmp_path):
    peftbook.save_adapter(peftbook.apply(make_tiny_model("llama"), FullFinetuneConfig()), tmp_path)
    with pytest.raises(ValueError, match=r"\(128, 64\).*\(128, 32\)"):
        peftbook.load_adapter(make_tiny_model("llama", hidden_size=32, intermediate_size=64), tmp_path)


def test_bad_config():
    with pytest.raises(ValueError, match="train_embeddings='no'"):
        peftbook.apply(make_tiny_model("llama"), FullFinetuneConfig(train_embeddings="no"))
