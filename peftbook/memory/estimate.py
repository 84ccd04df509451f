"""The closed form: bytes per parameter, plus the activations a training step keeps for backward.

    peak ~ weights + optimizer state + max(activations saved by the forward,
                                           gradients + optimizer temporaries)

* weights: every parameter in the training dtype (an fp32 adapter: 4 B); QLoRA's quantized linears
  at 4 bits plus one 8-bit scale per 64 weights and one fp32 scale per 256 scales (double
  quantization), or one fp32 scale per 64 weights (``double_quant=False``);
* gradients: one per trainable parameter, in its dtype;
* optimizer (``StepOptions.optimizer``, as the device runs it): AdamW keeps two states per trainable
  parameter (same dtype as the parameter), 8-bit AdamW two bytes and an fp32 scale per 256 values,
  SGD none; ``foreach`` AdamW (CUDA's default) also makes one parameter-sized temporary
  (``sqrt(v)``); full fine-tuning of a model with tied embeddings adds, at the end of backward, the
  embedding's new gradient and its sum with the head's (two embedding-sized tensors);
* activations: what autograd saves for the backward pass, counted per decoder layer and token
  after Korthikanti et al. 2022 (arXiv 2205.05198), whose GPT formula is ``s b h (34 + 5 a s / h)``
  bytes per layer with 16-bit activations and dropout. Llama-style layers (RMSNorm, SwiGLU, no
  dropout, RoPE) keep a different set, counted here term by term; the inputs of a frozen linear layer
  need not be kept (its weight gets no gradient), which is why PEFT methods keep fewer activations.
  LoRA's adapted layers keep their input (shared by q/k/v), or with dropout a dropped copy and the
  mask each (``lora_saved_bytes``); LLaMA-Adapter's attention over its prompt keeps its own queries
  and three ``heads x prompt`` tensors per token (``adapter_attention_bytes``). Under gradient
  checkpointing a layer keeps only its input, and backward rebuilds one layer at a time.
  The output head adds the fp32 log-softmax of the logits and two fp32 gradients (``12 b s V``), which for
  a 128k vocabulary is a large share of a short sequence's activations.

The article's rule of thumb, 16 GB per 1B parameters in half precision, is mixed-precision AdamW:
fp32 master weights (4 B) + fp32 gradients (4 B) + two fp32 Adam states (8 B) = 16 B/param, with no
activations at all. ``rule_of_thumb_bytes`` gives it for comparison.
"""
from __future__ import annotations

import torch

from peftbook.memory.measure import CATEGORIES
from peftbook.memory.options import StepOptions, resolve_optimizer
from peftbook.memory.simulate import autocast_dtype, cpu_mixed_precision, method_name, prepare_step, resolve_config
from peftbook.methods import full, get_method
from peftbook.models import get_architecture, model_dims
from peftbook.surgery import linear_shapes, matches_suffix

RULE_OF_THUMB_BYTES_PER_PARAM = 16  # "16 GB of GPU memory per 1B model parameters" (half precision + AdamW)
NF4_BYTES_PER_PARAM = 0.5 + 1 / 64 + 4 / (64 * 256)  # packed codes + 8-bit absmax per 64 + fp32 per 256 absmax
NF4_BYTES_PER_PARAM_NO_DOUBLE_QUANT = 0.5 + 4 / 64  # packed codes + an fp32 absmax per block of 64


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
    backward recomputes one layer at a time once the head's backward is done:
    ``layers * input + max(one layer's activations, the head's)``.
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
    adapted = 0  # bytes per token that LoRA's adapted layers keep
    if traits.linear_inputs == "targets":
        adapter_bytes = 4 if options.adapter_dtype == "fp32" else p
        masters = cpu_mixed_precision(options, dtype)  # train's CPU step on a 16-bit base: fp32 adapters, autocast
        adapted = lora_saved_bytes(config, method_config, p, adapter_bytes, options.device or "cuda", masters)
    if config.model_type == "gpt2":
        # Korthikanti et al. eq. 1, term by term: per layer s b h (34 + 5 a s / h) bytes with 16-bit
        # activations and 1-byte dropout masks; HF's tanh-GELU keeps 4 tensors where they count 1
        inner = config.n_inner or 4 * h
        if linear_inputs is None:  # full: inputs of c_attn, attn.c_proj, c_fc, mlp.c_proj
            linear_inputs = 3 * h + inner
        per_token = (2 * h + 3 * h + h + inner) * p + linear_inputs * p + adapted  # 2 LNs, q/k/v, attn out, GELU in
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
        per_token += linear_inputs * p + adapted
        if config.model_type == "gemma2":  # two more norms; soft-capped scores need the eager kernel
            per_token += 2 * 4 * h + 2 * heads * seq_len * p  # tanh(scores) and softmax, both kept
        elif eager:
            per_token += heads * seq_len * p  # the softmax matrix (SDPA/flash keep none)
        per_layer = tokens * per_token
    if method_name(method_config) == "llama_adapter":  # its own attention over the adaption prompt
        per_layer += tokens * adapter_attention_bytes(config, method_config.adapter_len, p)
    if traits.top_layers_field:  # gradients flow through the top layers only: the rest keep nothing
        top = field(traits.top_layers_field)  # a count, or a fraction of the depth (LlamaAdapterConfig)
        layers = top if isinstance(top, int) else max(1, round(top * layers))
    head_tokens = tokens if options.loss_chunk_tokens is None else min(tokens, options.loss_chunk_tokens)
    # the head's backward, first in backward: the fp32 log-softmax kept, the gradient of its output
    # and of its input, all three fp32 and alive together (the logits' own-dtype gradient comes after)
    head = head_tokens * dims["vocab_size"] * (4 + 4 + 4)
    if getattr(config, "final_logit_softcapping", None):
        head += tokens * dims["vocab_size"] * p  # tanh(logits / cap), kept
    if options.grad_checkpointing:  # each layer keeps its input; backward rebuilds one layer at a time,
        # after the head's backward has freed its tensors: the larger of the two sets the peak
        return int(layers * tokens * dims["hidden_size"] * p + max(per_layer, head))
    return int(layers * per_layer + head)


