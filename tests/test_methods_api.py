"""The shared method surface in peftbook.methods: apply, counts, save/load, merge, config errors."""
from __future__ import annotations

import json

import pytest
import torch
from conftest import make_tiny_model

import peftbook
import peftbook.models as models
from peftbook.methods import get_method, make_config
from peftbook.surgery import copy_state_checked
from peftbook.methods.full import FullFinetuneConfig
from peftbook.methods.lora import LoRAConfig

pytestmark = pytest.mark.unit


def test_apply_returns_the_same_model_and_twice_raises():
    model = make_tiny_model("llama")
    assert peftbook.apply(model, LoRAConfig()) is model
    with pytest.raises(ValueError, match=r"a method \(lora\) is already applied"):
        peftbook.apply(model, LoRAConfig())
    with pytest.raises(ValueError, match="already applied"):
        peftbook.apply(model, FullFinetuneConfig())


def test_trainable_parameters_counts_plain_models():
    model = make_tiny_model("llama")
    total = sum(p.numel() for p in model.parameters())
    assert peftbook.trainable_parameters(model) == (total, total)
    peftbook.apply(model, LoRAConfig(rank=2, targets=["q_proj"]))
    # q_proj is 64 -> 64 in the tiny config: 2 * (64 + 64) per layer, 4 layers
    assert peftbook.trainable_parameters(model) == (4 * 2 * (64 + 64), total + 4 * 2 * 128)


@pytest.mark.skipif(not models.bnb_4bit_available(), reason="bitsandbytes has no 4-bit backend here")
def test_trainable_parameters_counts_4bit_weights_at_their_logical_size():
    from peftbook.methods.qlora import QLoRAConfig

    fp_total = sum(p.numel() for p in make_tiny_model("llama").parameters())
    model = peftbook.apply(make_tiny_model("llama"), QLoRAConfig(rank=2, targets=["q_proj"]))
    stored = sum(p.numel() for p in model.parameters())
    trainable, total = peftbook.trainable_parameters(model)
    assert stored < total  # packed: two 4-bit values per stored byte
    assert (trainable, total) == (4 * 2 * 128, fp_total + 4 * 2 * 128)


def test_save_without_a_method_and_load_from_a_wrong_folder(tmp_path):
    with pytest.raises(ValueError, match="no peftbook method is applied"):
        peftbook.save_adapter(make_tiny_model("llama"), tmp_path)
    with pytest.raises(FileNotFoundError, match="peftbook_adapter.json"):
        peftbook.load_adapter(make_tiny_model("llama"), tmp_path)


def test_saved_folder_layout(tmp_path):
    model = peftbook.apply(make_tiny_model("llama"), LoRAConfig(rank=2, alpha=4))
    peftbook.save_adapter(model, tmp_path)
    meta = json.loads((tmp_path / "peftbook_adapter.json").read_text())
    assert meta["method"] == "lora" and meta["config"]["rank"] == 2 and meta["config"]["alpha"] == 4
    peft_config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert peft_config["peft_type"] == "LORA" and peft_config["r"] == 2
    assert sorted(peft_config["target_modules"]) == ["q_proj", "v_proj"]  # llama's default targets
    peftbook.save_adapter(peftbook.apply(make_tiny_model("llama"), FullFinetuneConfig()), tmp_path / "full")
    assert not (tmp_path / "full" / "adapter_config.json").exists()  # a full checkpoint is not a PEFT adapter


def test_merge_only_for_lora_methods():
    with pytest.raises(ValueError, match="applies to lora, qlora only"):
        peftbook.merge(make_tiny_model("llama"))
    with pytest.raises(ValueError, match="applies to lora, qlora only"):
        peftbook.merge(peftbook.apply(make_tiny_model("llama"), FullFinetuneConfig()))
    with pytest.raises(ValueError, match="applies to lora, qlora only"):
        peftbook.unmerge(peftbook.apply(make_tiny_model("llama"), FullFinetuneConfig()))


def test_make_config_and_unknown_names():
    assert make_config("lora", rank=3) == LoRAConfig(rank=3)
    with pytest.raises(ValueError, match=r"no field\(s\) \['rnak'\]; allowed: .*'rank'"):
        make_config("lora", rnak=3)
    with pytest.raises(ValueError, match="unknown method 'dora'; known: .*lora"):
        get_method("dora")


def test_copy_state_checked_names_keys_and_shapes():
    target = {"a": torch.zeros(2, 3)}
    with pytest.raises(ValueError, match=r"missing: \['a'\], unexpected: \['b'\]"):
        copy_state_checked(target, {"b": torch.zeros(2, 3)}, "test")
    with pytest.raises(ValueError, match=r"a has shape \(3, 2\) in the saved adapter but \(2, 3\)"):
        copy_state_checked(target, {"a": torch.zeros(3, 2)}, "test")
    copy_state_checked(target, {"a": torch.ones(2, 3, dtype=torch.float64)}, "test")
    assert target["a"].dtype == torch.float32 and target["a"].sum() == 6
