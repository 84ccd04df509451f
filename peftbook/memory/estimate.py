"""The closed form: bytes per parameter, plus the activations a training step keeps for backward.

    peak ~ weights + optimizer state + max(activations saved by the forward,
                                           gradients + optimizer temporaries)

* weights: every parameter in the training dtype; QLoRA's quantized linears at 4 bits plus one
  8-bit scale per 64 weights and one fp32 scale per 256 scales (double quantization);
* gradients: one per trainable parameter, in its dtype;
* optimizer: AdamW keeps two states per trainable parameter (same dtype as the parameter); on
  CUDA PyTorch's ``foreach`` AdamW also makes one parameter-sized temporary (``sqrt(v)``);
* activations: what autograd saves for the backward pass, counted per decoder layer and token
  after Korthikanti et al. 2022 (arXiv 2205.05198), whose GPT formula is ``s b h (34 + 5 a s / h)``
  bytes per layer with 16-bit activations and dropout. Llama-style layers (RMSNorm, SwiGLU, no
  dropout, RoPE) keep a different set, counted here term by term; the inputs of a frozen linear layer
  need not be kept (its weight gets no gradient), which is why PEFT methods keep fewer activations.
  The output head adds the fp32 log-softmax of the logits and its gradient (``b s V``), which for
  a 128k vocabulary is a large share of a short sequence's activations.

The article's rule of thumb, 16 GB per 1B parameters in half precision, is mixed-precision AdamW:
fp32 master weights (4 B) + fp32 gradients (4 B) + two fp32 Adam states (8 B) = 16 B/param, with no
activations at all. ``rule_of_thumb_bytes`` gives it for comparison.
"""
from __future__ import annotations

import torch

from peftbook.memory.measure import CATEGORIES
from peftbook.memory.options import StepOptions, resolve_optimizer
from peftbook.memory.simulate import autocast_dtype, method_name, prepare_step, resolve_config
from peftbook.methods import full, get_method
from peftbook.models import get_architecture, model_dims
from peftbook.surgery import linear_shapes, matches_suffix

RULE_OF_THUMB_BYTES_PER_PARAM = 16  # "16 GB of GPU memory per 1B model parameters" (half precision + AdamW)
NF4_BYTES_PER_PARAM = 0.5 + 1 / 64 + 4 / (64 * 256)  # packed codes + 8-bit absmax per 64 + fp32 per 256 absmax


# optimizer state per trainable parameter of ``p`` bytes, by implementation (options.IMPLEMENTATIONS);
# bitsandbytes' 8-bit AdamW: two uint8 moments + an fp32 scale per 256 values of each (its blocksize)
OPTIMIZER_STATE_BYTES = {
    "adamw single-tensor": lambda p: 2 * p, "adamw foreach": lambda p: 2 * p, "adamw fused": lambda p: 2 * p,
    "adamw_8bit": lambda p: 2 + 2 * 4 / 256, "paged_adamw_8bit": lambda p: 2 + 2 * 4 / 256,
    "sgd single-tensor": lambda p: 0, "sgd foreach": lambda p: 0,
}


def rule_of_thumb_bytes(num_params: int) -> int:
    return int(num_params * RULE_OF_THUMB_BYTES_PER_PARAM)


def parameter_counts(config, method_config) -> dict:
    """Total, trainable and 4-bit-quantized parameter counts, in closed form (the method files' own)."""
    total = full.num_parameters(config)
    method = get_method(method_name(method_config))
    if method_config is None:  # full fine-tuning with every parameter
        trainable = total
    else:
        trainable = method.module.num_trainable(config, method_config)
    quantized = 0
    if method.memory.quantized_base:
        quantized = model_dims(config)["num_layers"] * sum(i * o for i, o in linear_shapes(config).values())
    added = 0 if method.memory.trains_base_weights else trainable
    return {"total": total, "trainable": trainable, "added": added, "quantized": quantized}


