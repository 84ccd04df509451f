"""QLoRA: Efficient Finetuning of Quantized LLMs (Dettmers et al. 2023, arXiv 2305.14314).

The idea: LoRA already freezes the base, so the base need not be stored in 16 bits.  QLoRA
keeps it in **4-bit NormalFloat (NF4)**, a 4-bit code whose 16 levels are quantiles of a normal
distribution (pretrained weights are roughly normal), one absmax scale per block of 64 weights,
and **double quantization** (the fp32 scales themselves quantized to 8 bits, ~0.37 bit/param
saved).  Each forward dequantizes a block on the fly and computes in bf16/fp32; the LoRA
matrices on top stay in that higher precision and are the only thing that trains.  **Paged
optimizers** (AdamW states in CUDA unified memory) absorb memory spikes on GPU.

    x ──> dequant(W_nf4) x  ───────────────┐      W: 0.5 byte/param + scales, frozen
     └──> B A x * alpha/rank  (fp32/bf16) ─┴─> +

What we do, and how it differs from the reference (``qlora.py`` + HF PEFT):

* Two ways in: a model loaded with ``load_model(..., quantize="nf4")`` (transformers'
  BitsAndBytesConfig) keeps its 4-bit weights as loaded: nothing is quantized a second time, and
  its outputs at step 0 are unchanged (tested, in eval mode too). Its quantization must agree with
  the config's ``quant_type`` / ``double_quant`` (else a clear error: the config would describe a
  base the model does not have). A full-precision model has the linear layers of its decoder
  layers quantized **in place** to ``bnb.nn.Linear4bit`` with the config's settings (embeddings,
  norms and the output head stay as they are, like transformers' default), so
  ``apply(fp_model, QLoRAConfig())`` works. Given the same weights and settings, the two paths hold
  the same 4-bit codes and scales and give identical logits (tested).
* LoRA weights take the 4-bit layers' compute dtype (fp32 on CPU, bf16 on GPU), like the paper's
  code with ``--bf16`` (``adapter_dtype="fp32"`` keeps them in fp32, as HF PEFT does by default).
  We do **not** call peft's ``prepare_model_for_kbit_training``, which casts
  every non-quantized parameter (embeddings, norms, output head) to fp32: on a bf16 model that
  doubles their memory for no gain in the LoRA gradients (peft #1149, bitsandbytes #1569); see
  ``benchmarks/vs_peft.py --kbit-upcast`` for the measured cost.
* ``merge`` is explicit about 4 bits: it dequantizes each wrapped base into an ``nn.Linear`` in the
  compute dtype and adds ``B A`` there, so the merged model is a higher-precision model (its error
  vs the unmerged 4-bit model is tested).  ``unmerge`` subtracts and re-quantizes: NF4 values are
  fixed points of the quantizer, so the same 4-bit codes come back (tested); the double-quantized
  block scales are re-quantized around a new mean and move by < 1%.
* On CPUs with AVX512-BF16, bitsandbytes 0.50 repacks a ``Linear4bit`` into an inference-only
  layout on its first eval/no-grad forward, and later *training* forwards then run a kernel with
  no autograd: gradients stop flowing through the base layers and the LoRA weights below them get
  no gradient, silently (seen here: ``grad is None`` after one eval pass).  ``inject`` turns that
  repacking off (and undoes it where it already happened), so evaluation between training steps
  is safe; CPU inference of 4-bit layers is slower for it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from peftbook.models import ARCHITECTURES, bnb_4bit_available
from peftbook.methods import lora
from peftbook.methods.lora import LoRAConfig, adapter_state, load_adapter_state, num_trainable  # noqa: F401
from peftbook.surgery import applied_config, linears_used_directly, quantizable_linears, replace_module

QUANT_TYPES = ("nf4", "fp4")


@dataclass
class QLoRAConfig(LoRAConfig):
    method: ClassVar[str] = "qlora"
    quant_type: str = "nf4"  # NF4 (the paper's choice: normal quantiles) or plain 4-bit float
    double_quant: bool = True  # quantize the per-block scales too (~0.37 bit/param saved)

    def validate(self) -> None:
        super().validate()
        if self.quant_type not in QUANT_TYPES:
            raise ValueError(f"quant_type={self.quant_type!r} is not allowed; allowed: {', '.join(QUANT_TYPES)}")
        if not isinstance(self.double_quant, bool):
            raise ValueError(f"double_quant={self.double_quant!r} is not allowed; use True or False")
        if not bnb_4bit_available():
            raise RuntimeError("QLoRA needs bitsandbytes with a working 4-bit backend (CPU or CUDA), and none "
                               "was found on this machine; use LoRAConfig on a full-precision model instead")


def is_4bit(layer: nn.Module) -> bool:
    import bitsandbytes as bnb

    return isinstance(layer, bnb.nn.Linear4bit)


def quantize_linear(layer: nn.Module, quant_type: str = "nf4", double_quant: bool = True) -> nn.Module:
    """A frozen ``bnb.nn.Linear4bit`` holding ``layer``'s weight (nn.Linear or gpt2 Conv1D).

    Under the memory simulator's ``FakeTensorMode`` the weight has no data: ``quantize_fake`` makes
    the same layer there, so a simulated QLoRA step holds exactly the storage a real one does.
    """
    import bitsandbytes as bnb
    from torch._subclasses.fake_tensor import is_fake, unset_fake_temporarily

    weight = layer.weight.detach()
    weight = weight.T if isinstance(layer, Conv1D) else weight  # (out, in), as Linear4bit expects
    out_features, in_features = weight.shape
    with unset_fake_temporarily():  # a module shell on the meta device, no data
        quantized = bnb.nn.Linear4bit(in_features, out_features, bias=layer.bias is not None, device="meta",
                                      compute_dtype=weight.dtype, compress_statistics=double_quant,
                                      quant_type=quant_type)
    bias = None if layer.bias is None else nn.Parameter(layer.bias.detach().clone(), requires_grad=False)
    if is_fake(weight):
        quantize_fake(quantized, weight.contiguous(), quant_type, double_quant)
        quantized._parameters["bias"] = bias
        return quantized.requires_grad_(False)
    quantized.weight = bnb.nn.Params4bit(weight.contiguous(), requires_grad=False, quant_type=quant_type,
                                         compress_statistics=double_quant, module=quantized)
    if bias is not None:
        quantized.bias = bias
    quantized = quantized.to(weight.device)  # moving a Params4bit to a device is what quantizes it
    keep_trainable_layout(quantized)
    return quantized


def quantize_fake(layer: nn.Module, weight: torch.Tensor, quant_type: str, double_quant: bool) -> None:
    """Give the shell ``layer`` the 4-bit weight of a fake (out, in) ``weight``.

    ``Params4bit`` cannot wrap a fake tensor, so the packed weight is a plain fake tensor carrying the
    ``quant_state`` that bitsandbytes' own ``quantize_4bit`` made for it (its ops have fake kernels).
    """
    import bitsandbytes.functional as bnbf
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    # bitsandbytes builds its quantization maps with .tolist(), which fake tensors cannot do: warm its cache
    with unset_fake_temporarily():
        bnbf.quantize_4bit(torch.zeros(64, 64), quant_type=quant_type, compress_statistics=double_quant)
    packed, state = bnbf.quantize_4bit(weight, quant_type=quant_type, compress_statistics=double_quant)
    for key, value in dict(quant_state=state, bnb_quantized=True, quant_type=quant_type, blocksize=64,
                           compress_statistics=double_quant, quant_storage=torch.uint8, _is_param=True,
                           module=layer).items():
        setattr(packed, key, value)
    layer._parameters["weight"] = packed


def keep_trainable_layout(layer: nn.Module) -> None:
    """Stop bnb's CPU inference repacking of ``layer`` (it breaks backward; see module docstring).

    Where the repacking already happened (a 4-bit model that ran in eval mode before ``apply`` without
    ``peftbook.models.keep_4bit_layout``), undoing it keeps the bf16-rounded scales it made: the
    layer's codes are kept, its scales cannot be restored.
    """
    import bitsandbytes.functional as F

    layer.support_avx512bf16_for_cpu = False
    if getattr(layer.weight.quant_state, "packing_format_for_cpu", False):
        layer.weight.data, layer.weight.quant_state = F._convert_weight_packed_for_cpu_inverse(
            layer.weight.data, layer.weight.quant_state)


def quantization_settings(layer: nn.Module) -> tuple[str, bool]:
    """(quant_type, double_quant) a 4-bit layer was quantized with (also after bnb's CPU repacking)."""
    state = layer.weight.quant_state
    return state.quant_type, bool(getattr(state, "original_nested", state.nested))


def check_settings(name: str, layer: nn.Module, config: QLoRAConfig) -> None:
    """Raise when an already 4-bit ``layer`` was quantized otherwise than ``config`` says."""
    found, wanted = quantization_settings(layer), (config.quant_type, config.double_quant)
    if found != wanted:
        raise ValueError(f"{name} is already 4-bit with quant_type={found[0]!r}, double_quant={found[1]}, but the "
                         f"config asks for quant_type={wanted[0]!r}, double_quant={wanted[1]}; QLoRA keeps a "
                         "4-bit base as loaded, so give a config that matches it (or load the model in full "
                         "precision and let apply() quantize it)")


def dequantize_linear(layer: nn.Module) -> nn.Linear:
    """An ``nn.Linear`` in the layer's compute dtype holding dequant(W_4bit)."""
    import bitsandbytes.functional as F

    keep_trainable_layout(layer)
    data, state = layer.weight.data, layer.weight.quant_state
    dtype = layer.compute_dtype or torch.float32
    weight = F.dequantize_4bit(data, state).to(dtype)  # (out, in)
    linear = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None,
                       device="meta", dtype=dtype)
    linear.weight = nn.Parameter(weight, requires_grad=False)
    if layer.bias is not None:
        linear.bias = nn.Parameter(layer.bias.detach().to(dtype), requires_grad=False)
    return linear


