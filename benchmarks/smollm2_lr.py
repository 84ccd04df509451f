"""Learning rates for a 135M model: a sweep on SmolLM2-135M-Instruct, chosen on validation.

The registry's learning rates (``peftbook.methods.METHODS``) were chosen on the 3.3M-parameter tiny
base. On SmolLM2 the bench at the tiny's rates left prefix tuning at chance (0.503 on sentiment at
lr 0.1). This script trains each method at a few learning rates around its registry default, on the
same examples and steps, and reads the accuracy on the *validation* split (the test split is never
looked at here); the best rate per method is the one the registry should use for a model of this
size. Writes one JSON document (every run: lr, validation accuracy, final training loss, seconds) and
prints a markdown table.

    python benchmarks/smollm2_lr.py --task sentiment3 --steps 20 --json smollm2_lr.json
"""
from __future__ import annotations

import argparse
import json
import time

# lr grid per method: the registry's default and a decade (or half-decade) either side
GRIDS = {
    "prompt_tuning": (1e-2, 1e-1, 3e-1),
    "prefix_tuning": (1e-3, 1e-2, 1e-1),
    "llama_adapter": (1e-3, 1e-2, 1e-1),
    "lora": (1e-3, 3e-3, 1e-2),
    "full": (1e-5, 3e-5, 1e-4),
}


def run(model_name: str, task_name: str, methods: list[str], steps: int, batch_size: int,
        eval_examples: int) -> list[dict]:
    import peftbook
    from peftbook.methods import apply, make_config, method_defaults
    from peftbook.train import TrainConfig, train

    task = peftbook.load_task(task_name)
    runs = []
    for method in methods:
        defaults = method_defaults(method, task)
        for lr in GRIDS[method]:
            model, tokenizer = peftbook.load_model(model_name, device="cpu")
            apply(model, make_config(method, **defaults["config"]))
            start = time.perf_counter()
            result = train(model, tokenizer, task, TrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=0,
                                                               eval_examples=eval_examples, memory_steps=0,
                                                               progress=False))
            final = result.evals[-1]
            runs.append({"method": method, "lr": lr, "registry_lr": defaults["lr"], "steps": steps,
                         "validation_metric": final["metric"], "validation": final["value"],
                         "final_loss": result.history[-1]["loss"], "seconds": time.perf_counter() - start})
            print(f"| {method} | {lr:g} | {final['value']:.3f} | {runs[-1]['final_loss']:.3f} | "
                  f"{runs[-1]['seconds']:.0f} |", flush=True)
            del model
    return runs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--task", default="sentiment3")
    parser.add_argument("--methods", nargs="+", default=list(GRIDS), choices=list(GRIDS))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--eval-examples", type=int, default=200, help="validation examples scored per run")
    parser.add_argument("--json", default=None, help="write every run here")
    args = parser.parse_args(argv)
    import peftbook

    peftbook.load_task(args.task).examples("validation")  # a bad task or one without validation fails first
    print("| method | lr | validation accuracy | final training loss | s |")
    print("|---|---:|---:|---:|---:|")
    runs = run(args.model, args.task, args.methods, args.steps, args.batch_size, args.eval_examples)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"model": args.model, "task": args.task, "steps": args.steps, "batch_size": args.batch_size,
                       "runs": runs}, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
