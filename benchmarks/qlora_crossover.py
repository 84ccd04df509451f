"""Where does QLoRA start to save memory? LoRA vs QLoRA peak of one training step, by model size.

On the embedded tiny base (3.3M parameters) activations are most of a training step's peak, so
quantizing the frozen weights to 4 bits saves little (measured in the benchmark: 74.0 vs 64.9 MB on
sentiment). The simulator (``peftbook.simulate_memory``, fake tensors, nothing allocated) traces the
same step on Llama-shaped models from the tiny base to Llama 3.1 8B, so the crossover, where the
weights outgrow the activations and QLoRA's 4 bits start to pay, can be read off a table.

    python benchmarks/qlora_crossover.py                 # ~1 min on 2 CPU cores
    python benchmarks/qlora_crossover.py --batch 1 --seq 512 --json crossover.json
"""
from __future__ import annotations

import argparse
import json

from transformers import LlamaConfig
from vs_peft import BENCH_LLAMA  # the llama-bench shape; importing vs_peft also puts the repo on sys.path

from peftbook.memory import simulate_memory
from peftbook.memory.simulate import resolve_config
from peftbook.methods import make_config
from peftbook.methods.full import num_parameters

MB = 2 ** 20


def sizes() -> list[tuple[str, object]]:
    """(label, config or simulate_memory name) from small to large."""
    h1024 = LlamaConfig(hidden_size=1024, num_hidden_layers=16, intermediate_size=2816, num_attention_heads=16,
                        num_key_value_heads=8, vocab_size=32000, max_position_embeddings=4096)
    return [("tiny", "tiny"), ("h512 L8 (llama-bench)", LlamaConfig(**BENCH_LLAMA)), ("h1024 L16", h1024),
            ("Llama 3.2 1B", "llama-1b"), ("Llama 3.1 8B", "llama-8b")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=16, help="examples per step (default 16, the benchmark's)")
    parser.add_argument("--seq", type=int, default=96, help="tokens per example (default 96, about data2text's)")
    parser.add_argument("--dtype", default="bf16", help="bf16 | fp16 | fp32 | mixed (default bf16)")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    rows = []
    print(f"one training step, batch {args.batch} x {args.seq} tokens, {args.dtype}, LoRA r=8 on all linear layers")
    print(f"{'model':<22}{'params':>10}{'LoRA MB':>11}{'weights':>9}{'activ.':>9}{'QLoRA MB':>10}{'weights':>9}"
          f"{'QLoRA/LoRA':>12}")
    for label, config in sizes():
        reports = {m: simulate_memory(config, make_config(m, targets="all-linear"), args.batch, args.seq, args.dtype)
                   for m in ("lora", "qlora")}
        lora, qlora = reports["lora"], reports["qlora"]
        row = {"model": label, "params": num_parameters(resolve_config(config)), "lora_peak_mb": lora.peak_bytes / MB,
               "lora_weights_mb": lora.by_category["weights"] / MB,
               "lora_activations_mb": lora.by_category["activations"] / MB,
               "qlora_peak_mb": qlora.peak_bytes / MB, "qlora_weights_mb": qlora.by_category["weights"] / MB,
               "ratio": qlora.peak_bytes / lora.peak_bytes}
        rows.append(row)
        print(f"{label:<22}{row['params'] / 1e6:>9.1f}M{row['lora_peak_mb']:>11.1f}{row['lora_weights_mb']:>9.1f}"
              f"{row['lora_activations_mb']:>9.1f}{row['qlora_peak_mb']:>10.1f}{row['qlora_weights_mb']:>9.1f}"
              f"{row['ratio']:>12.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"settings": vars(args), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