def adapter_attention_bytes(config, prompt_len: int, p: int) -> int:
    """Bytes per token that LLaMA-Adapter's attention over its prompt keeps, per adapted layer.

    Its own rotated queries (kept by ``q @ K_P^T``), the fp32 softmax over the prompt (kept by the
    softmax), its cast to the compute dtype (kept by the gate's product; the same tensor in fp32)
    and the gated weights (kept by ``@ V_P``): ``q p + heads P (4 + p + p)``.
    """
    dims = model_dims(config)
    cast = p if p != 4 else 0
    return dims["num_heads"] * dims["head_dim"] * p + dims["num_heads"] * prompt_len * (4 + cast + p)


def lora_saved_bytes(config, method_config, p: int, adapter_bytes: int, device: str, autocast: bool = False) -> int:
    """Bytes per token that LoRA's adapted layers keep for backward.

    ``B(A(dropout(x)))``: A keeps its input, B keeps A's output (``rank`` values). Without dropout A's
    input is the layer's own input, which layers that share it (q, k, v; gate, up) keep once. With
    dropout each layer keeps its own dropped copy (``p`` bytes) and dropout's mask: 1 byte on CUDA
    (``native_dropout``'s bool mask), the input's dtype on CPU (``_dropout_impl`` multiplies by a
    mask of the input's dtype). An fp32 adapter on a 16-bit base keeps each layer's fp32 copy of its
    input (the cast; the dropped 16-bit copy is then not kept). Under autocast (``train``'s CPU step on a
    16-bit base: fp32 adapter weights) that fp32 copy is cast back to 16 bits for the product, and the
    16-bit copy is what each layer keeps, as its A's output.
    """
    targets = method_config.targets or get_architecture(config).lora_targets
    shapes = linear_shapes(config)
    chosen = [name for name in shapes if targets == "all-linear" or any(matches_suffix(name, t) for t in targets)]
    dropout = getattr(method_config, "dropout", 0) > 0
    cast = adapter_bytes != p
    if autocast:  # what the products keep is their autocast's 16-bit copy, one per layer
        cast, adapter_bytes = True, p
    mask = (1 if device == "cuda" else p) if dropout else 0
    shared, own = {}, 0
    for name in chosen:
        features = shapes[name][0]
        own += method_config.rank * adapter_bytes  # A's output, kept by B
        if dropout or cast:  # a copy of its own per layer
            own += features * (mask + (adapter_bytes if cast else p))
        else:  # the layer's input itself, shared with the layers that read the same input
            leaf = name.split(".")[-1]
            key = ("attn_in" if leaf in ("q_proj", "k_proj", "v_proj", "qkv_proj", "c_attn") else
                   "mlp_in" if leaf in ("gate_proj", "up_proj", "gate_up_proj", "c_fc") else name)
            shared[key] = features * p
    return own + sum(shared.values())


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
    # train's CPU step on a 16-bit base keeps whatever trains in fp32 (master weights) under autocast
    masters = cpu_mixed_precision(options, torch_dtype)
    p_train = 4 if (options.adapter_dtype == "fp32" and method != "full") or masters else p  # trainable bytes
    compute_dtype = autocast_dtype(dtype) or torch_dtype
    counts = parameter_counts(config, method_config)
    weights = (counts["total"] - counts["quantized"] - counts["added"]) * p + counts["added"] * p_train
    full_in_fp32 = masters and get_method(method).memory.trains_base_weights
    if full_in_fp32:  # every weight is a trainable fp32 master
        weights = counts["total"] * 4
    double_quant = getattr(method_config, "double_quant", True)
    weights += counts["quantized"] * (NF4_BYTES_PER_PARAM if double_quant else NF4_BYTES_PER_PARAM_NO_DOUBLE_QUANT)
    gradients = counts["trainable"] * p_train
    implementation = resolve_optimizer(options.optimizer, method, options.device)
    optimizer_state = counts["trainable"] * OPTIMIZER_STATE_BYTES[implementation](p_train)
    # foreach AdamW's sqrt(v) over the whole parameter list; the single-tensor loop's temporaries are
    # one parameter at a time, fused and bitsandbytes' kernels update in place
    temporaries = counts["trainable"] * p_train if implementation == "adamw foreach" else 0
    if get_method(method).memory.trains_base_weights and getattr(config, "tie_word_embeddings", False):
        # the end of backward: the input embedding's gradient is added to the output head's (the same
        # tied weight) out of place, so the new gradient and the sum exist with all the others
        dims = model_dims(config)
        temporaries = max(temporaries, 2 * dims["vocab_size"] * dims["hidden_size"] * p_train)
    activations = activation_bytes(config, method_config, batch_size, seq_len, compute_dtype, options)
    if compute_dtype != torch_dtype or full_in_fp32:  # autocast keeps a 16-bit copy of each linear weight for backward
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
