"""LLaMA-Adapter: zero-init, gated attention to learnable adaption prompts.

Zhang et al. 2023, "LLaMA-Adapter: Efficient Fine-tuning of Language Models with Zero-init Attention",
arXiv 2303.16199 (official code: github.com/OpenGVLab/LLaMA-Adapter, ``llama/model.py``).

The idea. Each of the top ``adapter_layers`` layers gets a learnable prompt ``P`` of ``adapter_len`` vectors.
The layer's own frozen key/value projections turn ``P`` into extra keys and values; every query attends to
them with a *separate* softmax, and the result is scaled by a gate that starts at zero (paper eq. 7):

    out_h = softmax(q_h K_h^T) V_h  +  tanh(g_h) * softmax(q_h K_P,h^T) V_P,h      (for each head h)
    y     = o_proj(concat_h out_h)

    hidden ──► attention (frozen) ──────────────────────────┐
       │                                                    (+)──► o_proj ──► y
       └──► q (RoPE) ──► softmax(q K_P^T) V_P ──► × tanh(g) ┘       g = 0 at step 0, so y = base

Like the official code: the query is the rotated one (RoPE applied), the adapter keys are not rotated (the
prompt has no position), the gate is one value per head, zero-initialised and passed through tanh, and the
prompt starts as N(0, 1) (the official ``nn.Embedding`` init).

What we do differently from HF PEFT (``peft.AdaptionPromptConfig``) and why:

* Gate: PEFT learns one scalar per layer, without tanh. We default to the paper's per-head tanh gate;
  ``gate="scalar"`` reproduces PEFT so the two can be compared (and so a test can prove equivalence).
* Where the adapter output is added: PEFT projects it through ``o_proj`` on its own and adds the result after
  the attention; we add it to the input of ``o_proj``, exactly where eq. 7 adds it. For bias-free
  projections (llama, mistral) the two are the same by linearity; with a bias (gpt2's ``c_proj``) ours adds
  the bias once, and gpt2's residual dropout sees the sum, as in the paper.
* PEFT's gpt2 path adds the adapter output *after* ``c_proj``, unprojected; we project it like every other
  architecture (the paper adds before ``wo``).
* Coverage: PEFT supports llama, mistral and gpt2. We wrap the attention module of any model whose
  attention we can express and reuse the model's own pieces: fused q/k/v projections (gpt2, phi3,
  gpt_neox, persimmon), the rotary embeddings the decoder layer passes (``surgery.apply_rotary``,
  partial rotary as phi3 does), ``q_norm``/``k_norm`` (qwen3, olmo2, stablelm), ``scaling`` and logit
  soft-capping (gemma2). GQA as in PEFT: the kv-head adapter keys/values are repeated to the query
  heads in ``repeat_kv`` order. Which channels the rotary turns together and how a fused projection
  is ordered differ between models, so ``check_queries`` reads them off the model at apply: a
  three-token forward records the queries, keys and values each adapted layer hands its attention
  function, and the adapter's own must equal them; what it cannot reproduce is refused with the
  reason (gptj and codegen rotate inside their attention, llama4 rotates by complex numbers).
* The query is recomputed from the hidden states (as PEFT does): one extra query projection per adapted
  layer (the whole fused qkv projection for gpt2 and phi3).
* Like PEFT, the wrapper moves the base weights of the adapted layers under ``.attention.`` in
  ``state_dict`` (``...self_attn.attention.q_proj.weight``); ``save_adapter`` writes only prompts and gates.
  No ``adapter_config.json`` is written: the per-head gate has no PEFT equivalent.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from peftbook.methods.lora import ADAPTER_DTYPES, adapter_torch_dtype
from peftbook.models import decoder_layers, get_architecture, model_dims
from peftbook.surgery import ROTARY_STYLES, apply_rotary, copy_state_checked, has_values, trial_run

GATES = ("per_head_tanh", "scalar")
PARAMETER_NAMES = ("adaption_prompt", "adaption_gate")
PAPER_FRACTION = 30 / 32  # the paper adapts the top 30 of LLaMA-7B's 32 layers (arXiv 2303.16199, Sec. 4.1)


def layer_count(config, num_layers: int) -> int:
    """How many top layers ``config.adapter_layers`` means in a model of ``num_layers``: a count as it is, a
    fraction of the depth rounded (at least 1): 30/32 of the tiny base's 4 is 4, of SmolLM2's 30 is 28."""
    layers = config.adapter_layers
    return layers if isinstance(layers, int) else max(1, round(layers * num_layers))


@dataclass
class LlamaAdapterConfig:
    method: ClassVar[str] = "llama_adapter"
    adapter_len: int = 10  # prompt vectors per adapted layer (the paper uses 10)
    # the *top* layers that get a prompt: a count (4), or a fraction of the model's depth (0.5: the top
    # half), rounded, at least 1; the default is the paper's 30 of LLaMA-7B's 32, so it scales with the model
    adapter_layers: int | float = PAPER_FRACTION
    gate: str = "per_head_tanh"  # "per_head_tanh": paper eq. 7 and official code; "scalar": HF PEFT's variant
    adapter_dtype: str = "base"  # prompts and gates in the base's dtype, or "fp32" on a 16-bit base (cast when used)

    def validate(self) -> None:
        if not isinstance(self.adapter_len, int) or isinstance(self.adapter_len, bool) or self.adapter_len <= 0:
            raise ValueError(f"adapter_len={self.adapter_len!r} is not allowed; it must be a positive integer")
        layers = self.adapter_layers
        count = isinstance(layers, int) and not isinstance(layers, bool) and layers > 0
        fraction = isinstance(layers, float) and 0 < layers <= 1
        if not (count or fraction):
            raise ValueError(f"adapter_layers={layers!r} is not allowed; it must be a positive integer (how many top "
                             "layers) or a fraction in (0, 1] of the model's layers")
        if self.gate not in GATES:
            raise ValueError(f"gate={self.gate!r} is not allowed; allowed: {', '.join(GATES)}")
        if self.adapter_dtype not in ADAPTER_DTYPES:
            raise ValueError(f"adapter_dtype={self.adapter_dtype!r} is not allowed; "
                             f"allowed: {', '.join(ADAPTER_DTYPES)}")


class AdaptedAttention(nn.Module):
    """One attention module plus its adaption prompt and gate; the output is the base's while the gate is 0."""

    def __init__(self, attention: nn.Module, architecture, dims: dict, config: LlamaAdapterConfig):
        super().__init__()
        self.attention = attention
        self.architecture = architecture  # module names, from peftbook.models.ARCHITECTURES
        self.num_heads, self.num_kv_heads = dims["num_heads"], dims["num_kv_heads"]
        self.head_dim = dims["head_dim"]
        self.gate_kind = config.gate
        self.rotary_style = "halves"  # which channels turn together; check_queries reads it off the model
        # a fused q/k/v projection: "in_order" [q | k | v] (gpt2, phi3) or "per_head" [q_h | k_h | v_h] head
        # after head (gpt_neox, bloom); the first guess by model type, check_queries confirms or finds the other
        self.fused_layout = "per_head" if architecture.model_type in FUSED_QKV_PER_HEAD else "in_order"
        weight = next(p for p in attention.parameters())
        dtype = weight.dtype if weight.is_floating_point() else torch.float32  # a 4-bit base computes in fp32
        dtype = adapter_torch_dtype(config.adapter_dtype, dtype)
        self.adaption_prompt = nn.Parameter(  # (P, hidden): fed to the frozen k/v projections like a token
            torch.randn(config.adapter_len, dims["hidden_size"], device=weight.device, dtype=dtype))
        self.norms = {"q": norm_of(attention, "q", self.num_heads, self.head_dim),
                      "k": norm_of(attention, "k", self.num_kv_heads, self.head_dim)}
        gate_size = self.num_heads if config.gate == "per_head_tanh" else 1
        self.adaption_gate = nn.Parameter(torch.zeros(gate_size, device=weight.device, dtype=dtype))

    def forward(self, hidden_states, *args, **kwargs):
        adapter_output = self.adapter_attention(hidden_states, kwargs.get("position_embeddings"))
        # add it to the input of the output projection, for the duration of this one call
        o_proj = getattr(self.attention, self.architecture.o_proj)
        hook = o_proj.register_forward_pre_hook(lambda module, inputs: (inputs[0] + adapter_output, *inputs[1:]))
        try:
            return self.attention(hidden_states, *args, **kwargs)
        finally:
            hook.remove()

    def adapter_attention(self, hidden_states, position_embeddings):
        """tanh(g) * softmax(q K_P^T * scale) V_P for every query position: (B, T, heads * head_dim)."""
        batch, length, _ = hidden_states.shape
        query = self.query(hidden_states, position_embeddings)  # (B, nh, T, hd)

        prompt = self.adaption_prompt.to(hidden_states.dtype)  # (P, hidden); a no-op unless adapter_dtype="fp32"
        _, key, value = self._project(prompt)  # (P, kv * hd) each; no RoPE on the prompt
        key = self._heads(key, "k", self.num_kv_heads).transpose(0, 1)  # (kv, P, hd)
        value = value.view(-1, self.num_kv_heads, self.head_dim).transpose(0, 1)  # (kv, P, hd)
        groups = self.num_heads // self.num_kv_heads  # GQA: each kv head serves `groups` query heads
        key = key.repeat_interleave(groups, dim=0).to(query.dtype)  # (nh, P, hd)
        value = value.repeat_interleave(groups, dim=0).to(query.dtype)  # (nh, P, hd)

        scale = getattr(self.attention, "scaling", self.head_dim ** -0.5)
        scores = (query @ key.transpose(-1, -2)) * scale  # (B, nh, T, P)
        softcap = getattr(self.attention, "attn_logit_softcapping", None)
        if softcap:  # gemma2 caps its attention logits; the prompt's are capped alike
            scores = softcap * torch.tanh(scores / softcap)
        weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)  # separate softmax over P
        gate = self.adaption_gate.tanh() if self.gate_kind == "per_head_tanh" else self.adaption_gate
        gate = gate.to(weights.dtype)  # (nh,) or (1,)
        # gate the (B, nh, T, P) weights, not the (B, nh, T, hd) output: the same product, but backward then
        # keeps a tensor of P (10) values per query and head instead of head_dim (64) -- measured: +1.6-3.3%
        # activation memory against HF PEFT when the output was gated, equal once the weights are
        output = (gate.view(1, -1, 1, 1) * weights) @ value  # (B, nh, T, hd)
        return output.transpose(1, 2).reshape(batch, length, self.num_heads * self.head_dim)

    def query(self, hidden_states, position_embeddings):
        """The layer's queries (B, nh, T, hd) as its attention uses them: projected, normed, rotated."""
        query = self._heads(self._query(hidden_states), "q", self.num_heads).transpose(1, 2)  # (B, nh, T, hd)
        if position_embeddings is not None:  # rotary models rotate their queries; gpt2 has absolute positions
            query = apply_rotary(query, *position_embeddings, style=self.rotary_style)  # as the layer's own
        return query

    def _query(self, x):
        """Queries only: a fused projection must run whole, a separate q_proj runs alone."""
        if self.architecture.qkv_proj is not None:
            return self._project(x)[0]
        return getattr(self.attention, self.architecture.q_proj)(x)

    def _project(self, x):
        """(queries, keys, values) from the layer's own projections, fused (gpt2, phi3) or not."""
        arch = self.architecture
        if arch.qkv_proj is not None and self.fused_layout == "per_head":  # (.., nh, 3 * hd), head after head
            fused = getattr(self.attention, arch.qkv_proj)(x)
            heads = fused.view(*fused.shape[:-1], self.num_heads, 3 * self.head_dim).chunk(3, dim=-1)
            return tuple(h.reshape(*fused.shape[:-1], self.num_heads * self.head_dim) for h in heads)
        if arch.qkv_proj is not None:
            q_size, kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
            return getattr(self.attention, arch.qkv_proj)(x).split([q_size, kv_size, kv_size], dim=-1)
        return tuple(getattr(self.attention, name)(x) for name in (arch.q_proj, arch.k_proj, arch.v_proj))

    def _heads(self, x, which, heads):
        """(.., heads * hd) -> (.., heads, hd), through the model's query/key norm where it has one: per
        head (qwen3, cohere, persimmon) or over the whole projection (olmo2), as the model applies it."""
        name, scope = self.norms[which]
        if scope == "flat":
            x = getattr(self.attention, name)(x)
        x = x.view(*x.shape[:-1], heads, self.head_dim)  # (.., T, heads, hd)
        if scope == "heads_first":
            y = x.transpose(-3, -2)  # (.., heads, T, hd)
            y = getattr(self.attention, name)(y if y.dim() == 4 else y[None])  # (B, heads, T, hd)
            return (y if x.dim() == 4 else y[0]).transpose(-3, -2)
        return getattr(self.attention, name)(x) if scope == "head" else x


