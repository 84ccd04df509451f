"""The causal-LM loss of a training step, optionally with a chunked LM head + cross-entropy.

``causal_lm_loss(model, input_ids, labels, ...)`` is the one function ``train`` (and the memory
simulator) calls for the loss. Labels follow Hugging Face's convention: position ``t`` predicts
``labels[t + 1]``, -100 is ignored, and a method that prepends virtual tokens (prompt tuning) gets
-100 for them, so the last virtual token predicts the first real token when that one is labelled.

Why chunk: at short sequences the logits dominate a step's activations. The LM head turns
``(B, T, hidden)`` into ``(B, T, vocab)``; with SmolLM2's 49,152-token vocabulary that is 85x the
hidden states (576), and the default step keeps several such tensors at once (the logits, the
fp32 log-softmax that cross-entropy saves for backward, the gradient of the logits in backward)::

    default:  hidden (N, H) ──lm_head──> logits (N, V) ──log_softmax──> (N, V) ──> loss
    chunked:  hidden (N, H) ──> for each chunk of C rows: logits (C, V) -> loss_c, d loss_c/d logits_c
                                                         -> d/d hidden_c, d/d W  (then freed)

With ``chunk_tokens=C`` only the labelled rows go through the head, ``C`` at a time, and each
chunk's gradient with respect to its hidden states (and to the head's weight and bias, when they
train) is computed right there, in the forward pass, while the chunk's logits exist. Backward only
scales those stored gradients by the incoming gradient. So the full ``(N, vocab)`` logits never
exist, neither in forward nor in backward, and no logits are recomputed (the recompute that
``torch.utils.checkpoint`` would do costs a second head matmul). Liger-Kernel's "fused linear
cross-entropy" (Hsu et al. 2024, arXiv 2410.10989) does the same in Triton kernels; Cut Your Losses
(Wijmans et al. 2024, arXiv 2411.09009) goes further with kernels that never store even a chunk's
logits. This is plain PyTorch, so it runs on CPU and under the memory simulator's fake tensors.
``benchmarks/README.md`` has what it saves in a whole training step (``vs_peft.py --saving``).

What the head computes is read from the model: its output embedding must be an ``nn.Linear``
(weight and optional bias), and the scalings some architectures put after it (gemma2's
``final_logit_softcapping``, cohere's ``logit_scale``, granite's ``logits_scaling``) are applied
the same way; anything else is refused with a clear error. The final hidden states are taken at the
input of the output embedding (a forward pre-hook that hands the head a zero-length slice), so every
peftbook method works unchanged: prompt tuning's virtual tokens, prefix tuning's cache and
LLaMA-Adapter's gated attention all happen inside the model body.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from peftbook.batching import IGNORE_INDEX
from peftbook.errors import ConfigError

REDUCTIONS = ("mean", "sum")


def check_chunk_tokens(chunk_tokens) -> None:
    """Raise unless ``chunk_tokens`` is None (no chunking) or a positive integer."""
    if chunk_tokens is not None and (isinstance(chunk_tokens, bool) or not isinstance(chunk_tokens, int)
                                     or chunk_tokens < 1):
        raise ConfigError(f"loss_chunk_tokens must be None (no chunking) or an integer >= 1, got {chunk_tokens!r}")


def causal_lm_loss(model: nn.Module, input_ids: torch.Tensor, labels: torch.Tensor,
                   attention_mask: torch.Tensor | None = None, chunk_tokens: int | None = None,
                   reduction: str = "mean") -> torch.Tensor:
    """Next-token cross-entropy of ``model`` on ``input_ids`` against ``labels`` (-100 ignored).

    Args:
        model: a causal LM (any peftbook method applied), or a DDP-style wrapper with ``.module``.
        input_ids, labels: (B, T); labels -100 where no loss is wanted.
        attention_mask: (B, T) or None.
        chunk_tokens: None runs the model's own head and loss: with ``reduction="mean"`` exactly
            ``model(..., labels=labels).loss``. An integer runs the head and cross-entropy over at most
            that many labelled tokens at a time (see the module docstring); same value, less memory.
        reduction: "mean" over labelled tokens (Hugging Face's), or "sum" (``train`` divides the sum by
            the labelled tokens of the whole global batch itself).
    """
    check_chunk_tokens(chunk_tokens)
    if reduction not in REDUCTIONS:
        raise ConfigError(f"reduction {reduction!r} is not allowed; allowed: {', '.join(REDUCTIONS)}")
    if chunk_tokens is None:
        if reduction == "mean":
            return model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        return target_token_loss(model(input_ids=input_ids, attention_mask=attention_mask).logits, labels)
    inner = getattr(model, "module", model)  # DDP / Accelerate wrappers keep the model in .module
    head = lm_head_of(inner)
    hidden = final_hidden_states(model, inner, input_ids, attention_mask)  # (B, L, hidden), L >= T
    labels = align_labels(labels, hidden.shape[1])  # (B, L)
    targets = labels[:, 1:]  # (B, L-1): position t predicts token t+1
    keep = targets != IGNORE_INDEX
    if is_fake(hidden):  # the memory simulator: labels have no values, so every position goes (static shapes)
        rows, targets = hidden[:, :-1].reshape(-1, hidden.shape[-1]), targets.reshape(-1)  # (B*(L-1), hidden)
    else:
        rows, targets = hidden[:, :-1][keep], targets[keep]  # (M, hidden): only labelled positions meet the head
    summed = chunked_head_cross_entropy(rows, targets, head, chunk_tokens)
    return summed if reduction == "sum" else summed / keep.sum()


def is_fake(tensor: torch.Tensor) -> bool:
    from torch._subclasses.fake_tensor import is_fake as fake

    return fake(tensor)


def target_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed next-token cross-entropy over labelled positions (the unchunked path).

    Methods that prepend virtual tokens return logits longer than the labels: the labels are padded
    with -100 in front (as prompt tuning's hook pads them for ``model(..., labels=...)``).
    """
    labels = align_labels(labels, logits.shape[1])
    return F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                           ignore_index=IGNORE_INDEX, reduction="sum")


