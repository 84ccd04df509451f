"""load_model, the architecture table and the info command (foundation issue)."""
from __future__ import annotations

import json
import types

import pytest
import torch
from conftest import make_tiny_model, save_tiny_model

import peftbook.models as models
from peftbook.models import ARCHITECTURES, get_architecture, load_model
from peftbook.zoo import TINY_MODEL_TYPES

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("model_type", TINY_MODEL_TYPES)
def test_load_forward_generate_every_architecture(tmp_path, model_type):
    reference = save_tiny_model(tmp_path, model_type)
    model, tokenizer = load_model(tmp_path, device="cpu", dtype="fp32")  # auto: test_precision.py
    assert model.config.model_type == model_type
    assert model.dtype == torch.float32
    assert tokenizer.pad_token is not None
    batch = tokenizer(["w5 w6 w7 w8", "w9 w10"], return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**batch).logits
        expected = reference(**batch).logits
    torch.testing.assert_close(logits, expected)  # the saved weights, not a fresh init
    generated = model.generate(**batch, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert generated.shape == (2, batch["input_ids"].shape[1] + 4)


@pytest.mark.parametrize("model_type", TINY_MODEL_TYPES)
def test_architecture_table_names_real_modules(model_type):
    model = make_tiny_model(model_type)
    arch = get_architecture(model)
    layers = models.decoder_layers(model)
    assert len(layers) == model.config.num_hidden_layers if hasattr(model.config, "num_hidden_layers") else 4
    attention = getattr(layers[0], arch.attention)
    projections = [arch.q_proj, arch.k_proj, arch.v_proj] if arch.qkv_proj is None else [arch.qkv_proj]
    for name in projections + [arch.o_proj]:
        assert hasattr(attention, name), f"{model_type}: {arch.attention}.{name} missing"
    module_names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    assert set(arch.lora_targets) <= module_names
    assert model.get_submodule(arch.embeddings) is model.get_input_embeddings()
    dims = models.model_dims(model.config)
    assert dims["num_layers"] == len(layers) and dims["hidden_size"] == 64


def test_generic_rule_covers_llama_like_models():
    model = make_tiny_model("llama")
    model.config.model_type = "my_llama_clone"
    assert get_architecture(model).q_proj == "q_proj"


def test_unsupported_architecture_lists_supported():
    config = types.SimpleNamespace(model_type="mamba")
    with pytest.raises(ValueError, match="model_type 'mamba' is not in the architecture table .*llama"):
        get_architecture(config)


def test_four_bit_load_on_cpu(tmp_path):
    import bitsandbytes as bnb

    save_tiny_model(tmp_path, "llama")
    for quant_type in ("nf4", "fp4"):
        model, tokenizer = load_model(tmp_path, quantize=quant_type, device="cpu")
        linear4 = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
        assert linear4, "no Linear4bit module after quantize"
        assert linear4[0].weight.quant_state.quant_type == quant_type
        out = model(torch.tensor([[4, 5, 6, 7]])).logits
        assert torch.isfinite(out).all()


def test_bad_quantize_value():
    with pytest.raises(ValueError, match="quantize='int3'.*allowed"):
        load_model("tiny", quantize="int3")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_cuda_requested_without_cuda():
    with pytest.raises(ValueError, match="CUDA is not available"):
        load_model("tiny", device="cuda")


def test_directory_without_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_model(tmp_path)


def test_unknown_model_name_is_one_clear_message():
    with pytest.raises(FileNotFoundError) as info:
        load_model("no-such-org/no-such-model-xyz")
    message = str(info.value)
    assert "not 'tiny'" in message and "no network" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no chained hub traceback


def test_missing_path_is_reported():
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model("./no/such/dir")


def test_tiny_not_built_message(tmp_path, monkeypatch):
    monkeypatch.setattr(models, "TINY_DIR", tmp_path / "tiny")
    with pytest.raises(FileNotFoundError, match="tiny build"):
        load_model("tiny")


def test_info_json(capsys):
    from peftbook.__main__ import main

    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["torch"] == torch.__version__
    assert set(info["architectures"]) == set(ARCHITECTURES)
    assert "lora" in info["methods"] and info["device"] in ("cpu", "cuda")
    assert isinstance(info["bitsandbytes_4bit"], bool)
