"""The coverage matrix: every method on every decoder-only model type transformers can build small.

``causal_lm_types()`` lists the model types of transformers' causal-LM auto mapping; ``tiny_config``
builds each from its config class with tiny sizes (hidden 64, 2 layers, vocab 128), in code, with
no download, or says why it cannot (``NotBuildable``: the decoder half of an encoder-decoder, a
multimodal model needing its vision/audio tower, an encoder that is not causal, a config that does
not shrink). ``check(model_type, method)`` then runs one method on one tiny model:

1. ``apply``; a ``ValueError`` there is a *refusal*, and its message the reason;
2. zero-init invariance where the registry says the method has it (``Method.unchanged_at_start``);
3. a forward + backward in train mode: a finite loss, gradients on the trained parameters only;
4. ``generate`` with the KV cache, whose logits must equal a recompute without it (where the base's own
   do: dory's and rwkv's cached decoding already differs, so there it must only run and stay finite);
5. save -> load into a fresh base -> identical logits.

The result is ``"works"`` or ``"refused at apply (reason)"``; any other exception propagates (the
test fails). ``matrix_markdown`` renders the table README shows (``python -m peftbook info
--coverage``); a test checks README's copy is current. A few configs need more than the common tiny
sizes (``OVERRIDES``: a hybrid's layer pattern with one attention layer in two, heads that match a
config's own checks); that is about building the test model, not about the methods.
"""
from __future__ import annotations

import inspect
import tempfile
import warnings

import torch

from peftbook.methods import (METHODS, TRAINABLE_METHODS, apply, load_adapter, make_config, method_defaults,
                              save_adapter)

WORKS = "works"
# Tiny sizes under every name transformers' configs use for them; a config takes those it knows.
SIZES = dict(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, head_dim=16, max_position_embeddings=256, n_embd=64, n_layer=2, n_head=4,
             n_inner=128, n_positions=256, d_model=64, ffn_dim=128, num_layers=2, num_heads=4,
             moe_intermediate_size=32, num_experts=4, num_local_experts=4, n_routed_experts=4,
             num_experts_per_tok=2, shared_expert_intermediate_size=32, rotary_dim=8,
             # latent attention (deepseek), its sparse indexer, linear attention, mamba mixers, per-layer inputs
             q_lora_rank=32, kv_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=16,
             index_head_dim=16, index_n_heads=2, linear_num_key_heads=2, linear_num_value_heads=2,
             linear_key_head_dim=16, linear_value_head_dim=16, linear_head_dim=16, linear_num_heads=2,
             mamba_num_heads=4, mamba_head_dim=16, ssm_state_size=8, n_groups=1, dff=128, dim_ff=128,
             hidden_size_per_layer_input=8, vocab_size_per_layer_input=128,
             pad_token_id=0, bos_token_id=1, eos_token_id=2)
# Where a config's own checks or layer pattern need more than the sizes above: 2 layers with one of each
# kind a hybrid has (its attention layer included), heads that match its other sizes.
OVERRIDES = {
    "gpt_neo": {"attention_types": [[["global", "local"], 1]]},
    "mamba2": {"num_heads": 8},
    "zaya": {"num_experts_per_tok": 1},
    "dots3_note_text": {"num_key_value_heads": 4},
    "bamba": {"attn_layer_indices": [1]},
    "jamba": {"attn_layer_period": 2, "attn_layer_offset": 1, "expert_layer_period": 2, "expert_layer_offset": 1},
    "granitemoehybrid": {"layer_types": ["mamba", "attention"]},
    "recurrent_gemma": {"block_types": ["recurrent", "attention"]},
    "lfm3": {"layer_types": ["conv", "full_attention"]},
    "bailing_hybrid": {"layer_types": ["linear_attention", "full_attention"]},
    "qwen3_next": {"layer_types": ["linear_attention", "full_attention"]},
    "qwen3_5_text": {"layer_types": ["linear_attention", "full_attention"]},
    **{name: {"head_dim": 8} for name in ("glm4_moe_lite", "longcat_flash")},  # rotary over qk_rope_head_dim
}
MAX_PARAMETERS = 3_000_000  # a config that stays bigger than this did not shrink: not "tiny"
# Small method settings: 2 layers, few virtual tokens, a low rank (speed, not quality)
SMALL = {"prompt_tuning": {"num_virtual_tokens": 4, "init": "random"}, "prefix_tuning": {"num_virtual_tokens": 4},
         "llama_adapter": {"adapter_len": 4, "adapter_layers": 2}, "lora": {"rank": 4, "dropout": 0.0},
         "qlora": {"rank": 4, "dropout": 0.0}}