NORM_NAMES = {"q": ("q_norm", "q_layernorm", "query_layernorm"), "k": ("k_norm", "k_layernorm", "key_layernorm")}
# The model types whose fused query_key_value holds [q_h | k_h | v_h] head after head: the first guess for
# them (bloom's attention cannot be checked against its own queries, see check_queries); others start from
# [q | k | v], and check_queries tries the other layout where the layer's own queries can be read
FUSED_QKV_PER_HEAD = ("gpt_neox", "bloom")
FUSED_LAYOUTS = ("in_order", "per_head")


def norm_of(attention: nn.Module, which: str, heads: int, head_dim: int) -> tuple[str | None, str | None]:
    """(name, "head" | "flat") of the query or key norm of ``attention``; (None, None) without one."""
    name = next((n for n in NORM_NAMES[which] if isinstance(getattr(attention, n, None), nn.Module)), None)
    if name is None:
        return None, None
    norm = getattr(attention, name)
    if isinstance(getattr(norm, "norms", None), nn.ModuleList) and len(norm.norms) == heads:
        return name, "heads_first"  # one norm per head over (B, heads, T, hd): stablelm
    weight = getattr(norm, "weight", None)
    if weight is None:  # a norm without a weight (nanochat, dory): per head, as check_queries then confirms
        return name, "head"
    shape = tuple(weight.shape)
    if shape in ((head_dim,), (heads, head_dim)):
        return name, "head"
    if shape == (heads * head_dim,):
        return name, "flat"
    raise ValueError(f"LLaMA-Adapter: the attention's {name} has weight shape {shape}, neither per head "
                     f"({head_dim},) nor over the projection ({heads * head_dim},)")


