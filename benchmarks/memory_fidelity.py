"""Simulated vs measured peak memory of a CPU training step, on random Llama-like shapes.

For every method x step option (``peftbook.memory.fidelity.OPTION_GRID``) a small Llama shape is
drawn at random (seeded), the real model is built and its steady-state step measured on CPU
(``measure_memory``), and the same step is simulated on fake tensors (``simulate_memory``).
``--update-readme`` rewrites the table between the markers in ``benchmarks/README.md``.

    python benchmarks/memory_fidelity.py                        # ~15 s on 2 CPU cores
    python benchmarks/memory_fidelity.py --seed 0 --qlora-draws 5 --update-readme
"""
from __future__ import annotations

import argparse
import json
import platform
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from peftbook.memory.fidelity import compare, fidelity_table, format_fidelity, random_llama_shape  # noqa: E402
from peftbook.memory.options import StepOptions  # noqa: E402

START, END = "<!-- memory-fidelity:start -->", "<!-- memory-fidelity:end -->"


def qlora_rows(seed: int, draws: int) -> list[dict]:
    """QLoRA with train's CPU defaults on ``draws`` more shapes (a generator of its own)."""
    import random

    rng = random.Random(seed + 1)
    return [{"option": "default", **compare(*shape[:1], "qlora", StepOptions(device="cpu"), "fp32", *shape[1:])}
            for shape in (random_llama_shape(rng) for _ in range(draws))]


def render(rows: list[dict], qlora: list[dict], seed: int) -> str:
    import bitsandbytes
    import torch
    import transformers

    worst = max(rows + qlora, key=lambda r: abs(r["error"]))
    return "\n".join([
        START,
        f"`python benchmarks/memory_fidelity.py --seed {seed} --qlora-draws {len(qlora)} --update-readme` "
        f"(torch {torch.__version__}, transformers {transformers.__version__}, bitsandbytes "
        f"{bitsandbytes.__version__}, {platform.machine()} CPU): {len(rows) + len(qlora)} comparisons, "
        + (f"largest error {100 * worst['error']:+.2f}% ({worst['method']}, {worst['option']})."
           if worst["simulated_bytes"] != worst["measured_bytes"] else "every one equal to the byte."),
        "", format_fidelity(rows), "", "QLoRA on more shapes:", "", format_fidelity(qlora), END])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--qlora-draws", type=int, default=5, help="extra QLoRA shapes")
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--update-readme", action="store_true", help="rewrite the table in benchmarks/README.md")
    args = parser.parse_args(argv)
    if args.qlora_draws < 0:
        parser.error(f"--qlora-draws must be >= 0; got {args.qlora_draws}")
    rows = fidelity_table(seed=args.seed, progress=lambda r: print(
        f"{r['method']:<14} {r['option']:<24} {r['shape']:<36} {100 * r['error']:+.2f}%", file=sys.stderr))
    qlora = qlora_rows(args.seed, args.qlora_draws)
    text = render(rows, qlora, args.seed)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "qlora": qlora}, indent=2))
    if args.update_readme:
        readme = ROOT / "benchmarks" / "README.md"
        old = readme.read_text()
        if START not in old:
            raise SystemExit(f"{readme} has no {START} marker")
        readme.write_text(re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: text, old, flags=re.S))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