class NotBuildable(Exception):
    """A model type that cannot be built tiny from its config class in code; the message says why."""


def causal_lm_types() -> list[str]:
    """Every model type in transformers' ``MODEL_FOR_CAUSAL_LM_MAPPING_NAMES``, sorted."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


def tiny_config(model_type: str):
    """The config of ``model_type`` at tiny sizes; raises ``NotBuildable`` with the reason."""
    from transformers import CONFIG_MAPPING, AutoModelForCausalLM

    cls = CONFIG_MAPPING[model_type]
    known = (set(inspect.signature(cls.__init__).parameters) | set(getattr(cls, "attribute_map", {}))
             | set(getattr(cls, "__dataclass_fields__", {})))
    try:
        sizes = {key: value for key, value in SIZES.items() if key in known}
        if "kv_lora_rank" in known:  # latent attention expands its keys/values to every query head
            sizes["num_key_value_heads"] = SIZES["num_attention_heads"]
        config = cls(**{**sizes, **OVERRIDES.get(model_type, {})})
    except Exception as error:  # noqa: BLE001 - any failure means "not buildable this way"
        raise NotBuildable(f"its config rejects tiny sizes ({type(error).__name__})") from None
    nested = sorted(name for name in getattr(cls, "sub_configs", {}) if name != "text_config" or len(cls.sub_configs) > 1)
    towers = [name for name in nested if any(word in name for word in ("vision", "audio", "speech", "image", "patch"))]
    if getattr(config, "is_encoder_decoder", False):
        raise NotBuildable("the decoder of an encoder-decoder model")
    if towers:
        raise NotBuildable(f"multimodal: needs its {', '.join(towers)}")
    if nested:
        raise NotBuildable(f"its sizes live in nested configs ({', '.join(nested)}) that this builder does not shrink")
    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except Exception as error:  # noqa: BLE001
        raise NotBuildable(f"does not build from a tiny config ({type(error).__name__}: {str(error)[:80]})") from None
    size = sum(p.numel() for p in model.parameters())
    if size > MAX_PARAMETERS:
        raise NotBuildable(f"its config does not shrink: {size:,} parameters at the tiny sizes")
    return config


def tiny_model(model_type: str, seed: int = 0):
    """A random-init tiny model of ``model_type`` (fp32, CPU, eval mode); ``NotBuildable`` if it cannot be."""
    from transformers import AutoModelForCausalLM

    if model_type in NOT_BUILDABLE:
        raise NotBuildable(NOT_BUILDABLE[model_type])
    config = tiny_config(model_type)
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AutoModelForCausalLM.from_config(config).eval()
    if model_type not in CAUSAL:
        try:
            check_causal(model)
        except NotBuildable as reason:
            NOT_BUILDABLE[model_type] = str(reason)
            raise
        CAUSAL.add(model_type)
    return model


NOT_BUILDABLE: dict[str, str] = {}  # found in this process: model type -> reason
CAUSAL: set[str] = set()  # model types already seen to build and be causal


def check_causal(model) -> None:
    """Raise ``NotBuildable`` unless a forward on input_ids alone works and position t ignores later tokens."""
    ids = torch.randint(3, 128, (1, 8), generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad():
            logits = model(input_ids=ids).logits
            changed = ids.clone()
            changed[0, -1] = 3 if ids[0, -1] != 3 else 4
            later = model(input_ids=changed).logits
    except Exception as error:  # noqa: BLE001
        raise NotBuildable(f"a forward on input_ids alone fails ({type(error).__name__}: {str(error)[:80]})") from None
    if not torch.allclose(logits[:, :-1], later[:, :-1], atol=1e-5):  # chunked kernels reorder sums
        raise NotBuildable("not causal: position t sees later tokens (an encoder's bidirectional attention)")


def buildable_types(types=None) -> dict[str, str | None]:
    """model type -> None where it builds tiny, else the reason it does not."""
    found = {}
    for model_type in types or causal_lm_types():
        try:
            tiny_model(model_type)
            found[model_type] = None
        except NotBuildable as reason:
            found[model_type] = str(reason)
    return found


def method_config(method: str):
    return make_config(method, **{**method_defaults(method)["config"], **SMALL.get(method, {})})


def check(model_type: str, method: str) -> str:
    """Run ``method`` on a tiny ``model_type``: ``"works"`` or ``"refused at apply (reason)"``; else raises."""
    model = tiny_model(model_type)
    torch.manual_seed(1)
    ids = torch.randint(3, 128, (2, 6))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        base = model(input_ids=ids).logits
    try:
        apply(model, method_config(method))
    except ValueError as error:
        return f"refused at apply ({str(error).splitlines()[0]})"
    if METHODS[method].unchanged_at_start:
        with torch.no_grad():
            assert torch.allclose(model(input_ids=ids).logits, unadapted_logits(model, ids, method, base), atol=1e-5), \
                "zero-init changed the outputs"
    model.train()
    loss = model(input_ids=ids, labels=ids).loss
    assert torch.isfinite(loss), f"loss is {loss}"
    loss.backward()
    trained = [p for p in model.parameters() if p.requires_grad]
    assert trained and any(p.grad is not None for p in trained), "no trained parameter got a gradient"
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad), "a frozen parameter got a gradient"
    model.eval()
    with torch.no_grad():
        for p in trained:  # move off the zero init, so that save/load and the cache see the method at work
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.05)
    cached, full = cache_check(model, ids, mask)
    if base_cache_exact(model_type):
        torch.testing.assert_close(cached, full, atol=1e-4, rtol=1e-4)
    else:  # the base's own cached generate differs from a recompute (dory, rwkv): it runs, finite
        assert torch.isfinite(cached).all(), "generate with the KV cache gave non-finite logits"
    with tempfile.TemporaryDirectory() as directory, torch.no_grad():
        save_adapter(model, directory)
        loaded = load_adapter(tiny_model(model_type), directory).eval()
        torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits)
    return WORKS


def unadapted_logits(model, ids, method: str, base):
    """The base's logits; for QLoRA the 4-bit base's: the model without its LoRA branch."""
    if method != "qlora":
        return base
    from peftbook.methods import lora

    modules = lora.lora_modules(model).values()
    for module in modules:
        module.merged = True  # forward = base only
    try:
        return model(input_ids=ids).logits
    finally:
        for module in modules:
            module.merged = False


def cache_check(model, ids, mask):
    """Logits of ``generate`` with the KV cache, and the same steps recomputed from scratch without one."""
    sequences, cached = generated(model, ids, mask)
    with torch.no_grad():
        full = model(input_ids=sequences[:, :-1], attention_mask=torch.ones_like(sequences[:, :-1]),
                     use_cache=False).logits[:, -cached.shape[1]:]
    return cached, full


BASE_CACHE_EXACT: dict[str, bool] = {}  # model type -> whether its own cached logits equal a recompute


def base_cache_exact(model_type: str) -> bool:
    """Whether the unadapted model's cached ``generate`` matches a recompute (else the method cannot be asked to)."""
    if model_type not in BASE_CACHE_EXACT:
        torch.manual_seed(1)
        ids = torch.randint(3, 128, (2, 6))
        cached, full = cache_check(tiny_model(model_type), ids, torch.ones_like(ids))
        BASE_CACHE_EXACT[model_type] = torch.allclose(cached, full, atol=1e-4, rtol=1e-4)
    return BASE_CACHE_EXACT[model_type]


