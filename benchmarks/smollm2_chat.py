"""Plain or chat-template task prompts for an instruct model's trained methods, on validation.

Each method trains twice on SmolLM2-135M-Instruct with the same seed, examples, steps and its
``large_model`` defaults: once on the course's plain prompt (``Review: ...\\nSentiment:`` -> `` negative``),
once on the same prompt as a user turn through the model's chat template, the label as the assistant's
answer (``peftbook.tasks.with_chat_template``); the untrained model is scored both ways too. Validation
split only. Prints a markdown table; with ``--json`` it rewrites that file after every run and, started
again, keeps the runs it already holds for the same model, task, steps, seed and examples (a run takes
a minute or more on 2 cores: an interrupted sweep resumes where it stopped).

    python benchmarks/smollm2_chat.py --task sentiment3 --steps 20 --json benchmarks/results/smollm2_chat.json
"""
from __future__ import annotations

import argparse
import json
import os
import time

METHODS = ("prompt_tuning", "prefix_tuning", "llama_adapter", "lora", "full")


def score(model_name: str, task_name: str, method: str | None, chat: bool, steps: int, eval_examples: int,
          seed: int) -> dict:
    import torch

    import peftbook
    from peftbook.bench import train_config
    from peftbook.methods import apply, make_config, method_defaults
    from peftbook.models import parameter_count
    from peftbook.tasks import with_chat_template
    from peftbook.train import train

    model, tokenizer = peftbook.load_model(model_name, device="cpu")
    task = peftbook.load_task(task_name)
    task = with_chat_template(task, tokenizer) if chat else task
    start = time.perf_counter()
    if method is None:
        value, lr, losses = peftbook.evaluate(model, tokenizer, task, "validation", max_examples=eval_examples)["value"], None, []
    else:
        defaults = method_defaults(method, task, parameter_count(model_name))
        torch.manual_seed(seed)
        apply(model, make_config(method, **defaults["config"]))
        lr = defaults["lr"]
        result = train(model, tokenizer, task, train_config(method, task, steps, seed, lr=lr, progress=False,
                                                             eval_examples=eval_examples, memory_steps=0))
        value, losses = result.evals[-1]["value"], result.losses
    return {"method": method or "untrained", "prompt": "chat" if chat else "plain", "lr": lr, "steps": steps if method else 0,
            "validation": value, "first_loss": losses[0] if losses else None,
            "final_loss": losses[-1] if losses else None, "seconds": time.perf_counter() - start}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--task", default="sentiment3")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-examples", type=int, default=300, help="validation examples scored per run")
    parser.add_argument("--json", default=None, help="write every run here")
    args = parser.parse_args(argv)
    print("| method | prompt | lr | validation accuracy | first loss | final loss | s |")
    print("|---|---|---:|---:|---:|---:|---:|")
    header = {"model": args.model, "task": args.task, "steps": args.steps, "seed": args.seed,
              "eval_examples": args.eval_examples}
    runs = kept_runs(args.json, header)
    for method in [None, *args.methods]:
        for chat in (False, True):
            done = [run for run in runs if run["method"] == (method or "untrained")
                    and run["prompt"] == ("chat" if chat else "plain")]
            if done:
                run = done[0]
            else:
                run = score(args.model, args.task, method, chat, args.steps, args.eval_examples, args.seed)
                runs.append(run)
                if args.json:
                    with open(args.json, "w") as handle:
                        json.dump({**header, "runs": runs}, handle, indent=2)
            loss = ("-", "-") if run["first_loss"] is None else (f"{run['first_loss']:.2f}", f"{run['final_loss']:.3f}")
            print(f"| {run['method']} | {run['prompt']} | {run['lr'] if run['lr'] is not None else '-'} | "
                  f"{run['validation']:.3f} | {loss[0]} | {loss[1]} | {run['seconds']:.0f} |", flush=True)
    return 0


def kept_runs(path: str | None, header: dict) -> list[dict]:
    """The runs a previous, interrupted sweep wrote to ``path``, when it measured the same thing."""
    if not path or not os.path.exists(path):
        return []
    with open(path) as handle:
        previous = json.load(handle)
    if any(previous.get(key) != value for key, value in header.items()):
        raise SystemExit(f"{path} holds runs of another sweep "
                         f"({ {key: previous.get(key) for key in header} }); pass another --json or remove it")
    return previous["runs"]


if __name__ == "__main__":
    raise SystemExit(main())
