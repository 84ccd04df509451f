"""Model configs built in code: tiny random-init ones for tests, and published shapes for the simulator.

Nothing here downloads anything: the configs are ``transformers`` config objects built from
numbers, so a model can be instantiated with random weights (tests) or traced under
``FakeTensorMode`` without allocating memory (the memory simulator).
"""
from __future__ import annotations

from transformers import (AutoConfig, GPT2Config, LlamaConfig, MistralConfig, Phi3Config,
                          Qwen2Config)

# Small enough that a forward/backward takes milliseconds, with GQA where the family has it.
_TINY_COMMON = dict(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                    num_attention_heads=4, max_position_embeddings=256, tie_word_embeddings=False)


def tiny_random_config(model_type: str, **overrides):
    """A tiny config of ``model_type`` (llama, mistral, qwen2, gemma, gemma2, phi3, gpt2)."""
    if model_type == "llama":
        config = LlamaConfig(**_TINY_COMMON, num_key_value_heads=2)
    elif model_type == "mistral":
        config = MistralConfig(**_TINY_COMMON, num_key_value_heads=2, sliding_window=None)
    elif model_type == "qwen2":
        config = Qwen2Config(**_TINY_COMMON, num_key_value_heads=2)
    elif model_type in ("gemma", "gemma2"):
        config = AutoConfig.for_model(model_type, **_TINY_COMMON, num_key_value_heads=2, head_dim=16)
    elif model_type == "phi3":
        config = Phi3Config(**_TINY_COMMON, num_key_value_heads=2, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    elif model_type == "gpt2":
        config = GPT2Config(vocab_size=128, n_embd=64, n_layer=4, n_head=4, n_positions=256,
                            bos_token_id=1, eos_token_id=2)
    else:
        raise ValueError(f"no tiny config for model_type {model_type!r}; known: {', '.join(TINY_MODEL_TYPES)}")
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


TINY_MODEL_TYPES = ("llama", "mistral", "qwen2", "gemma", "gemma2", "phi3", "gpt2")


def llama_config(size: str):
    """Published shapes of Llama 3.x models: '1B', '8B', '70B', '405B' (Meta's config.json files)."""
    shapes = {
        # hidden, intermediate, layers, heads, kv heads, vocab, tied embeddings
        "1B": (2048, 8192, 16, 32, 8, 128256, True),     # Llama 3.2 1B
        "8B": (4096, 14336, 32, 32, 8, 128256, False),   # Llama 3.1 8B
        "70B": (8192, 28672, 80, 64, 8, 128256, False),  # Llama 3.1 70B
        "405B": (16384, 53248, 126, 128, 8, 128256, False),  # Llama 3.1 405B
    }
    if size not in shapes:
        raise ValueError(f"unknown Llama size {size!r}; known: {', '.join(shapes)}")
    hidden, inter, layers, heads, kv, vocab, tied = shapes[size]
    return LlamaConfig(hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                       num_attention_heads=heads, num_key_value_heads=kv, vocab_size=vocab,
                       tie_word_embeddings=tied, max_position_embeddings=131072, rope_theta=500000.0)
