"""Prompt tuning: The Power of Scale for Parameter-Efficient Prompt Tuning (Lester et al. 2021, arXiv 2104.08691).

The idea: keep the whole model frozen and learn only a few "virtual tokens": a matrix of
``num_virtual_tokens`` embedding vectors prepended to every input's token embeddings::

    inputs_embeds = [ P_1 .. P_n | embed(x_1) .. embed(x_T) ]      (B, n + T, hidden)
                      trainable      frozen

That is ``n * hidden`` trainable numbers (20 x 2048 = 41k for a 1B Llama). The paper initialises P
from random values, from sampled vocabulary embeddings, or from the embeddings of the class labels.

How we hook in: a forward pre-hook on the Hugging Face model rewrites the call's arguments, so the
model object stays the same and ``model(...)``, ``generate()``, gradient checkpointing and any
training loop work unchanged. The hook turns ``input_ids`` into ``inputs_embeds`` with the prompt in
front, prepends ones to ``attention_mask`` and -100 to ``labels`` (no loss on virtual tokens), and
gives the virtual tokens positions ``0..n-1`` and the real tokens positions after them. On a decoding
step (the KV cache already holds the prompt) it only shifts the mask and the positions.

Like HF PEFT: the logits of the virtual positions are returned too (shape ``(B, n + T, vocab)``), the
prompt is kept in fp32 and cast to the model's dtype when used, the saved tensor is called
``prompt_embeddings`` so ``peft.PeftModel.from_pretrained`` loads our folder. Differently: random
init draws from a normal with the std of the model's own embedding matrix (the paper's
uniform[-0.5, 0.5] suits T5's embedding scale, PEFT's N(0, 1) is ~50x too large for most decoders);
"vocab" samples uniformly from the whole vocabulary (the paper: from the 5,000 most frequent tokens,
which a tokenizer alone does not tell us); real tokens' positions follow the attention mask, so a
left-padded row gets the same logits as the same row without padding (PEFT counts the pads).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from peftbook.models import model_dims
from peftbook.surgery import (add_forward_hook, add_forward_pre_hook, copy_state_checked, extend_attention_mask,
                              forward_kwargs, has_values, trial_run)

INIT_CHOICES = ("random", "vocab", "text")
_PEFT_INIT_NAMES = {"random": "RANDOM", "vocab": "SAMPLE_VOCAB", "text": "TEXT"}


@dataclass
class PromptTuningConfig:
    method: ClassVar[str] = "prompt_tuning"
    num_virtual_tokens: int = 20  # prompt length; the paper sees gains up to ~20, little beyond (Fig. 3b)
    init: str = "random"  # "random", "vocab" (sampled token embeddings) or "text" (embeddings of init_text)
    init_text: str | None = None  # e.g. the class labels "positive negative"; repeated/truncated to length
    tokenizer_name_or_path: str | None = None  # tokenizer for init_text; None -> the model's own path

    def validate(self) -> None:
        n = self.num_virtual_tokens
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise ValueError(f"num_virtual_tokens={n!r} is not allowed; it must be a positive integer")
        if self.init not in INIT_CHOICES:
            raise ValueError(f"init={self.init!r} is not allowed; allowed: {', '.join(INIT_CHOICES)}")
        if self.init == "text" and not (isinstance(self.init_text, str) and self.init_text.strip()):
            raise ValueError(f"init='text' needs a non-empty init_text (got {self.init_text!r})")
        if self.init != "text" and self.init_text is not None:
            raise ValueError(f"init_text is only used with init='text' (init={self.init!r})")


def inject(model: nn.Module, config: PromptTuningConfig) -> None:
    prompt = initial_prompt(model, config)  # (n, hidden), fp32, on the embedding's device
    model.register_parameter("prompt_embeddings", nn.Parameter(prompt))
    add_forward_pre_hook(model, _prepend_virtual_tokens)
    add_forward_hook(model, _mark_returned_cache)
    if not has_values(model):  # the memory simulator's fake weights: the trial below needs numbers
        return
    ids = torch.ones(1, 2, dtype=torch.long, device=prompt.device)
    try:  # the prompt goes in as embeddings: a model that needs token ids in its layers fails here, not later
        with trial_run(model):
            model(input_ids=ids, attention_mask=torch.ones_like(ids))
    except Exception as error:  # noqa: BLE001 - apply() undoes the injection
        raise ValueError(f"prompt tuning cannot be applied to {model.config.model_type}: a forward from input "
                         f"embeddings fails ({type(error).__name__}: {str(error).splitlines()[0][:80]})") from None


def _mark_returned_cache(model: nn.Module, args, kwargs, output):
    """A cache the model made itself during a call with the prompt holds the prompt: mark it too."""
    cache = getattr(output, "cache", None) or getattr(output, "past_key_values", None)
    if cache is not None:
        setattr(cache, PROMPTED, True)


PROMPTED = "peftbook_prompted"  # set on a cache that a call with the prompt has filled


def _is_decoding_step(cache) -> bool:
    """Whether the cache already holds the prompt: its key/value layers hold tokens, or, for a cache of
    recurrent states only (mamba), which has no length to ask, a call with the prompt has filled it (the
    mark). A model that ignores its cache (openai-gpt) leaves the length at 0: every call is a prefill."""
    if cache is None:
        return False
    try:
        return cache.get_seq_length() > 0
    except ValueError:  # transformers: only attention layers have a length
        return getattr(cache, PROMPTED, False)


def initial_prompt(model: nn.Module, config: PromptTuningConfig) -> torch.Tensor:
    """The (num_virtual_tokens, hidden) starting prompt, as ``config.init`` asks."""
    embedding = model.get_input_embeddings()
    vocab_size, device = embedding.weight.shape[0], embedding.weight.device

    def embed(token_ids) -> torch.Tensor:  # the module, not its weight: Gemma scales inside it
        with torch.no_grad():
            return embedding(torch.as_tensor(token_ids, device=device)).float()  # (len, hidden)

    n = config.num_virtual_tokens
    if config.init == "random":
        scale = embed(torch.randint(0, vocab_size, (min(vocab_size, 4096),), device=device)).std()
        return torch.randn(n, embedding.weight.shape[1], device=device) * scale
    if config.init == "vocab":
        return embed(torch.randint(0, vocab_size, (n,), device=device))
    token_ids = _tokenize(model, config)
    return embed((token_ids * (n // len(token_ids) + 1))[:n])  # repeat, then truncate to n


def _tokenize(model: nn.Module, config: PromptTuningConfig) -> list[int]:
    from transformers import AutoTokenizer

    name = config.tokenizer_name_or_path or getattr(model.config, "_name_or_path", "")
    if not name:
        raise ValueError("init='text' needs a tokenizer: set tokenizer_name_or_path (this model has no name or path)")
    token_ids = AutoTokenizer.from_pretrained(name)(config.init_text, add_special_tokens=False)["input_ids"]
    if not token_ids:
        raise ValueError(f"init_text={config.init_text!r} tokenizes to no tokens with the tokenizer of {name!r}")
    return token_ids


def _prepend_virtual_tokens(model: nn.Module, args: tuple, kwargs: dict):
    """Forward pre-hook: rewrite one call of the HF model so the prompt comes first."""
    kwargs = forward_kwargs(model, args, kwargs)
    prompt = model.prompt_embeddings  # (n, hidden)
    n = prompt.shape[0]
    mask, positions = kwargs.get("attention_mask"), kwargs.get("position_ids")
    cache = kwargs.get("cache", kwargs.get("past_key_values"))
    if _is_decoding_step(cache):
        # A decoding step: the prompt's keys/values are already cached; only the bookkeeping shifts.
        kwargs["attention_mask"] = extend_attention_mask(mask, n)
        kwargs["position_ids"] = None if positions is None else positions + n
        return (), kwargs
    embeds = kwargs.pop("inputs_embeds", None)
    if embeds is None:
        embeds = model.get_input_embeddings()(kwargs["input_ids"])  # (B, T, hidden)
    batch = embeds.shape[0]
    kwargs["input_ids"] = None
    prompts = prompt.to(embeds.dtype).expand(batch, -1, -1)  # (B, n, hidden)
    if cache is not None:
        setattr(cache, PROMPTED, True)  # the prompt goes into it now
    kwargs["inputs_embeds"] = torch.cat([prompts, embeds], dim=1)  # (B, n+T, hidden)
    kwargs["attention_mask"] = extend_attention_mask(mask, n)
    kwargs["position_ids"] = _positions_after_prompt(positions, kwargs["attention_mask"], n, batch, embeds.device)
    if kwargs.get("labels") is not None:
        labels = kwargs["labels"]
        kwargs["labels"] = torch.cat([labels.new_full((batch, n), -100), labels], dim=1)  # (B, n+T)
    return (), kwargs


def _positions_after_prompt(positions, mask, n: int, batch: int, device) -> torch.Tensor | None:
    """Virtual tokens at 0..n-1, real tokens after them: given positions shift by n; else they follow the mask."""
    if positions is not None:
        prompt_positions = torch.arange(n, device=device).expand(batch, n)
        return torch.cat([prompt_positions, positions.expand(batch, -1) + n], dim=1)  # (B, n+T)
    if mask is None:
        return None  # the model counts 0..n+T-1 itself
    lengths = mask.sum(-1, keepdim=True)  # (B, 1)
    if torch.equal(mask.bool(), torch.arange(mask.shape[1], device=device) < lengths):
        # No left padding: 0..n+T-1 is right for every real token, and letting the model count shares one
        # (1, n+T) RoPE table across the batch instead of building a (B, n+T) one (measured: 0.4% of the
        # tiny base's training-step peak, which HF PEFT, passing no positions, does not spend)
        return None
    return (mask.long().cumsum(-1) - 1).clamp(min=0)  # (B, n+T); pads are masked anyway


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {"prompt_embeddings": model.prompt_embeddings}  # HF PEFT's key


def load_adapter_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    copy_state_checked({"prompt_embeddings": model.prompt_embeddings.data}, state, "prompt tuning")


def num_trainable(model_config, config: PromptTuningConfig) -> int:
    return config.num_virtual_tokens * model_dims(model_config)["hidden_size"]


def peft_adapter_config(model: nn.Module, config: PromptTuningConfig) -> dict:
    dims = model_dims(model.config)
    return {
        "peft_type": "PROMPT_TUNING", "task_type": "CAUSAL_LM", "inference_mode": True,
        "base_model_name_or_path": getattr(model.config, "_name_or_path", None) or None,
        "num_virtual_tokens": config.num_virtual_tokens, "token_dim": dims["hidden_size"],
        "num_transformer_submodules": 1, "num_attention_heads": dims["num_heads"], "num_layers": dims["num_layers"],
        "prompt_tuning_init": _PEFT_INIT_NAMES[config.init], "prompt_tuning_init_text": config.init_text,
        # PEFT insists on a tokenizer for TEXT init (it only uses it when training from scratch)
        "tokenizer_name_or_path": config.tokenizer_name_or_path or (
            getattr(model.config, "_name_or_path", None) if config.init == "text" else None),
    }


def hf_peft_config(model: nn.Module, config: PromptTuningConfig):
    """The same soft prompt as a ``peft.PromptTuningConfig`` (for comparisons; needs ``peft``)."""
    import peft

    return peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=config.num_virtual_tokens,
                                   prompt_tuning_init=_PEFT_INIT_NAMES[config.init],
                                   prompt_tuning_init_text=config.init_text,
                                   tokenizer_name_or_path=config.tokenizer_name_or_path)