def inject(model: nn.Module, config: QLoRAConfig) -> None:
    targets = lora.resolve_targets(model, config)  # a target that matches nothing raises before any layer is quantized
    if getattr(model.config, "rescale_every", 0):  # rwkv divides its weights in place when it switches modes
        raise ValueError(f"QLoRA cannot be applied to {model.config.model_type}: it rescales its layers' weights in "
                         f"place (rescale_every={model.config.rescale_every}), which 4-bit weights cannot take")
    if model.config.model_type not in ARCHITECTURES:  # the table's families are known to call every linear
        unused = linears_used_directly(model, quantizable_linears(model))
        if unused:
            raise ValueError(f"QLoRA cannot be applied to {model.config.model_type}: it uses the weights of "
                             f"{', '.join(sorted({n.rsplit('.', 1)[-1] for n in unused}))} directly, not through "
                             "the linear layer, so a 4-bit layer cannot stand in for them")
    for name in quantizable_linears(model):
        module = model.get_submodule(name)
        if is_4bit(module):  # already 4-bit (load_model(..., quantize="nf4")): keep its weights as they are
            check_settings(name, module, config)
            keep_trainable_layout(module)
        else:
            replace_module(model, name, quantize_linear(module, config.quant_type, config.double_quant))
    for name in targets:
        base = model.get_submodule(name)
        # LoRA in the 4-bit layer's compute dtype, or fp32 (adapter_dtype="fp32")
        dtype = lora.adapter_torch_dtype(config.adapter_dtype, getattr(base, "compute_dtype", None) or torch.float32)
        replace_module(model, name, lora.LoRALinear(base, config.rank, config.alpha, config.dropout,
                                                    config.use_rslora, dtype))


