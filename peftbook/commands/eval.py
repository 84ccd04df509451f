"""``python -m peftbook eval``: score a base model, or a base model plus a saved adapter, on a task split."""
from __future__ import annotations

from peftbook.errors import ConfigError, strict_json
from peftbook.precision import DTYPE_CHOICES, precision_record


def add_parser(subparsers) -> None:
    from peftbook.tasks import SPLITS

    parser = subparsers.add_parser("eval", help="evaluate a model (and an adapter) on a task split")
    parser.add_argument("--model", default="tiny", help="'tiny', a local directory or a hub id (default: tiny)")
    parser.add_argument("--adapter", default=None, help="a folder written by `train` / save_adapter (default: none)")
    parser.add_argument("--task", required=True, help="sentiment, data2text, or a folder of {train,validation,test}.jsonl")
    parser.add_argument("--split", default="test", help=f"{' | '.join(SPLITS)} (default: test)")
    parser.add_argument("--max-examples", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--merge", action="store_true", help="merge LoRA/QLoRA into the weights (and drop the wrappers) before evaluating")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES,
                        help="auto: bf16 on CUDA and on a CPU with native bf16, fp32 elsewhere (default: auto)")
    parser.add_argument("--json", action="store_true", help="print one JSON document (with the predictions)")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from pathlib import Path

    from peftbook.evaluate import evaluate
    from peftbook.methods import load_adapter, merge
    from peftbook.models import load_model
    from peftbook.tasks import check_split, load_task

    check_split(args.split)  # bad input fails before the model loads
    if args.max_examples is not None and args.max_examples < 1:
        raise ConfigError(f"--max-examples {args.max_examples} is not allowed; use an integer >= 1 (leave it out for all)")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size {args.batch_size} is not allowed; use an integer >= 1")
    if args.adapter is not None and not (Path(args.adapter) / "peftbook_adapter.json").exists():
        raise FileNotFoundError(f"{args.adapter} holds no peftbook_adapter.json: not an adapter saved by train")
    task = load_task(args.task)
    model, tokenizer = load_model(args.model, device=args.device, dtype=args.dtype)
    if args.adapter is not None:
        load_adapter(model, args.adapter)
        if args.merge:
            merge(model, unload=True)
    result = evaluate(model, tokenizer, task, args.split, max_examples=args.max_examples, batch_size=args.batch_size)
    result = {"model": args.model, "adapter": args.adapter, "task": task.name, **result,
              "precision": precision_record(model)}
    if args.json:
        print(strict_json(result, indent=2))
        return 0
    for key, value in result.items():
        if key == "predictions":
            continue
        print(f"{key:<20} {value:.4g}" if isinstance(value, float) else f"{key:<20} {value}")
    return 0
