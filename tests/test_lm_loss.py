"""The chunked LM head + cross-entropy: the same loss and gradients as the model's own, for every
method and architecture, with less memory where the vocabulary is large."""
from __future__ import annotations

import pytest
import torch

from conftest import make_tiny_model

# every trainable method, with small settings (the tiny models have 4 layers)
METHOD_SETTINGS = {
    "prompt_tuning": {"num_virtual_tokens": 4},
    "prefix_tuning": {"num_virtual_tokens": 3},
    "llama_adapter": {"adapter_layers": 2},
    "lora": {"rank": 4, "alpha": 8},
    "qlora": {"rank": 4, "alpha": 8},
    "full": {},
}


def applied(model_type: str, method: str, **overrides):
    from peftbook import apply, make_config

    model = make_tiny_model(model_type, **overrides)
    torch.manual_seed(0)
    apply(model, make_config(method, **METHOD_SETTINGS[method]))
    return model.train()


def batch(vocab: int = 128, length: int = 12):
    """Two rows: the first with an unlabelled prompt, the second right-padded (mask 0, label -100)."""
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(3, vocab, (2, length), generator=generator)
    labels, mask = ids.clone(), torch.ones_like(ids)
    labels[0, :4] = -100
    mask[1, -3:], labels[1, -3:] = 0, -100
    return ids, labels, mask


def loss_and_grads(model, ids, labels, mask, **options):
    from peftbook.lm_loss import causal_lm_loss

    model.zero_grad(set_to_none=True)
    torch.manual_seed(2)  # the same dropout masks (gpt2's) in both paths
    loss = causal_lm_loss(model, ids, labels, mask, **options)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.unit
@pytest.mark.parametrize("method", list(METHOD_SETTINGS))
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_chunked_loss_and_gradients_equal_the_models_own(method, reduction):
    model = applied("llama", method)
    ids, labels, mask = batch()
    expected, expected_grads = loss_and_grads(model, ids, labels, mask, reduction=reduction)
    chunked, grads = loss_and_grads(model, ids, labels, mask, reduction=reduction, chunk_tokens=5)
    assert chunked == pytest.approx(float(expected), rel=1e-6)
    assert grads.keys() == expected_grads.keys() and grads
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.unit
def test_mean_without_chunks_is_the_models_own_loss_and_sum_divides_to_it():
    from peftbook.lm_loss import causal_lm_loss

    model = applied("llama", "prompt_tuning")
    ids, labels, mask = batch()
    labels[0, 0] = ids[0, 0]  # the last virtual token predicts the first real one: counted, as in HF PEFT
    with torch.no_grad():
        own = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        assert causal_lm_loss(model, ids, labels, mask) == own
        summed = causal_lm_loss(model, ids, labels, mask, reduction="sum")
        chunked = causal_lm_loss(model, ids, labels, mask, reduction="sum", chunk_tokens=3)
    count = int((labels != -100).sum())  # every labelled token, the first real ones included
    assert float(summed) / count == pytest.approx(float(own), rel=1e-6)
    assert float(chunked) == pytest.approx(float(summed), rel=1e-6)


@pytest.mark.unit
def test_every_architecture_and_its_logit_scaling(model_type):
    # gemma2 soft-caps its logits; the others' heads are plain, some with a bias (gpt2's is tied, none)
    model = make_tiny_model(model_type).train()
    ids, labels, mask = batch()
    expected, expected_grads = loss_and_grads(model, ids, labels, mask)
    chunked, grads = loss_and_grads(model, ids, labels, mask, chunk_tokens=7)
    assert chunked == pytest.approx(float(expected), rel=1e-6)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.unit
@pytest.mark.parametrize("scaling", [{"logit_scale": 0.5}, {"logits_scaling": 4.0}])
def test_scaled_heads_like_cohere_and_granite(scaling):
    from peftbook.lm_loss import lm_head_of

    model = make_tiny_model("llama", **scaling)
    head = lm_head_of(model)
    assert head.scale == pytest.approx(0.5 if "logit_scale" in scaling else 0.25)


