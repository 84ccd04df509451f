"""bf16 on the CPU: the automatic choice (detection mocked both ways), and training in bf16 agreeing with fp32."""
from __future__ import annotations

import copy

import pytest
import torch

from conftest import make_tiny_model, save_tiny_model
from test_train import cfg, word_task

from peftbook import precision
from peftbook.methods import TRAINABLE_METHODS

pytestmark = pytest.mark.unit
CPU = torch.device("cpu")


@pytest.fixture
def detection(monkeypatch):
    """Set what the machine looks like: ``detection(machine, flags, probe=None)``; the cache is cleared."""
    def set_machine(machine: str, flags: set[str] | None, probe: float | None = None, apple: bool | None = None):
        monkeypatch.setattr(precision.platform, "machine", lambda: machine)
        monkeypatch.setattr(precision, "cpu_flags", lambda: flags)
        monkeypatch.setattr(precision, "macos_has_bf16", lambda: apple)
        monkeypatch.setattr(precision.sys, "platform", "darwin" if apple is not None else "linux")

        def probe_speedup():
            if probe is None:
                raise AssertionError("the probe ran although the flags were readable")
            return probe
        monkeypatch.setattr(precision, "probe_speedup", probe_speedup)
        precision.native_bf16.cache_clear()
        monkeypatch.setattr(precision, "_said", set())  # each case says its choice anew
    yield set_machine
    precision.native_bf16.cache_clear()


@pytest.mark.parametrize("machine, flags, probe, apple, native", [
    ("x86_64", {"avx2", "avx512f", "avx512_bf16"}, None, None, True),
    ("x86_64", {"avx2", "amx_bf16", "amx_tile"}, None, None, True),
    ("x86_64", {"avx2", "avx512f"}, None, None, False),
    ("aarch64", {"fp", "asimd", "bf16"}, None, None, True),
    ("aarch64", {"fp", "asimd"}, None, None, False),
    ("arm64", None, None, True, True),   # Apple M2+: sysctl says FEAT_BF16
    ("arm64", None, None, False, False),  # Apple M1
    ("x86_64", None, 2.1, None, True),   # flags unreadable: the probe decides
    ("x86_64", None, 0.6, None, False),
])
def test_auto_takes_bf16_exactly_where_the_cpu_has_it(detection, capsys, machine, flags, probe, apple, native):
    detection(machine, flags, probe, apple)
    assert precision.native_bf16()[0] is native
    chosen = precision.resolve_dtype("auto", CPU)
    assert chosen == (torch.bfloat16 if native else torch.float32)
    said = capsys.readouterr().err
    assert f"computing in {'bf16' if native else 'fp32'} on the CPU" in said and "forces either" in said
    # forced choices are obeyed either way
    assert precision.resolve_dtype("fp32", CPU) == torch.float32
    assert precision.resolve_dtype("bf16", CPU) == torch.bfloat16
    note = capsys.readouterr().err
    assert ("without native bf16" in note) is (not native)
    assert precision.resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16  # no CUDA needed to resolve


def test_the_choice_is_said_once_and_recorded(detection, capsys):
    detection("x86_64", {"avx512_bf16"})
    for _ in range(3):
        precision.resolve_dtype("auto", CPU)
    assert capsys.readouterr().err.count("computing in bf16") == 1
    model = make_tiny_model().to(torch.bfloat16)
    record = precision.precision_record(model)
    assert record == {"dtype": "bf16", "device": "cpu", "native_bf16": True,
                      "reason": "the processor has native bf16 (avx512_bf16; torch kernels: "
                                f"{torch.backends.cpu.get_cpu_capability()})"}


def test_bad_dtype_names_what_is_allowed():
    with pytest.raises(ValueError, match=r"dtype 'bf8' is not allowed; allowed: auto, fp32"):
        precision.resolve_dtype("bf8", CPU)


def test_load_model_auto_follows_the_detection(detection, tmp_path):
    from peftbook import load_model

    save_tiny_model(tmp_path / "model")
    for flags, expected in (({"avx512_bf16"}, torch.bfloat16), ({"avx2"}, torch.float32)):
        detection("x86_64", flags)
        model, _ = load_model(str(tmp_path / "model"))
        assert model.dtype == expected
        assert load_model(str(tmp_path / "model"), dtype="fp32")[0].dtype == torch.float32


def test_the_probe_compares_real_matrix_products():
    assert precision.probe_speedup(size=64, repeats=2) > 0


# ---------------------------------------------------------------- training in bf16 on the CPU

def loss_and_grads(model, ids, labels, cpu_bf16: bool):
    """One step's loss and the trainable parameters' gradients, as ``train`` computes them."""
    from peftbook.lm_loss import causal_lm_loss

    trainable = [p for p in model.parameters() if p.requires_grad]
    with precision.fp32_master_weights(trainable) if cpu_bf16 else torch.enable_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16) if cpu_bf16 else torch.enable_grad():
            loss = causal_lm_loss(model, ids, labels)
        loss.backward()
        assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in trainable)
        grads = [p.grad.detach().clone() for p in trainable]
        for p in trainable:
            p.grad = None  # as train's zero_grad: no fp32 gradient outlives the fp32 masters
    return loss.item(), torch.cat([g.flatten() for g in grads])