def activation_bytes(config, method_config, batch_size: int, seq_len: int, dtype: torch.dtype,
                     options: StepOptions | None = None) -> int:
    """Bytes autograd keeps from the forward for the backward, plus the loss's fp32 logits and grad.

    Under gradient checkpointing each decoder layer keeps only its input (``tokens * hidden``), and
    backward recomputes one layer at a time: ``layers * input + one layer's activations``.
    """
    options = options or StepOptions()
    dims = model_dims(config)
    h, layers, heads = dims["hidden_size"], dims["num_layers"], dims["num_heads"]
    q, kv = heads * dims["head_dim"], dims["num_kv_heads"] * dims["head_dim"]
    p = torch.finfo(dtype).bits // 8
    tokens = batch_size * seq_len
    traits = get_method(method_name(method_config)).memory

    def field(name):  # a config field the traits point at (0 when the method has none)
        return getattr(method_config, name) if name else 0

    tokens = batch_size * (seq_len + field(traits.input_tokens_field))  # soft prompts lengthen every input
    eager = getattr(config, "_attn_implementation", None) == "eager"
    linear_inputs = {"none": 0, "targets": 0, "all": None}[traits.linear_inputs]  # None: every linear layer's
    if traits.linear_inputs == "targets":
        linear_inputs = targeted_linear_inputs(config, method_config)
    if config.model_type == "gpt2":
        # Korthikanti et al. eq. 1, term by term: per layer s b h (34 + 5 a s / h) bytes with 16-bit
        # activations and 1-byte dropout masks; HF's tanh-GELU keeps 4 tensors where they count 1
        inner = config.n_inner or 4 * h
        if linear_inputs is None:  # full: inputs of c_attn, attn.c_proj, c_fc, mlp.c_proj
            linear_inputs = 3 * h + inner
        per_token = (2 * h + 3 * h + h + inner) * p + linear_inputs * p  # 2 LNs, q/k/v, attn out, GELU in
        if config.activation_function == "gelu_new":
            per_token += 3 * inner * p
        per_token += 2 * h * (config.resid_pdrop > 0)  # dropout masks after attention and MLP
        if eager or config.attn_pdrop > 0:  # the attention matrix is kept: softmax, mask, dropped out
            per_token += heads * seq_len * (2 * p + 1)
        per_layer = tokens * per_token
    else:
        inter = config.intermediate_size
        kv_kept = 2 * kv
        if traits.kv_tokens_field:  # prefixes pass a mask, so transformers repeats k and v to all heads
            kv_kept = 2 * q * (seq_len + field(traits.kv_tokens_field)) / seq_len
        per_token = 2 * 4 * h  # the attention and MLP RMSNorms keep their input upcast to fp32
        per_token += (q + kv_kept) * p  # rotated q, k and v, kept by attention
        per_token += q * p  # attention output, kept by the attention backward
        per_token += 3 * inter * p  # gate (for SiLU), SiLU(gate) and up (for their product)
        if linear_inputs is None:  # full: inputs of q/k/v, o, gate/up, down; normalized x for the norms' weights
            linear_inputs = 3 * h + q + inter
        per_token += linear_inputs * p
        if config.model_type == "gemma2":  # two more norms; soft-capped scores need the eager kernel
            per_token += 2 * 4 * h + 2 * heads * seq_len * p  # tanh(scores) and softmax, both kept
        elif eager:
            per_token += heads * seq_len * p  # the softmax matrix (SDPA/flash keep none)
        per_layer = tokens * per_token
    if traits.top_layers_field:  # gradients flow through the top layers only: the rest keep nothing
        layers = field(traits.top_layers_field)
    head_tokens = tokens if options.loss_chunk_tokens is None else min(tokens, options.loss_chunk_tokens)
    head = head_tokens * dims["vocab_size"] * (4 + 4 + p)  # fp32 log-softmax, its gradient, the logits' gradient
    if getattr(config, "final_logit_softcapping", None):
        head += tokens * dims["vocab_size"] * p  # tanh(logits / cap), kept
    if options.grad_checkpointing:  # each layer keeps its input; backward rebuilds one layer at a time
        return int(layers * tokens * dims["hidden_size"] * p + per_layer + head)
    return int(layers * per_layer + head)


def targeted_linear_inputs(config, method_config) -> int:
    """Features per token of the inputs that LoRA's targeted layers keep for backward (shared inputs once)."""
    targets = method_config.targets or get_architecture(config).lora_targets
    shapes = linear_shapes(config)
    chosen = [name for name in shapes if targets == "all-linear" or any(matches_suffix(name, t) for t in targets)]
    inputs = {}  # layers that share an input (q, k, v; gate, up) keep it once
    for name in chosen:
        leaf = name.split(".")[-1]
        key = ("attn_in" if leaf in ("q_proj", "k_proj", "v_proj", "qkv_proj", "c_attn") else
               "mlp_in" if leaf in ("gate_proj", "up_proj", "gate_up_proj", "c_fc") else name)
        inputs[key] = shapes[name][0]
    return sum(inputs.values())


def estimate_memory(model_or_config, method_config=None, batch_size: int = 1, seq_len: int = 512,
                    dtype="bf16", optimizer: str | None = None, *, device: str | None = None,
                    options: StepOptions | dict | None = None) -> dict:
    """Closed-form peak of one steady-state training step: ``peak_bytes``, ``by_category``, counts.

    Arguments as ``simulate_memory``'s (``options``: ``StepOptions``; default device ``"cuda"``).
    """
    torch_dtype, method_config, options = prepare_step(batch_size, seq_len, dtype, method_config, options,
                                                       optimizer, device, "cuda")
    config = resolve_config(model_or_config)
    p = torch.finfo(torch_dtype).bits // 8
    method = method_name(method_config)
    p_train = 4 if options.adapter_dtype == "fp32" and method != "full" else p  # trainable parameters' bytes
    compute_dtype = autocast_dtype(dtype) or torch_dtype
    counts = parameter_counts(config, method_config)
    weights = (counts["total"] - counts["quantized"] - counts["added"]) * p + counts["added"] * p_train
    weights += counts["quantized"] * NF4_BYTES_PER_PARAM
    gradients = counts["trainable"] * p_train
    implementation = resolve_optimizer(options.optimizer, method, options.device)
    optimizer_state = counts["trainable"] * OPTIMIZER_STATE_BYTES[implementation](p_train)
    # foreach AdamW's sqrt(v) over the whole parameter list; the single-tensor loop's temporaries are
    # one parameter at a time, fused and bitsandbytes' kernels update in place
    temporaries = counts["trainable"] * p_train if implementation == "adamw foreach" else 0
    activations = activation_bytes(config, method_config, batch_size, seq_len, compute_dtype, options)
    if compute_dtype != torch_dtype:  # autocast keeps a bf16 copy of every linear weight for the backward
        linear = model_dims(config)["num_layers"] * sum(i * o for i, o in linear_shapes(config).values())
        activations += (linear - counts["quantized"]) * (torch.finfo(compute_dtype).bits // 8)
    by_category = dict.fromkeys(CATEGORIES, 0)
    by_category.update(weights=int(weights), optimizer=int(optimizer_state))
    if activations >= gradients + temporaries:  # the peak is at the start of backward
        by_category["activations"] = activations
    else:  # the peak is in the optimizer step
        by_category.update(gradients=gradients, activations=temporaries)
    return {"peak_bytes": int(sum(by_category.values())), "by_category": by_category,
            "num_params": counts["total"], "trainable_params": counts["trainable"],
            "rule_of_thumb_bytes": rule_of_thumb_bytes(counts["total"])}
