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