@pytest.mark.unit
def test_chunked_head_never_holds_the_full_logits():
    """Peak memory of forward + backward, counted exactly on CPU: with a 16k vocabulary over 64-wide
    hidden states, the (N, vocab) logits are the peak of the default step; chunks of 16 rows cut it."""
    from peftbook.memory import track_memory

    model = applied("llama", "lora", vocab_size=16384)
    ids, labels, mask = batch(vocab=16384, length=64)
    peaks = {}
    for chunk in (None, 16):
        with track_memory("cpu", model=model) as memory:
            loss_and_grads(model, ids, labels, mask, chunk_tokens=chunk)
        peaks[chunk] = memory.by_category["activations"] + memory.by_category["other"]
    logits_bytes = 2 * 64 * 16384 * 4
    assert peaks[None] > 2 * logits_bytes  # logits and log-softmax at least
    assert peaks[16] < peaks[None] - 1.5 * logits_bytes


@pytest.mark.unit
def test_no_gradient_work_without_grad():
    from peftbook.lm_loss import causal_lm_loss

    model = applied("llama", "lora")
    ids, labels, mask = batch()
    with torch.no_grad():
        loss = causal_lm_loss(model, ids, labels, mask, chunk_tokens=4)
    assert not loss.requires_grad and torch.isfinite(loss)


@pytest.mark.unit
@pytest.mark.parametrize("options, words", [
    ({"chunk_tokens": 0}, "loss_chunk_tokens"), ({"chunk_tokens": 2.5}, "loss_chunk_tokens"),
    ({"chunk_tokens": True}, "loss_chunk_tokens"), ({"reduction": "none"}, "reduction"),
])
def test_bad_options_are_refused(options, words):
    from peftbook.lm_loss import causal_lm_loss

    model = make_tiny_model("llama")
    ids, labels, mask = batch()
    with pytest.raises(ValueError, match=words):
        causal_lm_loss(model, ids, labels, mask, **options)


@pytest.mark.unit
def test_a_head_that_is_not_linear_is_refused():
    from peftbook.lm_loss import causal_lm_loss

    model = make_tiny_model("llama")
    model.lm_head = torch.nn.Sequential(model.lm_head)
    ids, labels, mask = batch()
    with pytest.raises(ValueError, match="nn.Linear.*Sequential"):
        causal_lm_loss(model, ids, labels, mask, chunk_tokens=4)


@pytest.mark.unit
def test_ignored_rows_add_nothing_and_get_no_gradient():
    from peftbook.lm_loss import LMHead, chunked_head_cross_entropy

    head = torch.nn.Linear(8, 50)
    rows = torch.randn(10, 8, requires_grad=True)
    targets = torch.randint(0, 50, (10,))
    targets[[1, 4, 5]] = -100
    kept = targets != -100
    every = chunked_head_cross_entropy(rows, targets, LMHead(head), 3)
    (grad_every,) = torch.autograd.grad(every, rows)
    expected = torch.nn.functional.cross_entropy(head(rows), targets, reduction="sum")
    (grad_expected,) = torch.autograd.grad(expected, rows)
    assert float(every) == pytest.approx(float(expected), rel=1e-6)
    torch.testing.assert_close(grad_every, grad_expected)
    assert torch.all(grad_every[~kept] == 0)


@pytest.mark.unit
def test_runs_under_fake_tensors_as_the_memory_simulator_does():
    """Fake labels have no values: every position goes through the head, with static shapes."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from peftbook import apply, make_config
    from peftbook.lm_loss import causal_lm_loss

    with FakeTensorMode():
        model = apply(make_tiny_model("llama"), make_config("lora", rank=4)).train()
        ids = torch.randint(3, 128, (2, 12))
        loss = causal_lm_loss(model, ids, ids, chunk_tokens=5)
        loss.backward()
    assert loss.shape == () and all(p.grad is not None for p in model.parameters() if p.requires_grad)