def generated(model, ids, mask):
    """``generate`` with the KV cache: the sequences (B, T+3) and each step's logits (B, 3, vocab)."""
    out = model.generate(ids, attention_mask=mask, max_new_tokens=3, do_sample=False, use_cache=True,
                         output_logits=True, return_dict_in_generate=True, pad_token_id=0)
    return out.sequences, torch.stack(out.logits, 1)


def coverage_matrix(types=None, methods=TRAINABLE_METHODS, strict: bool = True) -> dict:
    """``{"skipped": {type: reason}, "results": {type: {method: result}}}``.

    ``strict=False`` records an unexpected exception as ``"FAILS (...)"`` instead of raising.
    """
    skipped, results = {}, {}
    for model_type in types or causal_lm_types():
        try:
            tiny_model(model_type)
        except NotBuildable as reason:
            skipped[model_type] = str(reason)
            continue
        results[model_type] = {}
        for method in methods:
            try:
                results[model_type][method] = check(model_type, method)
            except Exception as error:  # noqa: BLE001
                if strict:
                    raise AssertionError(f"{method} on {model_type}: {type(error).__name__}: {error}") from error
                results[model_type][method] = f"FAILS ({type(error).__name__}: {str(error).splitlines()[0][:120]})"
    return {"skipped": skipped, "results": results}


