"""``python -m peftbook train``: apply one method, train it on a task, save the adapter."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from peftbook.errors import strict_json
from peftbook.methods import TRAINABLE_METHODS
from peftbook.precision import DTYPE_CHOICES


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train one method on a task and save the adapter")
    parser.add_argument("--model", default="tiny", help="'tiny', a local directory or a hub id (default: tiny)")
    parser.add_argument("--method", required=True, help=", ".join(TRAINABLE_METHODS))
    parser.add_argument("--task", required=True, help="sentiment, data2text, or a folder of {train,validation,test}.jsonl")
    parser.add_argument("--steps", type=int, default=None,
                        help="optimizer steps (default: the bench's, sentiment 600, data2text 1200, other tasks 200)")
    parser.add_argument("--out", required=True, help="output folder: adapter/, history.json, checkpoints/")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the method's bench default)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=None, help="warmup steps (default: 10%% of steps)")
    parser.add_argument("--schedule", default="cosine", help="cosine | linear | constant")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--grad-checkpointing", action="store_true",
                        help="recompute each decoder layer's activations in backward (less memory, slower)")
    parser.add_argument("--grad-checkpointing-every", type=int, default=1, metavar="N",
                        help="with --grad-checkpointing: only every N-th decoder layer (default: 1, every one)")
    parser.add_argument("--loss-chunk-tokens", type=int, default=None, metavar="N",
                        help="LM head + loss over N labelled tokens at a time: the full logits never exist")
    parser.add_argument("--optimizer", default="auto",
                        help="auto | adamw | adamw_foreach | adamw_fused | adamw_8bit | paged_adamw_8bit | sgd")
    parser.add_argument("--eval-every", type=int, default=0, help="validate every N steps (0: at the end only)")
    parser.add_argument("--keep-best", action="store_true",
                        help="with --eval-every: end with the weights of the best validation score (early stopping)")
    parser.add_argument("--checkpoint-every", type=int, default=0, help="save a resumable checkpoint every N steps")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier run's results in --out (a non-empty --out is refused otherwise)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES,
                        help="auto: bf16 on CUDA and on a CPU with native bf16, fp32 elsewhere (default: auto)")
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                        help="method config fields, e.g. --set rank=4 alpha=8 (default: the bench defaults)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.set_defaults(handler=run)


def parse_fields(pairs: list[str]) -> dict:
    fields = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"--set expects FIELD=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        try:
            fields[key] = json.loads(value)
        except json.JSONDecodeError:
            fields[key] = value
    return fields


def run(args) -> int:
    from peftbook.methods import apply, default_steps, make_config, method_defaults, trainable_method, trainable_parameters
    from peftbook.models import load_model, parameter_count
    from peftbook.tasks import load_task
    from peftbook.train import TrainConfig, check_out_dir, check_resume, train

    trainable_method(args.method)  # an unknown method or few-shot (trains nothing) raises here
    task = load_task(args.task)
    defaults = method_defaults(args.method, task, parameter_count(args.model))  # a missing model fails here
    method_config = make_config(args.method, **{**defaults["config"], **parse_fields(args.set)})
    method_config.validate()
    steps = args.steps if args.steps is not None else default_steps(task)
    config = TrainConfig(steps=steps, batch_size=args.batch_size, grad_accum=args.grad_accum,
                         lr=defaults["lr"] if args.lr is None else args.lr,
                         warmup=max(1, steps // 10) if args.warmup is None else args.warmup,
                         schedule=args.schedule, max_length=args.max_length, grad_checkpointing=args.grad_checkpointing,
                         grad_checkpointing_every=args.grad_checkpointing_every,
                         loss_chunk_tokens=args.loss_chunk_tokens, optimizer=args.optimizer,
                         eval_every=args.eval_every, keep_best=args.keep_best, checkpoint_every=args.checkpoint_every, out_dir=args.out,
                         resume=args.resume, overwrite=args.overwrite, seed=args.seed, dtype=args.dtype,
                         progress=not args.json)
    config.validate()
    out = Path(args.out)
    check_out_dir(config)  # before loading anything: a refused --out costs nothing
    if args.resume:
        check_resume(config)
    model, tokenizer = load_model(args.model, device=args.device, dtype=args.dtype)
    import torch

    torch.manual_seed(args.seed)  # the method's random init
    apply(model, method_config)
    trainable, total = trainable_parameters(model)
    result = train(model, tokenizer, task, config)
    summary = {"method": args.method, "model": args.model, "task": task.name, "seed": args.seed,
               "steps_done": result.steps_done, "interrupted": result.interrupted,
               "trainable_params": trainable, "total_params": total, "final_loss": result.losses[-1] if result.losses else None,
               "validation": {k: v for k, v in result.evals[-1].items()} if result.evals else None,
               "peak_memory_bytes": result.memory and result.memory["peak_bytes"],
               "memory_by_category": result.memory and result.memory["by_category"],
               "step_time_s": result.step_time_s, "tokens_per_s": result.tokens_per_s, "precision": result.precision,
               "adapter": str(out / "adapter"), "history": str(out / "history.json")}
    if args.json:
        print(strict_json(summary, indent=2, default=str))
    else:
        for key, value in summary.items():
            if isinstance(value, dict):
                value = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in value.items())
            elif isinstance(value, float):
                value = f"{value:.4g}"
            print(f"{key:<18} {value}")
    if result.interrupted:
        print(f"interrupted ({result.interrupted_by}) at step {result.steps_done}: resume with --resume --out {out}",
              file=sys.stderr)
        return 143 if result.interrupted_by == "SIGTERM" else 130
    return 0
