"""The benchmark: every method on the same model, task and budget, one record per run.

``run_bench(model="tiny", task="sentiment", methods="all", seeds=(0,))`` runs the grid

* ``few_shot``: k=8 examples in the prompt, 5 draws of examples (the training-free row; mean and
  spread over draws);
* ``prompt_tuning``, ``prefix_tuning``, ``llama_adapter``, ``lora``, ``qlora``, ``full``: trained
  with ``peftbook.train`` for ``steps`` steps (same batch size and schedule), then evaluated once on
  the **test** split (hyperparameters were chosen on validation: ``methods.method_defaults``),

and returns records with the fields of the public contract (``method, model, task, seed, device,
trainable_params, total_params, peak_memory_bytes, memory_by_category, step_time_s, tokens_per_s,
metric, value, versions``) plus inference latency. Every method, its settings and its training
defaults come from the registry (``peftbook.methods.METHODS``); the records go to files through
``peftbook.results`` and to figures through ``peftbook.plots.plot_bench``.

``impl="hf-peft"`` builds LoRA, prompt tuning, prefix tuning and LLaMA-Adapter with Hugging Face
``peft`` instead (same hyperparameters, same loop), for comparison.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from peftbook.environment import versions
from peftbook.evaluate import evaluate
from peftbook.memory import track_memory
from peftbook.methods import (ALL_METHODS, HF_PEFT_METHODS, TRAINABLE_METHODS, apply, default_steps, get_method,
                              make_config, merge, method_defaults, trainable_parameters)
from peftbook.methods.few_shot import FewShotConfig, few_shot_curve, select_shots, task_with_demonstrations
from peftbook.models import load_model, parameter_count, resolve_device
from peftbook.plots import plot_bench, save_figure
from peftbook.precision import choose, dtype_name, precision_record
from peftbook.progress import progress_bar
from peftbook.results import read_results, summarize, write_results
from peftbook.tasks import load_task, with_train_examples
from peftbook.train import TrainConfig, train

IMPLS = ("peftbook", "hf-peft")
FEW_SHOT_K = get_method("few_shot").defaults["shots"]
FEW_SHOT_DRAWS = 5
# k-shot prompts are ~15x longer than one query: by default the few-shot row scores the first 200 test
# examples per draw (5 draws = 1000 scored prompts) to keep the bench within its CPU budget.
FEW_SHOT_EXAMPLES = 200
BATCH_SIZE = 16


def parse_methods(methods) -> list[str]:
    """``"all"``, a comma-separated string or a list -> known method names (in registry order)."""
    if isinstance(methods, str):
        methods = list(ALL_METHODS) if methods == "all" else [m for m in methods.split(",") if m]
    methods = list(ALL_METHODS) if list(methods) == ["all"] else list(methods)
    unknown = [m for m in methods if m not in ALL_METHODS]
    if unknown or not methods:
        raise ValueError(f"unknown method(s) {unknown or methods}; known: all, {', '.join(ALL_METHODS)}")
    return [m for m in ALL_METHODS if m in methods]


def bench_settings(model: str, task: str, steps: int, impl: str, device: str, task_name: str | None = None,
                   few_shot_draws: int = FEW_SHOT_DRAWS, few_shot_examples: int = FEW_SHOT_EXAMPLES,
                   train_examples: int | None = None, parameters: int | None = None, dtype: str = "fp32") -> dict:
    """What decides the value of a record; an output folder holds results of one setting only.
    ``parameters``: the model's parameter count, which picks the methods' defaults (``method_defaults``);
    ``dtype``: the precision the runs compute in ("fp32", "bf16": what ``dtype="auto"`` resolved to)."""
    return {"model": model, "task": task, "steps": steps, "impl": impl, "device": device, "dtype": dtype,
            "batch_size": BATCH_SIZE,
            "train_examples": train_examples,
            "few_shot": {"k": FEW_SHOT_K, "draws": few_shot_draws, "examples": few_shot_examples},
            "method_defaults": {m: method_defaults(m, task_name or task, parameters) for m in TRAINABLE_METHODS}}


def check_out_dir(out, settings: dict) -> list[dict]:
    """Records already in ``out`` for the same settings (a re-run resumes); different settings raise."""
    if out is None or not (Path(out) / "results.json").exists():
        return []
    saved = read_results(out)
    if json.loads(json.dumps(saved.get("settings"))) != json.loads(json.dumps(settings)):
        differing = sorted(k for k in set(settings) | set(saved.get("settings") or {})
                           if (saved.get("settings") or {}).get(k) != json.loads(json.dumps(settings)).get(k))
        raise ValueError(f"{out} already holds benchmark results of a different configuration (differs in: "
                         f"{', '.join(differing)}); choose another --out or remove that folder")
    return [r for r in saved.get("records", []) if not r.get("error")]


# ---------------------------------------------------------------- one run

def check_hf_peft() -> None:
    """Raise a clear error when ``--impl hf-peft`` is asked for without the ``peft`` package."""
    try:
        import peft  # noqa: F401
    except ImportError:
        raise RuntimeError("--impl hf-peft needs the `peft` package, which is not installed "
                           "(pip install 'peft>=0.18,<0.22'), or use --impl peftbook") from None


def apply_hf_peft(model, config):
    """The same method built with Hugging Face PEFT (for comparison); returns the PeftModel."""
    import peft

    method = get_method(config.method)
    if method.hf_peft is None:
        raise ValueError(f"--impl hf-peft covers {', '.join(HF_PEFT_METHODS)}; {config.method!r} runs with --impl peftbook")
    return peft.get_peft_model(model, method.hf_peft(model, config))


def run_few_shot(model_name: str, task, seed: int, device: str, eval_examples: int | None = None,
                 draws: int = FEW_SHOT_DRAWS, examples: int | None = FEW_SHOT_EXAMPLES, dtype: str = "auto") -> dict:
    """The training-free row: ``draws`` draws of k demonstrations, each scored on the first test examples.

    Latency is ``peftbook.evaluate``'s, like every other method's, on the task with one draw's
    demonstrations written into its prompt; memory is that of one such prompt at batch size 1.
    """
    model, tokenizer = load_model(model_name, device=device, dtype=dtype)
    n_examples = min(x for x in (eval_examples, examples, len(task.examples("test"))) if x is not None)
    start = time.perf_counter()
    curve = few_shot_curve(model, tokenizer, task, [FEW_SHOT_K], draws=draws, seed=seed * draws,
                           num_examples=n_examples)[0]
    seconds = time.perf_counter() - start
    with_shots = task_with_demonstrations(task, select_shots(task.examples("train"), FewShotConfig(shots=FEW_SHOT_K, seed=seed)))
    with track_memory(next(model.parameters()).device, model=model) as memory:
        evaluate(model, tokenizer, with_shots, "test", max_examples=1, latency_examples=0)
    latency = evaluate(model, tokenizer, with_shots, "test", max_examples=8)["latency_s"]
    tokens = [len(tokenizer(with_shots.prompt(e))["input_ids"]) for e in task.examples("test")[:8]]
    _, total = trainable_parameters(model)
    peak = memory.report.peak_summary()
    return {"trainable_params": 0, "total_params": total, "trainable_closed_form": 0,
            "value": curve["mean"], "value_std": curve["std"], "values": curve["values"],
            **{key: curve[key] for key in ("shots_used", "bleu", "rougeL") if key in curve},
            "peak_memory_bytes": peak["peak_bytes"], "memory_by_category": peak["by_category"],
            "memory_phase": "inference", "n_test_examples": n_examples, "latency_s": latency,
            "prompt_tokens": sum(tokens) / len(tokens), "train_seconds": 0.0, "eval_seconds": seconds,
            "step_time_s": None, "tokens_per_s": None, "precision": precision_record(model)}


def train_config(method: str, task, steps: int, seed: int, parameters: int | None = None, **overrides) -> TrainConfig:
    """The benchmark's training schedule for ``method`` (its learning rate for a model of ``parameters``
    parameters, warm-up then cosine)."""
    lr = method_defaults(method, task, parameters)["lr"]
    return TrainConfig(**{"steps": steps, "batch_size": BATCH_SIZE, "lr": lr, "warmup": max(1, steps // 10),
                          "schedule": "cosine", "seed": seed, **overrides})


def run_trained(model_name: str, task, method: str, seed: int, steps: int, impl: str, device: str,
                out_dir: Path | None, progress: bool = True, eval_examples: int | None = None,
                lr: float | None = None, test: bool = True, parameters: int | None = None, dtype: str = "auto") -> dict:
    """Train one method and score it; ``test=False`` stops after the validation score (tuning).
    ``parameters``: the model's parameter count (``models.parameter_count``), which picks the defaults."""
    defaults = method_defaults(method, task, parameters)
    model, tokenizer = load_model(model_name, device=device, dtype=dtype)
    torch.manual_seed(seed)  # the method's random init (LoRA's A, prompts) depends on the seed
    config = make_config(method, **defaults["config"])
    if impl == "hf-peft":
        model = apply_hf_peft(model, config)
    else:
        apply(model, config)
    trainable, total = trainable_parameters(model)
    closed_form = get_method(method).module.num_trainable(model.config, config)
    lr = defaults["lr"] if lr is None else lr
    settings = train_config(method, task, steps, seed, lr=lr, eval_examples=min(eval_examples or 200, 200),
                            progress=progress, out_dir=str(out_dir) if out_dir else None, save_adapter=False,
                            overwrite=True)  # the bench's own run folder: a re-run replaces it
    start = time.perf_counter()
    result = train(model, tokenizer, task, settings)
    train_seconds = time.perf_counter() - start
    if result.interrupted:
        raise KeyboardInterrupt
    if not test:
        return {"validation_value": result.evals[-1]["value"], "final_loss": result.losses[-1], "lr": lr}
    scores = evaluate(model, tokenizer, task, "test", max_examples=eval_examples)
    record = {"trainable_params": trainable, "total_params": total, "trainable_closed_form": closed_form,
              "value": scores["value"], "n_test_examples": scores["n_examples"],
              "validation_value": result.evals[-1]["value"] if result.evals else None,
              "peak_memory_bytes": result.memory and result.memory["peak_bytes"],
              "memory_by_category": result.memory and result.memory["by_category"], "memory_phase": "training",
              "step_time_s": result.step_time_s, "tokens_per_s": result.tokens_per_s,
              "latency_s": scores["latency_s"], "train_seconds": train_seconds, "lr": lr, "precision": result.precision,
              "final_loss": result.losses[-1], "losses": result.losses}
    for key in ("bleu", "rougeL"):
        if key in scores:
            record[key] = scores[key]
    if get_method(method).merges and impl == "peftbook":  # merged: LoRA costs nothing at inference
        merge(model, unload=True)  # merged and unwrapped: a plain model with new weights
        record["latency_merged_s"] = evaluate(model, tokenizer, task, "test", max_examples=8)["latency_s"]
    return record


