"""Learning rates for a 135M model: a sweep on SmolLM2-135M-Instruct, chosen on validation.

The registry's learning rates (``peftbook.methods.METHODS``) were chosen on the 3.3M-parameter tiny
base. A model of ``LARGE_MODEL_PARAMETERS`` or more takes each method's ``large_model`` settings
instead; this script is how they were chosen. It trains each method at a few learning rates with the
benchmark's own schedule (``bench.train_config``: batch 16, warm-up then cosine, the same seed and
examples), on top of the defaults ``method_defaults`` gives this model, and reads the accuracy on the
*validation* split (the test split is never looked at here). Rows with a config override (prefix tuning
from N(0, 1), HF PEFT's init) show what a setting changes at the same rates. Writes one JSON document
(every run: lr, validation accuracy, first and last training loss, seconds) and prints a markdown table.

    python benchmarks/smollm2_lr.py --task sentiment3 --steps 20 --json benchmarks/results/smollm2_lr.json
"""
from __future__ import annotations

import argparse
import json
import time

# (method, config fields over the model's defaults, learning rates)
ROWS = [
    ("prompt_tuning", {}, (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)),
    ("prompt_tuning", {"init": "text", "init_text": "positive negative moderate"}, (1e-3, 3e-3, 1e-2)),
    ("prefix_tuning", {}, (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)),
    ("prefix_tuning", {"init": "random"}, (1e-2, 1e-1)),
    ("llama_adapter", {}, (3e-3, 1e-2, 3e-2, 1e-1)),
    ("lora", {}, (3e-4, 1e-3, 3e-3, 1e-2)),
    ("qlora", {}, (3e-4, 1e-3, 3e-3, 1e-2)),
    ("full", {}, (3e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3)),
]


def run(model_name: str, task_name: str, methods: list[str], steps: int, eval_examples: int, seed: int,
        only_lrs=None, rows: str = "all") -> list[dict]:
    import torch

    import peftbook
    from peftbook.bench import train_config
    from peftbook.methods import apply, make_config, method_defaults
    from peftbook.models import parameter_count
    from peftbook.train import train

    task = peftbook.load_task(task_name)
    parameters = parameter_count(model_name)
    runs = []
    wanted = {"all": (True, False), "plain": (False,), "overridden": (True,)}[rows]  # has a config override?
    for method, fields, grid in [row for row in ROWS if row[0] in methods and bool(row[1]) in wanted]:
        defaults = method_defaults(method, task, parameters)
        for lr in [lr for lr in grid if only_lrs is None or lr in only_lrs]:
            model, tokenizer = peftbook.load_model(model_name, device="cpu")
            torch.manual_seed(seed)
            apply(model, make_config(method, **{**defaults["config"], **fields}))
            start = time.perf_counter()
            result = train(model, tokenizer, task, train_config(method, task, steps, seed, lr=lr, progress=False,
                                                                 eval_examples=eval_examples, memory_steps=0))
            final = result.evals[-1]
            runs.append({"method": method, "config": {**defaults["config"], **fields}, "override": fields, "lr": lr,
                         "default_lr": defaults["lr"], "steps": steps, "seed": seed,
                         "validation_metric": final["metric"], "validation": final["value"],
                         "n_validation": final["n_examples"], "first_loss": result.losses[0],
                         "final_loss": result.losses[-1], "seconds": time.perf_counter() - start})
            label = method + "".join(f", {k}={v}" for k, v in fields.items())
            print(f"| {label} | {lr:g} | {final['value']:.3f} | {result.losses[0]:.2f} | {result.losses[-1]:.3f} | "
                  f"{runs[-1]['seconds']:.0f} |", flush=True)
            del model
    return runs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--task", default="sentiment3")
    parser.add_argument("--methods", nargs="+", default=sorted({row[0] for row in ROWS}),
                        choices=sorted({row[0] for row in ROWS}))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-examples", type=int, default=300, help="validation examples scored per run")
    parser.add_argument("--lrs", type=float, nargs="+", default=None, help="only these rates of the grids")
    parser.add_argument("--rows", choices=("all", "plain", "overridden"), default="all",
                        help="plain: only the model's defaults; overridden: only the rows with a config override")
    parser.add_argument("--json", default=None, help="write every run here")
    args = parser.parse_args(argv)
    import peftbook

    peftbook.load_task(args.task).examples("validation")  # a bad task or one without validation fails first
    print("| method | lr | validation accuracy | first loss | final loss | s |")
    print("|---|---:|---:|---:|---:|---:|")
    runs = run(args.model, args.task, args.methods, args.steps, args.eval_examples, args.seed, args.lrs,
               args.rows)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"model": args.model, "task": args.task, "steps": args.steps, "seed": args.seed,
                       "eval_examples": args.eval_examples, "runs": runs}, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