def check_attention(model: nn.Module, layer_index: int, attention: nn.Module | None, architecture, dims) -> None:
    """Refuse, naming the model type and what is missing, an attention LLaMA-Adapter cannot express."""
    model_type = model.config.model_type
    where = f"LLaMA-Adapter cannot adapt {model_type}: layer {layer_index}"
    if attention is None:
        raise ValueError(f"{where} has no {architecture.attention} (a recurrent/state-space layer)")
    heads, kv_heads, head_dim = dims["num_heads"], dims["num_kv_heads"], dims["head_dim"]
    if architecture.qkv_proj is not None:
        fused = getattr(attention, architecture.qkv_proj, None)
        width = getattr(fused, "out_features", None) or getattr(fused, "nf", None) or 0
        if head_dim and width % head_dim == 0 and (width // head_dim - heads) % 2 == 0 and width // head_dim > heads:
            kv_heads = dims["num_kv_heads"] = (width // head_dim - heads) // 2  # falcon's multi-query: 1
        names, wanted = [architecture.qkv_proj], [(heads + 2 * kv_heads) * head_dim]
    else:
        names = [architecture.q_proj, architecture.k_proj, architecture.v_proj]
        wanted = [heads * head_dim, kv_heads * head_dim, kv_heads * head_dim]
    for name, size in zip(names, wanted):
        projection = getattr(attention, name, None)
        found = getattr(projection, "out_features", None) or getattr(projection, "nf", None)
        if found != size:
            raise ValueError(f"{where}: {name} has {found} outputs, not the {size} that {heads} query heads, "
                             f"{kv_heads} key/value heads of size {head_dim} need (e.g. latent attention)")
    for which, count in (("q", heads), ("k", kv_heads)):
        norm_of(attention, which, count, head_dim)


def inject(model: nn.Module, config: LlamaAdapterConfig) -> None:
    """Wrap the attention module of the top ``config.adapter_layers`` decoder layers."""
    dims = model_dims(model.config)
    if not dims["num_heads"]:
        raise ValueError(f"LLaMA-Adapter cannot adapt {model.config.model_type}: its config has no attention heads")
    try:
        architecture = get_architecture(model)
    except ValueError as error:
        raise ValueError(f"LLaMA-Adapter cannot adapt this model: {error}") from None
    layers = decoder_layers(model)
    count = layer_count(config, len(layers))
    if count > len(layers):
        raise ValueError(f"adapter_layers={config.adapter_layers} is more than this model's {len(layers)} layers; "
                         f"allowed: 1..{len(layers)}")
    first = len(layers) - count
    adapted = {}  # layer index -> its wrapper, installed once every layer passed the checks
    for index, layer in enumerate(layers[first:], start=first):
        attention = getattr(layer, architecture.attention, None)
        if isinstance(attention, AdaptedAttention):
            raise ValueError("this model's attention is already wrapped by LLaMA-Adapter; load a fresh base model")
        layer_dims = {**dims, "head_dim": dims["head_dim"] or getattr(attention, "head_dim", None)}  # gemma4: per layer
        check_attention(model, index, attention, architecture, layer_dims)
        adapted[index] = AdaptedAttention(attention, architecture, layer_dims, config)
    check_queries(model, adapted)
    for index, wrapper in adapted.items():
        setattr(layers[index], architecture.attention, wrapper)


def check_queries(model: nn.Module, adapted: dict[int, AdaptedAttention]) -> None:
    """Refuse a layer whose own queries the adapter does not reproduce: it recomputes them from the layer's
    projections, norms and the ``(cos, sin)`` the layer receives, the llama way. Models that rotate channel
    pairs (gptj, cohere, glm), rotate inside their attention (codegen) or order their fused projection
    otherwise would get wrong queries without a word; so a three-token forward records, per layer, the
    queries the attention hands to its attention function and compares them with the adapter's."""
    if not has_values(model):  # the memory simulator's fake weights: nothing to compare
        return
    inputs, queries = attention_calls(model, {id(w.attention): index for index, w in adapted.items()})
    name = model.config.model_type
    for index, wrapper in adapted.items():
        where = f"LLaMA-Adapter cannot adapt {name}: layer {index}"
        hidden, positions = inputs[index]
        if index not in queries:  # its own attention code (bloom, xglm): only sizes can be checked
            if positions is None:
                continue  # no rotary to get wrong: the queries are the projection's, whose layout is checked
            raise ValueError(f"{where}: its attention does not go through transformers' attention functions, "
                             "so the adapter cannot check that it rotates the layer's queries the same way")
        pair = positions is None or (isinstance(positions, (tuple, list)) and len(positions) == 2 and all(
            isinstance(t, torch.Tensor) and not t.is_complex() for t in positions))
        if not pair:
            raise ValueError(f"{where}: its position_embeddings are not a (cos, sin) pair "
                             f"({type(positions).__name__}), so the adapter cannot rotate its queries")
        theirs, their_keys, their_values, scaling = queries[index]
        ours_scale = getattr(wrapper.attention, "scaling", wrapper.head_dim ** -0.5)
        theirs = theirs.float() * (wrapper.head_dim ** -0.5 if scaling is None else scaling)  # opt scales q itself
        layouts = [wrapper.fused_layout] + [l for l in FUSED_LAYOUTS if l != wrapper.fused_layout] \
            if wrapper.architecture.qkv_proj is not None else [wrapper.fused_layout]
        found = None
        for layout, style in ((l, s) for l in layouts for s in (ROTARY_STYLES if positions is not None else ("halves",))):
            wrapper.fused_layout, wrapper.rotary_style = layout, style
            try:
                with torch.no_grad():
                    ours = wrapper.query(hidden, positions).float() * ours_scale
            except RuntimeError:  # the style or layout does not fit the shapes
                continue
            if ours.shape == theirs.shape and torch.allclose(ours, theirs, atol=1e-5, rtol=1e-3):
                found = (layout, style)
                if same_keys_and_values(wrapper, hidden, positions, their_keys, their_values):
                    break
        else:
            if found is None:
                raise ValueError(f"{where}: the queries the adapter recomputes differ from the layer's own (a rotary "
                                 "or projection layout it does not know), so its attention cannot be expressed")
            raise ValueError(f"{where}: the keys or values the adapter computes differ from the layer's own (a "
                             "projection layout or key/value norm it does not know), so its attention cannot be "
                             "expressed")


def same_keys_and_values(wrapper: AdaptedAttention, hidden, positions, their_keys, their_values) -> bool:
    """Whether the layer's projections and key norm, as the wrapper reads them, give the layer's own keys
    (rotated here like its queries, only for the comparison: the prompt's keys are not) and values."""
    try:
        with torch.no_grad():
            _, keys, values = wrapper._project(hidden)
            keys = wrapper._heads(keys, "k", wrapper.num_kv_heads).transpose(1, 2)  # (B, kv, T, hd)
            if positions is not None:
                keys = apply_rotary(keys, *positions, style=wrapper.rotary_style)
            values = values.view(*values.shape[:-1], wrapper.num_kv_heads, -1).transpose(1, 2)
    except RuntimeError:
        return False
    return keys.shape == their_keys.shape and values.shape == their_values.shape and \
        torch.allclose(keys.float(), their_keys.float(), atol=1e-5, rtol=1e-3) and \
        torch.allclose(values.float(), their_values.float(), atol=1e-5, rtol=1e-3)


def attention_calls(model: nn.Module, watched: dict[int, int]) -> tuple[dict, dict]:
    """Run three tokens through ``model``; per watched attention module (``id -> layer index``) return the
    ``(hidden_states, position_embeddings)`` it received and the queries it passed to its attention function."""
    import sys

    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    inputs, queries = {}, {}
    modules = [module for module in model.modules() if id(module) in watched]

    def record_inputs(module, args, kwargs):
        hidden = args[0] if args else kwargs.get("hidden_states")
        inputs[watched[id(module)]] = (hidden, kwargs.get("position_embeddings"))

    def recording(function):
        def attend(module, query, *args, **kwargs):
            if id(module) in watched:
                queries[watched[id(module)]] = (query, args[0], args[1], kwargs.get("scaling"))  # q, k, v
            return function(module, query, *args, **kwargs)
        return attend

    restore = []  # (mapping or module, name, old value or a marker)
    for module in modules:
        implementation = getattr(getattr(module, "config", None), "_attn_implementation", None) or "eager"
        if implementation in ALL_ATTENTION_FUNCTIONS and not any(r[1] == implementation for r in restore):
            restore.append((ALL_ATTENTION_FUNCTIONS, implementation, ALL_ATTENTION_FUNCTIONS[implementation]))
            ALL_ATTENTION_FUNCTIONS[implementation] = recording(ALL_ATTENTION_FUNCTIONS[implementation])
        home = sys.modules[type(module).__module__]
        if hasattr(home, "eager_attention_forward") and not any(r[0] is home for r in restore):
            restore.append((home, "eager_attention_forward", home.eager_attention_forward))
            home.eager_attention_forward = recording(home.eager_attention_forward)
    hooks = [module.register_forward_pre_hook(record_inputs, with_kwargs=True) for module in modules]
    ids = torch.arange(1, 4, device=model.get_input_embeddings().weight.device)[None]  # (1, 3)
    try:
        with trial_run(model):
            model(input_ids=ids)
    finally:
        for hook in hooks:
            hook.remove()
        for owner, key, old in reversed(restore):
            if owner is ALL_ATTENTION_FUNCTIONS:
                owner[key] = old
            else:
                setattr(owner, key, old)
    return inputs, queries


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The prompts and gates, keyed by their names in the model (``...self_attn.adaption_prompt``)."""
    return {name: parameter for name, parameter in model.named_parameters()
            if name.rsplit(".", 1)[-1] in PARAMETER_NAMES}


def load_adapter_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    copy_state_checked(adapter_state(model), state, "llama_adapter")


def num_trainable(model_config, config: LlamaAdapterConfig) -> int:
    """adapter_layers * (adapter_len * hidden + gates), with one gate per head or one per layer."""
    dims = model_dims(model_config)
    gates = dims["num_heads"] if config.gate == "per_head_tanh" else 1
    return layer_count(config, dims["num_layers"]) * (config.adapter_len * dims["hidden_size"] + gates)


def hf_peft_config(model: nn.Module, config: LlamaAdapterConfig):
    """HF PEFT's adaption prompt with the same sizes (for comparisons; needs ``peft``).

    PEFT's gate is one scalar without tanh, ours per head through tanh by default: the comparison is
    of the method's cost, not of identical numbers (``gate="scalar"`` is PEFT's variant).
    """
    import peft

    return peft.AdaptionPromptConfig(task_type="CAUSAL_LM", adapter_len=config.adapter_len,
                                     adapter_layers=layer_count(config, model_dims(model.config)["num_layers"]))


def copy_into_hf_peft(ours: nn.Module, theirs: nn.Module) -> list[nn.Module]:
    """Give HF PEFT's adaption prompts and gates (``theirs``, from ``hf_peft_config``) the values of ours,
    layer by layer; returns PEFT's adapted attention modules in that order. Ours must use ``gate="scalar"``,
    PEFT's kind, for the two to compute the same (PEFT's prompt is ``(1, P, hidden)``, ours ``(P, hidden)``)."""
    mine = [m for m in ours.modules() if isinstance(m, AdaptedAttention)]
    peft_modules = [m for m in theirs.modules() if hasattr(m, "adaption_gate") and not isinstance(m, AdaptedAttention)]
    if len(mine) != len(peft_modules) or any(m.gate_kind != "scalar" for m in mine):
        raise ValueError(f"cannot copy {len(mine)} adapted layers into HF PEFT's {len(peft_modules)}: the counts must "
                         "match and every gate must be gate=\"scalar\" (PEFT's one gate per layer)")
    with torch.no_grad():
        for wrapper, peft_module in zip(mine, peft_modules):
            peft_module.adaption_prompt.copy_(wrapper.adaption_prompt[None])
            peft_module.adaption_gate.copy_(wrapper.adaption_gate)
    return peft_modules