def peft_adapter_config(model: nn.Module, config: QLoRAConfig) -> dict:
    return lora.peft_adapter_config(model, config)  # the adapter is plain LoRA; the base's 4 bits are not in it


def merge(model: nn.Module) -> nn.Module:
    """Dequantize every wrapped 4-bit base, then fold ``scaling * B A`` into it (see module docstring)."""
    for module in lora.lora_modules(model).values():
        if is_4bit(module.base):
            module.base = dequantize_linear(module.base)
        module.merge()
    return model


def unmerge(model: nn.Module) -> nn.Module:
    """Subtract ``scaling * B A`` again and re-quantize the base to 4 bits."""
    config = applied_config(model)
    for module in lora.lora_modules(model).values():
        if module.merged:
            module.unmerge()
            module.base = quantize_linear(module.base, config.quant_type, config.double_quant)
    return model


def qlora_optimizer(params, lr: float) -> torch.optim.Optimizer:
    """Paged 8-bit AdamW on CUDA (the paper's choice); plain ``torch.optim.AdamW`` elsewhere."""
    params = [p for p in params if p.requires_grad]
    if params and params[0].device.type == "cuda":
        import bitsandbytes as bnb

        return bnb.optim.PagedAdamW8bit(params, lr=lr)
    return torch.optim.AdamW(params, lr=lr)


def stored_bytes_per_weight(model: nn.Module) -> float:
    """Bytes the 4-bit layers of ``model`` hold per weight, measured: packed codes, block scales and
    (double quantization) the scales' own scales and offset, over the weights they stand for. A tensor
    that layers share (the 16-value code book) counts once."""
    storages, weights = {}, 0
    for layer in model.modules():
        if not is_4bit(layer):
            continue
        state = layer.weight.quant_state
        tensors = [layer.weight.data, state.absmax, state.code]
        if state.nested:
            tensors += [state.state2.absmax, state.state2.code, state.offset]
        storages.update({t.data_ptr(): t.numel() * t.element_size() for t in tensors})
        weights += layer.in_features * layer.out_features
    if not weights:
        raise ValueError("the model has no 4-bit layer: apply QLoRAConfig first")
    return sum(storages.values()) / weights
