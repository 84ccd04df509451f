"""``python -m peftbook bench``: every method on one model, task and budget -> results + plots + table."""
from __future__ import annotations

import sys
from pathlib import Path

from peftbook.errors import OutputError, strict_json
from peftbook.methods import ALL_METHODS
from peftbook.precision import DTYPE_CHOICES


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("bench", help="benchmark the methods side by side (table, results.json/csv, plots)")
    parser.add_argument("--model", default="tiny", help="'tiny', a local directory or a hub id (default: tiny)")
    parser.add_argument("--task", default="sentiment", help="sentiment, data2text, or a task folder (default: sentiment)")
    parser.add_argument("--methods", nargs="+", default=["all"],
                        help=f"all, or a list of: {' '.join(ALL_METHODS)}")
    parser.add_argument("--steps", type=int, default=None, help="training steps per method (default: per task)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run per seed (default: 0)")
    parser.add_argument("--impl", default="peftbook", help="peftbook | hf-peft (HF PEFT builds the shared methods)")
    parser.add_argument("--out", default="outputs/bench", help="output folder (default: outputs/bench)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES,
                        help="auto: bf16 on CUDA and on a CPU with native bf16, fp32 elsewhere (default: auto)")
    parser.add_argument("--max-examples", type=int, default=None, help="evaluate on the first N test examples only")
    parser.add_argument("--train-examples", type=int, default=None,
                        help="every method learns from the first N training examples only (default: all)")
    parser.add_argument("--json", action="store_true", help='print {"records": [...]} on stdout')
    parser.set_defaults(handler=run)


def run(args) -> int:
    from peftbook.bench import parse_methods, run_bench, table_footnote
    from peftbook.claims import describe_gate, headline_gate
    from peftbook.results import format_table

    methods = parse_methods([m for item in args.methods for m in item.split(",") if m])
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    if args.max_examples is not None and args.max_examples < 1:
        raise ValueError(f"--max-examples must be >= 1, got {args.max_examples}")
    if not str(args.out).strip():
        raise ValueError("--out is empty; give a folder name")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise OutputError(f"--out {args.out!r} is an existing file, not a folder")
    try:
        records = run_bench(args.model, args.task, methods, steps=args.steps, seeds=args.seeds, impl=args.impl,
                            out=args.out, device=args.device, dtype=args.dtype, progress=not args.json,
                            eval_examples=args.max_examples, train_examples=args.train_examples, log=lambda *a, **k: print(*a, file=sys.stderr))
    except KeyboardInterrupt:
        print(f"interrupted; finished runs are in {args.out}/results.json (re-run the same command to continue)",
              file=sys.stderr)
        return 130
    if args.json:
        print(strict_json({"records": records}, default=str))
    else:
        print(format_table(records, table_footnote(next((r["metric"] for r in records if r.get("metric")), "metric"))))
        print(describe_gate(headline_gate(records)))
        print(f"results: {args.out}/results.json, results.csv, *.png")
    return 1 if any(r.get("error") for r in records) else 0