def matrix_markdown(matrix: dict) -> str:
    """The matrix as markdown: totals per method, then (folded) one row per buildable type, the refusal
    reasons with the types they stop, and the types that do not build tiny, grouped by reason."""
    import transformers

    results, skipped = matrix["results"], matrix["skipped"]
    methods = list(next(iter(results.values()), {}))
    built = len(results)
    lines = [f"{built} of {built + len(skipped)} model types in the causal-LM mapping of transformers "
             f"{transformers.__version__} build tiny in code; per method, on those {built}:", "",
             "| method | works | refused at apply | works, share |", "|---|---:|---:|---:|"]
    for method in methods:
        works = sum(row[method] == WORKS for row in results.values())
        refused = sum(row[method].startswith("refused") for row in results.values())
        lines.append(f"| {method} | {works} | {refused} | {works / max(built, 1):.0%} |")
    reasons: dict[str, list[str]] = {}  # reason, the model type written as <type> -> where it stops a method
    cells: dict[str, list[str]] = {}
    for model_type, row in results.items():
        cells[model_type] = []
        for method in methods:
            if row[method] == WORKS:
                cells[model_type].append("works")
                continue
            reason = general_reason(row[method], model_type)
            reasons.setdefault(reason, []).append(f"{model_type} ({method})")
            kind = "refused" if reason.startswith("refused") else "FAILS"
            cells[model_type].append(f"{kind} [{list(reasons).index(reason) + 1}]")
    lines += ["", "<details><summary>Every type, every method</summary>", "",
              "| model type | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    lines += [f"| {model_type} | " + " | ".join(row) + " |" for model_type, row in cells.items()]
    lines += ["", "Refusals (`<type>` stands for the model type):", ""]
    lines += [f"{n}. {reason} -- {', '.join(where)}" for n, (reason, where) in enumerate(reasons.items(), 1)]
    if skipped:
        grouped: dict[str, list[str]] = {}
        for model_type, reason in skipped.items():
            grouped.setdefault(general_reason(reason, model_type), []).append(model_type)
        lines += ["", "Not buildable tiny (skipped), by reason:", ""]
        lines += [f"- {reason}: {', '.join(types)}" for reason, types in grouped.items()]
    lines += ["", "</details>"]
    return "\n".join(lines) + "\n"


def general_reason(reason: str, model_type: str) -> str:
    """``reason`` with the model type's own name written as ``<type>``, so that equal reasons group."""
    import re

    reason = re.sub(rf"(?<![\w-]){re.escape(model_type)}(?![\w-])", "<type>", reason)
    return re.sub(r"[\d,]+ parameters", "N parameters", reason)