def align_labels(labels: torch.Tensor, length: int) -> torch.Tensor:
    """(B, T) labels -> (B, length), -100 in front for the virtual tokens a method prepended."""
    extra = length - labels.shape[1]
    if extra < 0:
        raise ValueError(f"the model returned {length} positions for {labels.shape[1]} labels")
    return F.pad(labels, (extra, 0), value=IGNORE_INDEX) if extra else labels


class LMHead:
    """What the output layer computes: ``softcap(scale * (h W^T + b))``, read from the model."""

    def __init__(self, module: nn.Linear, scale: float = 1.0, softcap: float | None = None):
        self.module, self.scale, self.softcap = module, scale, softcap


def lm_head_of(model: nn.Module) -> LMHead:
    """The model's output layer and the scaling/soft-capping its forward applies after it."""
    module = model.get_output_embeddings()
    if type(module) is not nn.Linear:
        raise ConfigError(f"loss_chunk_tokens needs the output layer to be an nn.Linear, this "
                          f"{model.config.model_type} model has {type(module).__name__}; use loss_chunk_tokens=None")
    config = model.config
    scale = float(getattr(config, "logit_scale", None) or 1.0)  # cohere multiplies
    scale /= float(getattr(config, "logits_scaling", None) or 1.0)  # granite divides
    return LMHead(module, scale, getattr(config, "final_logit_softcapping", None))


def final_hidden_states(model: nn.Module, inner: nn.Module, input_ids, attention_mask) -> torch.Tensor:
    """The hidden states the output layer would see, (B, L, hidden), without computing the logits.

    A forward pre-hook on the output layer keeps its input and hands it a zero-length slice instead,
    so the model's own forward runs (every method's hooks and wrappers included) and its head does no work.
    """
    captured = []

    def take_input(module, args):
        captured.append(args[0])
        return (args[0][..., :0, :], *args[1:])  # (B, 0, hidden): the head's matmul is empty

    handle = inner.get_output_embeddings().register_forward_pre_hook(take_input)
    try:
        model(input_ids=input_ids, attention_mask=attention_mask)
    finally:
        handle.remove()
    if len(captured) != 1:
        raise RuntimeError(f"the output layer ran {len(captured)} times in one forward; expected once")
    return captured[0]


