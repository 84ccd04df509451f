"""The learning-rate grid of the real-model benchmark: every trained method, the same grid rule, 3 seeds.

Notebook 07 ranks the methods on SmolLM2-135M-Instruct; a ranking is only fair when every method trains
at a rate chosen the same way. This script trains each method at every rate of its grid (at least 5
rates, spanning 1e-5..3e-1 as each method needs) over several seeds, on the benchmark's setting (the
first ``--train-examples`` of sentiment3's training split, the bench's schedule: batch 16, warm-up then
cosine, ``--steps`` steps), and records the **validation** curve of each run (every ``--eval-every``
steps). The test split is never read here.

Selection rule (``select``): for each rate, the mean over seeds of the best validation score along the
curve (the checkpoint the benchmark keeps); the chosen rate is the one with the highest such mean. A rate
whose runs end with a training loss above their first is reported as "does not train".

Runs are appended to a JSON-lines file as they finish, so the grid can be stopped (kill) and resumed:
runs already in the file are skipped. ``--summary`` prints the table and the chosen rates from the file.

    python benchmarks/smollm2_grid.py --out benchmarks/results/smollm2_grid.jsonl
    python benchmarks/smollm2_grid.py --out benchmarks/results/smollm2_grid.jsonl --summary
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

GRIDS = {
    "prompt_tuning": (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1),
    "prefix_tuning": (3e-3, 1e-2, 3e-2, 1e-1, 3e-1),
    "llama_adapter": (1e-3, 3e-3, 1e-2, 3e-2, 1e-1),
    "lora": (3e-4, 1e-3, 3e-3, 1e-2, 3e-2),
    "qlora": (3e-4, 1e-3, 3e-3, 1e-2, 3e-2),
    "full": (1e-5, 3e-5, 1e-4, 3e-4, 1e-3),
}


def key(run: dict) -> tuple:
    return run["method"], run["lr"], run["seed"]


def done_runs(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def one_run(model_name: str, task, method: str, lr: float, seed: int, steps: int, eval_every: int,
            eval_examples: int) -> dict:
    import torch

    import peftbook
    from peftbook.bench import train_config
    from peftbook.methods import apply, make_config, method_defaults
    from peftbook.models import parameter_count
    from peftbook.realmodel import LOSS_CHUNK_TOKENS

    parameters = parameter_count(model_name)
    defaults = method_defaults(method, task, parameters)
    model, tokenizer = peftbook.load_model(model_name)  # QLoRA quantizes the decoder in place, as the bench
    torch.manual_seed(seed)
    apply(model, make_config(method, **defaults["config"]))
    start = time.perf_counter()
    config = train_config(method, task, steps, seed, parameters, lr=lr, eval_every=eval_every,
                          eval_examples=eval_examples, loss_chunk_tokens=LOSS_CHUNK_TOKENS, memory_steps=0,
                          progress=False)
    result = peftbook.train(model, tokenizer, task, config)
    if result.interrupted:
        raise KeyboardInterrupt
    return {"method": method, "lr": lr, "seed": seed, "config": defaults["config"], "registry_lr": defaults["lr"],
            "steps": steps, "train_examples": len(task.examples("train")),
            "curve": [{"step": e["step"], "value": e["value"]} for e in result.evals],
            "n_validation": result.evals[-1]["n_examples"], "losses": result.losses,
            "seconds": time.perf_counter() - start, "precision": result.precision}


def select(runs: list[dict]) -> dict:
    """``{method: {"rates": [{lr, best_mean, final_mean, n, trains}], "chosen": lr}}`` by the rule above."""
    table = {}
    for method in GRIDS:
        rates = []
        for lr in sorted({r["lr"] for r in runs if r["method"] == method}):
            rows = [r for r in runs if r["method"] == method and r["lr"] == lr]
            best = [max(p["value"] for p in r["curve"]) for r in rows]
            final = [r["curve"][-1]["value"] for r in rows]
            trains = all(r["losses"][-1] < r["losses"][0] for r in rows)
            rates.append({"lr": lr, "best_mean": sum(best) / len(best), "final_mean": sum(final) / len(final),
                          "n": len(rows), "trains": trains, "best": best})
        if rates:
            chosen = max((r for r in rates if r["trains"]), key=lambda r: r["best_mean"], default=None)
            table[method] = {"rates": rates, "chosen": chosen and chosen["lr"]}
    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--task", default="sentiment3")
    parser.add_argument("--train-examples", type=int, default=64)
    parser.add_argument("--methods", nargs="+", default=list(GRIDS), choices=list(GRIDS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--eval-every", type=int, default=5)
    parser.add_argument("--eval-examples", type=int, default=200, help="validation examples per evaluation")
    parser.add_argument("--out", type=Path, required=True, help="JSON-lines file: appended, resumed")
    parser.add_argument("--summary", action="store_true", help="only print the table of the runs in --out")
    args = parser.parse_args(argv)

    from peftbook.tasks import load_task, with_train_examples

    task = with_train_examples(load_task(args.task), args.train_examples or None)
    runs = done_runs(args.out)
    if not args.summary:
        done = {key(r) for r in runs}
        todo = [(m, lr, s) for s in args.seeds for m in args.methods for lr in GRIDS[m] if (m, lr, s) not in done]
        print(f"{len(done)} runs in {args.out}, {len(todo)} to go", flush=True)
        for method, lr, seed in todo:
            run = one_run(args.model, task, method, lr, seed, args.steps, args.eval_every, args.eval_examples)
            run.update(model=args.model, task=args.task)
            with args.out.open("a") as handle:
                handle.write(json.dumps(run) + "\n")
            runs.append(run)
            curve = " ".join(f"{point['value']:.3f}" for point in run["curve"])
            print(f"{method} lr={lr:g} seed={seed}: validation {curve}"
                  f" loss {run['losses'][0]:.2f} -> {run['losses'][-1]:.3f} ({run['seconds']:.0f} s)", flush=True)
    print("| method | lr | best validation (mean over seeds) | final validation | seeds | trains |")
    print("|---|---:|---:|---:|---:|---|")
    for method, row in select(runs).items():
        for rate in row["rates"]:
            mark = " **chosen**" if rate["lr"] == row["chosen"] else ""
            print(f"| {method} | {rate['lr']:g}{mark} | {rate['best_mean']:.3f} | {rate['final_mean']:.3f} | "
                  f"{rate['n']} | {'yes' if rate['trains'] else 'no'} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