@pytest.mark.parametrize("method", TRAINABLE_METHODS)
def test_bf16_loss_and_gradients_agree_with_fp32(method):
    """The same weights in fp32 and in train's CPU bf16 step: loss within 2%, gradients within bf16 noise."""
    from peftbook import apply, make_config

    fp32 = make_tiny_model("llama", seed=3)
    fields = {"dropout": 0.0} if method in ("lora", "qlora") else {}
    if method == "qlora":  # the same 4-bit codes, computed in bf16: quantizing bf16-rounded weights instead
        torch.manual_seed(0)  # moves values that sit at a bin's edge (gradient cosine 0.977 on this model)
        apply(fp32, make_config(method, **fields))
        bf16 = copy.deepcopy(fp32)
        for module in bf16.modules():
            if hasattr(module, "compute_dtype"):
                module.compute_dtype = torch.bfloat16
        for parameter in bf16.parameters():
            if parameter.is_floating_point():
                parameter.data = parameter.data.to(torch.bfloat16)
    else:
        bf16 = copy.deepcopy(fp32).to(torch.bfloat16)
        for model in (fp32, bf16):
            torch.manual_seed(0)
            apply(model, make_config(method, **fields))
    fp32.train()
    bf16.train()
    if method in ("lora", "qlora", "llama_adapter"):  # zero-init parts: move them so gradients reach everything
        torch.manual_seed(1)
        for (name, a), (_, b) in zip(fp32.named_parameters(), bf16.named_parameters()):
            if a.requires_grad:
                noise = 0.02 * torch.randn_like(a)
                a.data += noise
                b.data += noise.to(b.dtype)
    ids = torch.randint(3, 128, (4, 16), generator=torch.Generator().manual_seed(2))
    labels = ids.clone()
    labels[:, :8] = -100
    loss32, grad32 = loss_and_grads(fp32, ids, labels, cpu_bf16=False)
    loss16, grad16 = loss_and_grads(bf16, ids, labels, cpu_bf16=True)
    assert loss16 == pytest.approx(loss32, rel=2e-2)
    cosine = torch.nn.functional.cosine_similarity(grad32, grad16, dim=0).item()
    assert cosine > 0.99, f"{method}: gradient direction off in bf16 (cosine {cosine:.4f})"
    assert (grad16.norm() / grad32.norm()).item() == pytest.approx(1, abs=0.05)
    # the base stays bf16 and the trainable parameters come back in the dtype they had
    assert all(p.dtype == torch.bfloat16 for p in bf16.parameters() if p.is_floating_point() and not p.requires_grad)


@pytest.mark.integration
@pytest.mark.parametrize("method", ["lora", "full"])
def test_train_keeps_fp32_masters_and_returns_the_model_in_its_dtypes(tmp_path, method):
    from peftbook import apply, load_model, make_config
    from peftbook.train import train

    save_tiny_model(tmp_path / "model")
    task = word_task(tmp_path / "task")
    model, tokenizer = load_model(str(tmp_path / "model"), dtype="bf16")
    torch.manual_seed(0)
    apply(model, make_config(method))
    before = {n: (p.dtype, p.detach().clone()) for n, p in model.named_parameters()}
    seen = []

    def check(step, result):  # while training: every trainable parameter and its AdamW state in fp32
        seen.append({p.dtype for p in model.parameters() if p.requires_grad})

    result = train(model, tokenizer, task, cfg(steps=3, lr=1e-2), callbacks=[check])
    assert seen == [{torch.float32}] * 3
    assert result.precision["dtype"] == "bf16" and result.precision["device"] == "cpu"
    after = dict(model.named_parameters())
    assert {n: p.dtype for n, p in after.items()} == {n: d for n, (d, _) in before.items()}
    moved = [n for n, p in after.items() if p.requires_grad and not torch.equal(p, before[n][1])]
    assert moved, "training changed no trainable parameter"


@pytest.mark.integration
def test_train_dtype_forces_or_refuses(tmp_path):
    from peftbook import apply, load_model, make_config
    from peftbook.errors import ConfigError
    from peftbook.train import train

    save_tiny_model(tmp_path / "model")
    task = word_task(tmp_path / "task")
    model, tokenizer = load_model(str(tmp_path / "model"), dtype="fp32")
    apply(model, make_config("full"))
    result = train(model, tokenizer, task, cfg(steps=2, dtype="bf16"))  # autocast over fp32 weights
    assert result.precision["dtype"] == "bf16" and model.dtype == torch.float32
    bf16, _ = load_model(str(tmp_path / "model"), dtype="bf16")
    apply(bf16, make_config("lora"))
    with pytest.raises(ConfigError, match="dtype='fp32' needs a model loaded in fp32"):
        train(bf16, tokenizer, task, cfg(steps=1, dtype="fp32"))
    with pytest.raises(ConfigError, match="dtype 'half' is not allowed"):
        cfg(dtype="half").validate()