def chunked_head_cross_entropy(rows: torch.Tensor, targets: torch.Tensor, head: LMHead,
                               chunk_tokens: int) -> torch.Tensor:
    """Summed cross-entropy of ``head(rows)`` (M, vocab) against ``targets`` (M,), ``chunk_tokens`` rows at a
    time; rows whose target is -100 add nothing (and get no gradient)."""
    weight, bias = head.module.weight, head.module.bias
    wants_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (rows, weight, bias))
    # masking costs a pass over each chunk's logits: only when some row may be ignored (fake targets: unknown)
    masked = is_fake(targets) or bool((targets == IGNORE_INDEX).any())
    return _ChunkedHeadCrossEntropy.apply(rows, weight, bias, targets, chunk_tokens, head.scale, head.softcap,
                                          wants_grad, masked)


class _ChunkedHeadCrossEntropy(torch.autograd.Function):
    """Loss and gradients chunk by chunk in forward; backward scales the stored gradients."""

    @staticmethod
    def forward(ctx, rows, weight, bias, targets, chunk_tokens, scale, softcap, wants_grad, masked):
        need_rows = wants_grad and rows.requires_grad
        need_weight = wants_grad and weight.requires_grad
        need_bias = wants_grad and bias is not None and bias.requires_grad
        total = torch.zeros((), dtype=torch.float32, device=rows.device)
        grad_rows = torch.empty_like(rows) if need_rows else None  # (M, hidden)
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_weight else None
        grad_bias = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if need_bias else None
        for start in range(0, rows.shape[0], chunk_tokens):
            chunk = rows[start:start + chunk_tokens]  # (C, hidden)
            target = targets[start:start + chunk_tokens]  # (C,)
            logits = F.linear(chunk, weight, bias)  # (C, vocab), the head's dtype (bf16 under autocast)
            z = logits.float() * scale if scale != 1.0 else logits.float()  # (C, vocab), fp32 as HF's loss
            if softcap is not None:
                capped = torch.tanh(z / softcap)  # (C, vocab)
                z = softcap * capped
            log_norm = torch.logsumexp(z, dim=-1)  # (C,)
            if masked:
                valid = target != IGNORE_INDEX  # (C,)
                target = target.clamp(min=0)
                total += ((log_norm - z.gather(1, target[:, None])[:, 0]) * valid).sum()
            else:
                total += (log_norm - z.gather(1, target[:, None])[:, 0]).sum()
            if not (need_rows or need_weight or need_bias):
                continue
            # softmax in place: z is this chunk's own tensor (the logits themselves when they are fp32 and
            # unscaled, and they are not needed again), so the chunk holds one (C, vocab) tensor, not two
            grad = z.sub_(log_norm[:, None]).exp_()  # (C, vocab): softmax
            grad[torch.arange(len(target), device=grad.device), target] -= 1  # d loss / d z
            if masked:
                grad *= valid[:, None]  # ignored rows: no gradient
            if softcap is not None:
                grad *= 1 - capped * capped  # d softcap*tanh(x/softcap) / dx
            if scale != 1.0:
                grad *= scale
            grad = grad.to(logits.dtype)  # (C, vocab): what autograd would hand the head
            del z, logits
            if need_rows:
                grad_rows[start:start + chunk_tokens] = grad @ weight  # (C, hidden)
            if need_weight:
                grad_weight += (grad.T @ chunk.to(grad.dtype)).float()  # (vocab, hidden)
            if need_bias:
                grad_bias += grad.float().sum(0)  # (vocab,)
        ctx.save_for_backward(grad_rows, grad_weight, grad_bias)
        ctx.dtypes = (rows.dtype, weight.dtype, None if bias is None else bias.dtype)
        return total

    @staticmethod
    def backward(ctx, grad_output):
        grad_rows, grad_weight, grad_bias = ctx.saved_tensors
        rows_dtype, weight_dtype, bias_dtype = ctx.dtypes
        scaled = [None if g is None else (g * grad_output).to(dtype)
                  for g, dtype in ((grad_rows, rows_dtype), (grad_weight, weight_dtype), (grad_bias, bias_dtype))]
        return (*scaled, None, None, None, None, None, None)


__all__ = ["causal_lm_loss", "target_token_loss", "check_chunk_tokens", "align_labels", "REDUCTIONS"]
