"""Shared fixtures: tiny random-init models of every supported architecture, built in code."""
from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from peftbook.zoo import TINY_MODEL_TYPES, tiny_random_config  # noqa: E402


def make_tiny_model(model_type: str = "llama", seed: int = 0, **overrides):
    """A random-init causal LM of ``model_type`` in eval mode (fp32, CPU)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_random_config(model_type, **overrides))
    return model.eval()


@pytest.fixture(params=TINY_MODEL_TYPES)
def model_type(request) -> str:
    return request.param


@pytest.fixture
def tiny_model(model_type):
    return make_tiny_model(model_type)


@pytest.fixture
def input_ids():
    torch.manual_seed(1)
    return torch.randint(3, 128, (2, 12))


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


def make_word_tokenizer(vocab_size: int = 128):
    """A word-level tokenizer built in code (no download): <pad>=0, <s>=1, </s>=2, <unk>=3, w4..."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    vocab.update({f"w{i}": i for i in range(4, vocab_size)})
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", unk_token="<unk>")


def save_tiny_model(directory, model_type: str = "llama", seed: int = 0):
    """Save a random-init model of ``model_type`` and a matching tokenizer to ``directory``."""
    model = make_tiny_model(model_type, seed)
    model.save_pretrained(directory)
    make_word_tokenizer(model.config.vocab_size).save_pretrained(directory)
    return model


def greedy_without_cache(model, ids, steps):
    """Greedy decoding that recomputes everything each step: ids and each step's last logits."""
    logits = []
    with torch.no_grad():
        for _ in range(steps):
            logits.append(model(input_ids=ids, use_cache=False).logits[:, -1])
            ids = torch.cat([ids, logits[-1].argmax(-1, keepdim=True)], dim=1)
    return ids, torch.stack(logits, 1)  # (B, T+steps), (B, steps, vocab)


def generate_greedy(model, ids, mask, steps=4):
    """``generate`` with the KV cache: ids and each step's logits, shaped like greedy_without_cache."""
    out = model.generate(ids, attention_mask=mask, max_new_tokens=steps, do_sample=False,
                         output_logits=True, return_dict_in_generate=True)
    return out.sequences, torch.stack(out.logits, 1)  # (B, T+steps), (B, steps, vocab)


def randomize_lora(model, seed=0):
    """Give every LoRA B non-zero values so that tests see the LoRA branch at work."""
    from peftbook.methods import lora

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in lora.lora_modules(model).values():
            module.lora_B.weight.copy_(torch.randn(module.lora_B.weight.shape, generator=generator) * 0.1)
    return model


def train_step(model, input_ids):
    """One forward + backward in train mode with the inputs as labels; returns the loss."""
    model.train()
    loss = model(input_ids=input_ids, labels=input_ids).loss
    loss.backward()
    return loss
