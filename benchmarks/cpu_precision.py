"""fp32 against the automatic precision on this CPU, every method on SmolLM2-135M, in one run.

``dtype="auto"`` computes in bf16 on a CPU with native bf16 (``peftbook.precision``): bf16 frozen
weights, fp32 trainable ones (master weights), bf16 autocast. This script measures what that buys
and what it costs, each (method, seed) in fp32 and in ``auto`` one after the other, so that a change
in the machine's load touches both columns alike:

* training: seconds per step at the benchmark's schedule (``bench.train_config``: batch 16, the
  large-model learning rate, warm-up then cosine; the median over the steps after the two measured
  by the memory tracker), and the peak memory of those first steps (``track_memory``: live tensors);
* accuracy: validation accuracy (sentiment3, the first ``--validation`` examples; the test split is
  only timed, never scored) after ``--steps`` steps, for ``--seeds`` seeds, and the paired difference;
* evaluation: examples per second scoring the first ``--test`` test examples (the trained model, seed 0),
  few-shot's 8-shot prompts included.

Results go to a JSON file as each run finishes (a re-run with the same settings resumes), and a
markdown table is printed.

    python benchmarks/cpu_precision.py --json benchmarks/results/cpu_precision.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

METHODS = ("prompt_tuning", "prefix_tuning", "llama_adapter", "lora", "qlora", "full")
DTYPES = ("fp32", "auto")
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}  # t quantiles


def train_once(model_name: str, task, method: str, dtype: str, seed: int, steps: int, validation: int,
               test: int | None) -> dict:
    import torch

    import peftbook
    from peftbook.bench import train_config
    from peftbook.methods import apply, make_config, method_defaults
    from peftbook.models import parameter_count
    from peftbook.precision import model_dtype, dtype_name

    parameters = parameter_count(model_name)
    defaults = method_defaults(method, task, parameters)
    model, tokenizer = peftbook.load_model(model_name, dtype=dtype, device="cpu")
    torch.manual_seed(seed)
    apply(model, make_config(method, **defaults["config"]))
    start = time.perf_counter()
    settings = train_config(method, task, steps, seed, parameters, progress=False, final_eval=False)
    result = peftbook.train(model, tokenizer, task, settings)
    train_seconds = time.perf_counter() - start
    if result.interrupted:  # Ctrl-C or SIGTERM: train returned early; stop here, the finished runs are saved
        raise KeyboardInterrupt
    scores = peftbook.evaluate(model, tokenizer, task, "validation", max_examples=validation, latency_examples=0)
    run = {"method": method, "dtype": dtype, "computed_in": dtype_name(model_dtype(model)), "seed": seed,
           "lr": settings.lr, "steps": steps, "step_time_s": result.step_time_s,
           "peak_memory_bytes": result.memory["peak_bytes"], "train_seconds": train_seconds,
           "validation": scores["value"], "n_validation": scores["n_examples"],
           "first_loss": result.losses[0], "final_loss": result.losses[-1], "precision": result.precision}
    if test:
        timed = peftbook.evaluate(model, tokenizer, task, "test", max_examples=test, latency_examples=0)
        run["eval_examples_per_s"] = 1 / timed["seconds_per_example"]
        run["n_timed"] = timed["n_examples"]
    return run


def few_shot_once(model_name: str, task, dtype: str, test: int) -> dict:
    import peftbook
    from peftbook.methods.few_shot import FewShotConfig, few_shot_curve
    from peftbook.precision import model_dtype, dtype_name

    model, tokenizer = peftbook.load_model(model_name, dtype=dtype, device="cpu")
    start = time.perf_counter()
    curve = few_shot_curve(model, tokenizer, task, [FewShotConfig().shots], draws=1, seed=0, num_examples=test)[0]
    seconds = time.perf_counter() - start
    return {"method": "few_shot", "dtype": dtype, "computed_in": dtype_name(model_dtype(model)), "seed": 0,
            "eval_examples_per_s": test / seconds, "n_timed": test,
            "shots": FewShotConfig().shots, "test_accuracy_8shot": curve["mean"]}


def summary(runs: list[dict]) -> list[dict]:
    """Per method: medians and means of each column in fp32 and auto, and their ratios."""
    rows = []
    for method in ("few_shot", *METHODS):
        by = {d: [r for r in runs if r["method"] == method and r["dtype"] == d] for d in DTYPES}
        if not all(by.values()):
            continue
        row = {"method": method, "computed_in": by["auto"][0]["computed_in"]}
        speeds = {d: [r["eval_examples_per_s"] for r in by[d] if "eval_examples_per_s" in r] for d in DTYPES}
        if all(speeds.values()):
            row.update({f"eval_per_s_{d}": statistics.median(speeds[d]) for d in DTYPES})
            row["eval_speedup"] = row["eval_per_s_auto"] / row["eval_per_s_fp32"]
        if method != "few_shot":
            for d in DTYPES:
                row[f"step_s_{d}"] = statistics.median(r["step_time_s"] for r in by[d])
                row[f"peak_mib_{d}"] = statistics.median(r["peak_memory_bytes"] for r in by[d]) / 2**20
                row[f"validation_{d}"] = [r["validation"] for r in sorted(by[d], key=lambda r: r["seed"])]
            row["train_speedup"] = row["step_s_fp32"] / row["step_s_auto"]
            pairs = {r["seed"]: r["validation"] for r in by["fp32"]}
            diffs = [r["validation"] - pairs[r["seed"]] for r in by["auto"] if r["seed"] in pairs]
            row["paired_diff_mean"] = statistics.mean(diffs)
            row["paired_diff_sd"] = statistics.stdev(diffs) if len(diffs) > 1 else None
            if len(diffs) > 1:  # a t interval over seeds: the two precisions differ where it excludes 0
                half = T_975[len(diffs) - 1] * row["paired_diff_sd"] / len(diffs) ** 0.5
                row["paired_diff_ci95"] = [row["paired_diff_mean"] - half, row["paired_diff_mean"] + half]
            row["fp32_seed_sd"] = statistics.stdev(row["validation_fp32"]) if len(row["validation_fp32"]) > 1 else None
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| method | step s fp32 | step s auto | training | eval ex/s fp32 | eval ex/s auto | evaluation | "
             "peak MiB fp32 | peak MiB auto | validation fp32 (seeds) | validation auto (seeds) | auto - fp32 (95% CI, paired) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|"]
    for r in rows:
        def get(key, fmt):
            return format(r[key], fmt) if r.get(key) is not None else "-"
        def seeds(key):
            return " / ".join(f"{v:.3f}" for v in r[key]) if key in r else "-"
        diff = (f"{r['paired_diff_mean']:+.3f} [{r['paired_diff_ci95'][0]:+.3f}, {r['paired_diff_ci95'][1]:+.3f}]"
                if r.get("paired_diff_ci95") else "-")
        lines.append(f"| {r['method']} | {get('step_s_fp32', '.2f')} | {get('step_s_auto', '.2f')} | "
                     f"{get('train_speedup', '.2f')}x | {get('eval_per_s_fp32', '.1f')} | {get('eval_per_s_auto', '.1f')} | "
                     f"{get('eval_speedup', '.2f')}x | {get('peak_mib_fp32', ',.0f')} | {get('peak_mib_auto', ',.0f')} | "
                     f"{seeds('validation_fp32')} | {seeds('validation_auto')} | {diff} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--task", default="sentiment3")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--steps", type=int, default=20, help="training steps (the large-model schedule: 20)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--validation", type=int, default=300, help="validation examples scored")
    parser.add_argument("--test", type=int, default=300, help="test examples timed (never scored)")
    parser.add_argument("--json", default="benchmarks/results/cpu_precision.json")
    args = parser.parse_args(argv)

    import torch

    import peftbook
    from peftbook.environment import versions
    from peftbook.precision import native_bf16

    task = peftbook.load_task(args.task)
    settings = {k: getattr(args, k) for k in ("model", "task", "steps", "seeds", "validation", "test")}
    out = Path(args.json)
    document = json.loads(out.read_text()) if out.exists() else {}
    runs = document.get("runs", []) if document.get("settings") == settings else []
    done = {(r["method"], r["dtype"], r["seed"]) for r in runs}
    native, why = native_bf16()
    header = {"settings": settings, "native_bf16": native, "reason": why, "threads": torch.get_num_threads(),
              "versions": versions()}

    def save():
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({**header, "runs": runs, "summary": summary(runs)}, indent=1))

    started = time.perf_counter()
    jobs = [("few_shot", d, 0) for d in DTYPES]
    jobs += [(m, d, s) for s in range(args.seeds) for m in args.methods.split(",") for d in DTYPES]
    for method, dtype, seed in jobs:
        if (method, dtype, seed) in done:
            continue
        if method == "few_shot":
            run = few_shot_once(args.model, task, dtype, min(args.test, 200))
        else:
            run = train_once(args.model, task, method, dtype, seed, args.steps, args.validation,
                             args.test if seed == 0 else None)
        runs.append(run)
        save()
        print(f"[{time.perf_counter() - started:6.0f} s] {method} {dtype} seed {seed}: "
              + ", ".join(f"{k} {v:.4g}" for k, v in run.items() if isinstance(v, float)), file=sys.stderr, flush=True)
    save()
    print(table(summary(runs)))


if __name__ == "__main__":
    main()