def tune_learning_rates(model: str, task: str, methods="all", steps: int | None = None,
                        grid=(1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1), seed: int = 0, device: str = "auto",
                        eval_examples: int | None = 200, train_examples: int | None = None,
                        log=print) -> dict[str, dict[float, float]]:
    """Validation metric per learning rate of each trained method (the test split is never touched)."""
    task_obj = with_train_examples(load_task(task), train_examples)
    steps = default_steps(task_obj) if steps is None else steps
    parameters = parameter_count(model)
    table: dict[str, dict[float, float]] = {}
    for method in [m for m in parse_methods(methods) if m in TRAINABLE_METHODS]:
        table[method] = {}
        for lr in grid:
            fields = run_trained(model, task_obj, method, seed, steps, "peftbook", device, None, progress=False,
                                 eval_examples=eval_examples, lr=lr, test=False, parameters=parameters)
            table[method][lr] = fields["validation_value"]
            log(f"[tune] {method} lr={lr:g}: validation {task_obj.metric} {fields['validation_value']:.4f}",
                file=sys.stderr)
    return table


# ---------------------------------------------------------------- the grid

def run_bench(model: str = "tiny", task: str = "sentiment", methods="all", steps: int | None = None,
              seeds=(0,), impl: str = "peftbook", out=None, device: str = "auto", dtype: str = "auto", progress: bool = True,
              eval_examples: int | None = None, few_shot_draws: int = FEW_SHOT_DRAWS,
              few_shot_examples: int = FEW_SHOT_EXAMPLES, train_examples: int | None = None, log=print) -> list[dict]:
    """Run the grid; returns the records (also written to ``out`` after every run).

    Args:
        model: "tiny", a local directory or a hub id.
        task: a task name or directory (``peftbook.tasks.load_task``).
        methods: "all", a comma-separated string or a list of registry names (``methods.ALL_METHODS``).
        steps: training steps of every trained method (default per task: ``methods.default_steps``).
        seeds: one run per method and seed.
        impl: "peftbook" or "hf-peft" (HF PEFT builds the methods that have ``hf_peft`` in the registry).
        out: folder for results.json / results.csv / plots / per-run histories; a folder holding
            results of a different configuration is refused; the same configuration resumes.
        dtype: "auto" (bf16 on CUDA and on a CPU with native bf16, fp32 elsewhere), "fp32" or "bf16".
        eval_examples: evaluate on the first N test examples only (smoke runs).
        few_shot_draws, few_shot_examples: draws of the few-shot demonstrations, test examples per draw.
        train_examples: every method (few-shot's demonstrations too) learns from the first N training
            examples only (``tasks.with_train_examples``; None: all of them).
    """
    methods = parse_methods(methods)
    if impl not in IMPLS:
        raise ValueError(f"impl {impl!r} is not allowed; allowed: {', '.join(IMPLS)}")
    if impl == "hf-peft":
        check_hf_peft()
        skipped = [m for m in methods if m not in HF_PEFT_METHODS]
        if skipped:
            log(f"[bench] --impl hf-peft: skipping {', '.join(skipped)} (HF PEFT has no such method here)",
                file=sys.stderr)
        methods = [m for m in methods if m in HF_PEFT_METHODS]
    task_obj = with_train_examples(load_task(task), train_examples)
    steps = default_steps(task_obj) if steps is None else steps
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if few_shot_draws < 1 or few_shot_examples < 1:
        raise ValueError(f"few_shot_draws and few_shot_examples must be >= 1, got {few_shot_draws} and "
                         f"{few_shot_examples}")
    seeds = list(seeds)
    if not seeds:
        raise ValueError("give at least one seed")
    parameters = parameter_count(model)  # a missing model fails here, before any work
    device_name = resolve_device(device).type
    dtype_chosen = dtype_name(choose(dtype, torch.device(device_name))[0])  # a bad dtype fails here
    settings = bench_settings(str(model), str(task), steps, impl, device_name, task_obj.name, few_shot_draws,
                              few_shot_examples, train_examples, parameters, dtype_chosen)
    records = check_out_dir(out, settings)
    done = {(r["method"], r["seed"]) for r in records}
    if done:
        log(f"[bench] {out}: reusing {len(done)} finished run(s) of the same configuration", file=sys.stderr)
    info = versions(("peft",) if impl == "hf-peft" else ())
    runs = progress_bar(total=len(methods) * len(seeds), desc="bench", disable=not progress)
    for method in methods:
        for seed in seeds:
            runs.set_postfix_str(f"{method} seed={seed}")  # the run in progress
            if (method, seed) in done:
                runs.update()
                continue
            base = {"method": method, "model": str(model), "task": task_obj.name, "seed": seed, "device": device_name,
                    "metric": task_obj.metric, "versions": info, "impl": impl, "train_examples": train_examples,
                    "steps": steps if get_method(method).trains else 0}
            try:
                if not get_method(method).trains:
                    fields = run_few_shot(model, task_obj, seed, device, eval_examples, few_shot_draws,
                                          few_shot_examples, dtype)
                else:
                    run_dir = Path(out) / "runs" / f"{method}-seed{seed}" if out else None
                    fields = run_trained(model, task_obj, method, seed, steps, impl, device, run_dir, progress,
                                         eval_examples, parameters=parameters, dtype=dtype)
            except KeyboardInterrupt:
                log("[bench] interrupted: the finished runs are saved", file=sys.stderr)
                if out:
                    write_results(records, out, settings)
                raise
            except (RuntimeError, ValueError, NotImplementedError, TypeError, AttributeError) as error:
                fields = {"error": f"{type(error).__name__}: {error}"}
                log(f"[bench] {method} seed={seed} failed: {fields['error']}", file=sys.stderr)
            records.append({**base, **fields})
            if out:
                write_results(records, out, settings)
            runs.update()
    runs.set_postfix_str(f"{len(records)} runs")
    runs.close()
    if out:
        write_results(records, out, settings)
        save_plots(records, out)
    return records


def save_plots(records: list[dict], out) -> list[Path]:
    """The benchmark's figures (``plots.plot_bench``) as PNG files in ``out``."""
    rows = [r for r in summarize(records) if not r.get("error")]
    if not rows:
        return []
    return [save_figure(fig, Path(out) / f"{stem}.png") for stem, fig in plot_bench(rows).items()]


def table_footnote(metric: str, draws: int = FEW_SHOT_DRAWS) -> str:
    """What the columns of ``results.format_table`` measured in a benchmark run."""
    return (f"metric: test {metric}, mean±sd over n seeds (one seed of few-shot: sd over its {draws} draws of "
            f"k={FEW_SHOT_K}); "
            "peak MB: training step (few-shot: inference); latency: batch 1, /…m = merged LoRA")
