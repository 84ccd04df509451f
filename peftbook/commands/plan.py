"""``python -m peftbook plan``: will fine-tuning this model fit on my GPU, with which method and options?

    python -m peftbook plan --model llama-8b --gpu-memory 24GB
    python -m peftbook plan --model path/to/config.json --gpu-memory 80GiB --seq 4096 --json

For each trainable method: whether one training step fits at batch 1, which memory-saving options
it needs (gradient checkpointing, 8-bit AdamW; QLoRA is its own row), and the largest batch that
fits, from fake-tensor simulations of CUDA steps, after a stated margin for what the simulator
cannot see (the CUDA context, allocator fragmentation): ``peftbook/memory/planner.py``.
"""
from __future__ import annotations

import sys

from peftbook.errors import strict_json
from peftbook.methods import TRAINABLE_METHODS


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("plan", help="which methods fit on a GPU of a given memory, with which options",
                                   description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True,
                        help="llama-1b | llama-8b | llama-70b | llama-405b | tiny-<type> | config.json | local dir")
    parser.add_argument("--gpu-memory", required=True, help="the GPU's memory, e.g. 24GB, 80GiB, 16000MB")
    parser.add_argument("--seq", type=int, default=2048, help="tokens per example (default 2048)")
    parser.add_argument("--dtype", default="bf16", help="bf16 | fp16 | fp32 | mixed (fp32 weights, bf16 autocast)")
    parser.add_argument("--methods", nargs="+", default=list(TRAINABLE_METHODS),
                        help=f"which of: {', '.join(TRAINABLE_METHODS)} (default: all)")
    parser.add_argument("--max-batch", type=int, default=None, help="stop the batch search here (default 4096)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from peftbook.memory.planner import MAX_BATCH, format_plan, parse_memory, plan

    gpu_bytes = parse_memory(args.gpu_memory)  # bad input is refused before any simulation
    result = plan(args.model, gpu_bytes, args.seq, args.dtype, args.methods, limit=args.max_batch or MAX_BATCH,
                  progress=None if args.json else lambda row: print(f"  {row['method']}: done", file=sys.stderr))
    print(strict_json(result, indent=2) if args.json else format_plan(result))
    return 0
