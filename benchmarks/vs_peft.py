"""Training-step time and peak memory of peftbook's methods vs HF PEFT's, paired in one run.

For each base model and each method both libraries have (LoRA, QLoRA, prompt tuning, prefix
tuning, LLaMA-Adapter), build the same base twice, apply ours to one and PEFT's to the other, and
time full training steps (forward + backward + AdamW step + zero_grad) *interleaved*: step i of
ours, then step i of PEFT, so both see the same machine load.  Warmup steps are excluded; the
median is reported, both of wall time and of the CPU time of the stepping thread.  On a shared
machine wall time is at the mercy of other processes (we saw single steps vary 20x under a load of
10 on 2 cores), so the default is ``--threads 1``: all the work then runs on the main thread and its
CPU time (``time.thread_time``) measures the work itself, whatever the load; the ratio columns
use it.  Then one more step of each runs under ``peftbook.memory.track_memory``
(exact accounting of live tensor storages on CPU; CUDA's allocator peak on GPU), which gives the
peak and its split into weights / gradients / optimizer / activations.  Memory is measured on a
separate step because the tracker's dispatch mode slows the step it watches.

Bases: the embedded tiny base (``data/tiny``, if it is built) and a random-init Llama built in
code (~34M parameters: hidden 512, 8 layers, vocab 8192), large enough that matmuls dominate; and
``smollm2-shape``, a random-init Llama of SmolLM2-135M's shape (hidden 576, 30 layers, 9 heads / 3
key-value heads, MLP 1536, vocab 49,152, tied embeddings: 134.5M parameters), built in code;
``--layers`` gives it fewer layers (the same shape otherwise) where 30 are too slow to time.

``--saving`` adds a third side: peftbook's **memory-saving step** on its own copy of the base, the
same method and weights: the chunked LM head + cross-entropy (``peftbook.lm_loss``, ``--chunk-tokens``
tokens at a time) and gradient checkpointing of every ``--checkpoint-every``-th decoder layer (0: none;
transformers' ``every_n_layers``: a fraction of the layers buys memory for less recompute time). Its
ratios are against PEFT's default step.

``--kbit-upcast`` measures what peft's ``prepare_model_for_kbit_training`` costs on a bf16 4-bit
model (it casts every non-quantized parameter to fp32; peft #1149, bitsandbytes #1569) against our
QLoRA, which casts nothing.

    python benchmarks/vs_peft.py                   # everything, ~5-10 minutes on 2 CPU cores
    python benchmarks/vs_peft.py --methods lora --steps 10 --json results.json
    python benchmarks/vs_peft.py --models smollm2-shape --batch-size 8 --seq-len 512 --saving --steps 2 --warmup 1
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # every base here is built in code or on disk
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import peftbook  # noqa: E402
from peftbook.memory import track_memory  # noqa: E402
from peftbook.models import TINY_DIR, bnb_4bit_available  # noqa: E402
from peftbook.train import enable_gradient_checkpointing  # noqa: E402

# the same hyper-parameters on both sides; LLaMA-Adapter with PEFT's scalar gate so both do the same work
SETTINGS = {"lora": {"rank": 8, "alpha": 16, "dropout": 0.0}, "qlora": {"rank": 8, "alpha": 16, "dropout": 0.0},
            "prompt_tuning": {"num_virtual_tokens": 20}, "prefix_tuning": {"num_virtual_tokens": 20},
            "llama_adapter": {"adapter_len": 10, "adapter_layers": 8, "gate": "scalar"}}
METHODS = tuple(SETTINGS)
BENCH_LLAMA = dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=8, num_attention_heads=8,
                   num_key_value_heads=8, vocab_size=8192, max_position_embeddings=1024, tie_word_embeddings=False)
# HuggingFaceTB/SmolLM2-135M's config.json shape (random weights: time and memory do not depend on them)
SMOLLM2_SHAPE = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                     num_key_value_heads=3, vocab_size=49152, max_position_embeddings=8192, tie_word_embeddings=True,
                     rope_theta=100000.0, rms_norm_eps=1e-5)
BUILT_BASES = {"llama-bench": BENCH_LLAMA, "smollm2-shape": SMOLLM2_SHAPE}


def method_pair(method: str, num_layers: int):
    """(our config, a function that turns a base into PEFT's model) for one method.

    PEFT's side comes from the registry's builder of each method (``peftbook.methods.METHODS``);
    QLoRA is PEFT's LoRA on a base made ready by ``prepare_model_for_kbit_training``, minus gradient
    checkpointing (ours runs without it too). LLaMA-Adapter uses PEFT's scalar gate on both sides.
    """
    import peft

    from peftbook.methods import get_method
    from peftbook.methods.lora import hf_peft_config as lora_peft_config

    if method not in SETTINGS:
        raise ValueError(f"unknown method {method!r}; allowed: {', '.join(METHODS)}")
    settings = dict(SETTINGS[method])
    if "adapter_layers" in settings:
        settings["adapter_layers"] = min(num_layers, settings["adapter_layers"])
    ours = peftbook.make_config(method, **settings)
    if method == "qlora":
        return ours, lambda base: peft.get_peft_model(peft.prepare_model_for_kbit_training(
            base, use_gradient_checkpointing=False), lora_peft_config(base, ours))
    return ours, lambda base: peft.get_peft_model(base, get_method(method).hf_peft(base, ours))


def base_loaders(names, workdir: Path, layers: int | None = None):
    """name -> (function returning a fresh fp32 base, function returning a fresh 4-bit base);
    ``layers`` overrides smollm2-shape's 30 decoder layers."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig, LlamaConfig

    loaders = {}
    for name in names:
        if name == "tiny":
            if not (TINY_DIR / "config.json").exists():
                print(f"skipping the tiny base: {TINY_DIR} is not built", file=sys.stderr)
                continue
            path = TINY_DIR
        else:
            path = workdir / name
            shape = dict(BUILT_BASES[name])
            if name == "smollm2-shape" and layers:
                shape["num_hidden_layers"] = layers
            torch.manual_seed(0)
            AutoModelForCausalLM.from_config(LlamaConfig(**shape)).save_pretrained(path)
        nf4 = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                 bnb_4bit_compute_dtype=torch.float32)
        loaders[name] = (
            lambda path=path: AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32),
            lambda path=path: AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32,
                                                                   quantization_config=nf4, device_map={"": "cpu"}))
    return loaders


def train_step(model, optimizer, batch, chunk_tokens=None, mark=None) -> None:
    """Forward, backward, AdamW step, zero_grad: the model's own loss, or the chunked one."""
    from peftbook.lm_loss import causal_lm_loss

    if chunk_tokens is None:
        loss = model(**batch).loss
    else:
        loss = causal_lm_loss(model, batch["input_ids"], batch["labels"], batch["attention_mask"],
                              chunk_tokens=chunk_tokens)
    if mark:
        mark("backward")
    loss.backward()
    if mark:
        mark("optimizer")
    optimizer.step()
    if mark:
        mark("zero_grad")
    optimizer.zero_grad(set_to_none=True)


def prepare(model):
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    return model, optimizer


def bench_pair(name, method, loaders, batch, steps, warmup, saving=None):
    """Paired steps of ours and PEFT's (and, with ``saving={"chunk_tokens", "checkpoint_every"}``, of our
    memory-saving step): median times, then one tracked step each for the peak."""
    fp_loader, nf4_loader = loaders[name]
    load = nf4_loader if method == "qlora" else fp_loader
    base = load()
    num_layers = base.config.num_hidden_layers
    ours_config, make_peft = method_pair(method, num_layers)
    sides = {"ours": prepare(peftbook.apply(base, ours_config)), "peft": prepare(make_peft(load()))}
    chunks = {"ours": None, "peft": None}
    if saving is not None:
        torch.manual_seed(0)  # the same method init as "ours"
        saver = peftbook.apply(load(), method_pair(method, num_layers)[0])
        if saving["checkpoint_every"]:
            enable_gradient_checkpointing(saver, saving["checkpoint_every"])  # as train does
        sides["saving"] = prepare(saver)
        chunks["saving"] = saving["chunk_tokens"]
    trainable = {side: sum(p.numel() for p in model.parameters() if p.requires_grad)
                 for side, (model, _) in sides.items()}
    times = {side: [] for side in sides}
    cpu_times = {side: [] for side in sides}
    names = list(sides)
    for step in range(warmup + steps):
        shift = step % len(names)  # rotate who goes first
        for side in names[shift:] + names[:shift]:
            model, optimizer = sides[side]
            start, start_cpu = time.perf_counter(), time.thread_time()
            train_step(model, optimizer, batch, chunks[side])
            if step >= warmup:
                times[side].append(time.perf_counter() - start)
                cpu_times[side].append(time.thread_time() - start_cpu)
    memory = {}
    for side, (model, optimizer) in sides.items():
        with track_memory("cpu", model=model, optimizer=optimizer) as mem:
            train_step(model, optimizer, batch, chunks[side], mark=mem.mark)
        memory[side] = mem.report
    row = {"model": name, "method": method, "layers": num_layers, "trainable_ours": trainable["ours"],
           "trainable_peft": trainable["peft"]}
    for side in sides:
        row[f"step_s_{side}"] = statistics.median(times[side]) if times[side] else None
        row[f"cpu_s_{side}"] = statistics.median(cpu_times[side]) if cpu_times[side] else None
        row[f"step_s_{side}_all"], row[f"cpu_s_{side}_all"] = times[side], cpu_times[side]
        row[f"peak_bytes_{side}"] = memory[side].peak_bytes
        row[f"by_category_{side}"] = memory[side].by_category
    for side, suffix in (("ours", ""), ("saving", "_saving")):
        if side not in sides:
            continue
        if times[side]:
            row[f"wall_ratio{suffix}"] = row[f"step_s_{side}"] / row["step_s_peft"]
            row[f"time_ratio{suffix}"] = row[f"cpu_s_{side}"] / row["cpu_s_peft"]
        row[f"memory_ratio{suffix}"] = memory[side].peak_bytes / memory["peft"].peak_bytes
    if saving is not None:
        row["saving"] = dict(saving)
    return row


def kbit_upcast(workdir: Path, batch) -> dict:
    """Weight bytes and one step's peak: our QLoRA vs peft's prepare_model_for_kbit_training, bf16 model."""
    import peft
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig, LlamaConfig

    path = workdir / "llama-bench"
    if not path.exists():
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(LlamaConfig(**BENCH_LLAMA)).save_pretrained(path)
    nf4 = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                             bnb_4bit_compute_dtype=torch.bfloat16)

    def load():
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16, quantization_config=nf4,
                                                    device_map={"": "cpu"})

    def weight_bytes(model):
        seen, total, fp32 = set(), 0, 0
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.data_ptr() in seen:
                continue
            seen.add(tensor.data_ptr())
            total += tensor.numel() * tensor.element_size()
            fp32 += tensor.numel() * tensor.element_size() if tensor.dtype == torch.float32 else 0
        return total, fp32

    before = weight_bytes(load())
    ours = peftbook.apply(load(), peftbook.make_config("qlora", rank=8, alpha=16))
    theirs = peft.get_peft_model(peft.prepare_model_for_kbit_training(load(), use_gradient_checkpointing=False),
                                 peft.LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                                 task_type="CAUSAL_LM"))
    result = {"base_weight_bytes": before[0], "base_fp32_bytes": before[1]}
    for side, model in (("ours", ours), ("peft", theirs)):
        model, optimizer = prepare(model)
        train_step(model, optimizer, batch)  # optimizer state exists from here on
        with track_memory("cpu", model=model, optimizer=optimizer) as mem:
            train_step(model, optimizer, batch)
        total, fp32 = weight_bytes(model)
        result[side] = {"weight_bytes": total, "fp32_weight_bytes": fp32, "step_peak_bytes": mem.peak_bytes,
                        "by_category": mem.by_category}
    return result


def print_table(rows) -> None:
    saving = any("peak_bytes_saving" in r for r in rows)
    header = (f"{'model':<13} {'L':>2} {'method':<14} {'trainable ours/peft':>21} {'wall ms ours':>12} {'peft':>7} "
              f"{'cpu ms ours':>11} {'peft':>7} {'ratio':>6} {'peak MB ours':>12} {'peft':>7} {'ratio':>6}")
    if saving:
        header += f" {'saving: cpu ms':>14} {'ratio':>6} {'peak MB':>8} {'ratio':>6}"
    print(header)
    print("-" * len(header))

    def ms(value):
        return "-" if value is None else f"{1e3 * value:.0f}"

    def ratio(value):
        return "-" if value is None else f"{value:.3f}"

    for r in rows:
        line = (f"{r['model']:<13} {r['layers']:>2} {r['method']:<14} "
                f"{r['trainable_ours']:>10,}/{r['trainable_peft']:<10,} "
                f"{ms(r['step_s_ours']):>12} {ms(r['step_s_peft']):>7} {ms(r['cpu_s_ours']):>11} "
                f"{ms(r['cpu_s_peft']):>7} {ratio(r.get('time_ratio')):>6} "
                f"{r['peak_bytes_ours'] / 2**20:>12.1f} {r['peak_bytes_peft'] / 2**20:>7.1f} {r['memory_ratio']:>6.3f}")
        if "peak_bytes_saving" in r:
            line += (f" {ms(r['cpu_s_saving']):>14} {ratio(r.get('time_ratio_saving')):>6} "
                     f"{r['peak_bytes_saving'] / 2**20:>8.1f} {r['memory_ratio_saving']:>6.3f}")
        print(line)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny", "llama-bench"],
                        choices=["tiny", "llama-bench", "smollm2-shape"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--layers", type=int, default=None, help="smollm2-shape's decoder layers (default 30)")
    parser.add_argument("--saving", action="store_true", help="also time and measure peftbook's memory-saving step")
    parser.add_argument("--chunk-tokens", type=int, default=256, help="the saving step's loss chunk (tokens)")
    parser.add_argument("--checkpoint-every", type=int, default=0,
                        help="the saving step checkpoints every n-th decoder layer (0: no checkpointing)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps (0: memory only)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--kbit-upcast", action="store_true", help="also measure prepare_model_for_kbit_training")
    parser.add_argument("--json", help="write all results to this file")
    args = parser.parse_args(argv)
    if args.steps < 0 or args.warmup < 0:
        raise ValueError(f"--steps={args.steps} / --warmup={args.warmup}: need steps >= 0, warmup >= 0")
    if args.layers is not None and args.layers < 1:
        raise ValueError(f"--layers={args.layers}: need at least 1 layer")
    if args.chunk_tokens < 1 or args.checkpoint_every < 0:
        raise ValueError(f"--chunk-tokens={args.chunk_tokens} / --checkpoint-every={args.checkpoint_every}: "
                         "need chunk-tokens >= 1, checkpoint-every >= 0")
    saving = {"chunk_tokens": args.chunk_tokens, "checkpoint_every": args.checkpoint_every} if args.saving else None
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    methods = [m for m in args.methods if m != "qlora" or bnb_4bit_available()]
    rows, upcast = [], None
    with tempfile.TemporaryDirectory() as tmp:
        loaders = base_loaders(args.models, Path(tmp), args.layers)
        for name in loaders:
            vocab = loaders[name][0]().config.vocab_size
            generator = torch.Generator().manual_seed(0)
            ids = torch.randint(4, vocab, (args.batch_size, args.seq_len), generator=generator)
            batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
            for method in methods:
                print(f"{name} / {method} ...", file=sys.stderr, flush=True)
                rows.append(bench_pair(name, method, loaders, batch, args.steps, args.warmup, saving))
        if args.kbit_upcast and bnb_4bit_available():
            ids = torch.randint(4, BENCH_LLAMA["vocab_size"], (args.batch_size, args.seq_len),
                                generator=torch.Generator().manual_seed(0))
            upcast = kbit_upcast(Path(tmp), {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids})
    print(f"batch {args.batch_size} x {args.seq_len} tokens, median of {args.steps} steps after {args.warmup} "
          f"warmup, {torch.get_num_threads()} threads, torch {torch.__version__}"
          + (f"; saving step: loss chunks of {args.chunk_tokens} tokens, checkpointing every "
             f"{args.checkpoint_every or 'no'} layer(s)" if saving else ""))
    print_table(rows)
    if upcast:
        print("\nbf16 4-bit llama-bench, weights (MB) and one training step's peak (MB):")
        print(f"  base as loaded: {upcast['base_weight_bytes'] / 2**20:.1f} (fp32 part {upcast['base_fp32_bytes'] / 2**20:.1f})")
        for side in ("ours", "peft"):
            u = upcast[side]
            print(f"  {side:<5} weights {u['weight_bytes'] / 2**20:8.1f} (fp32 part {u['fp32_weight_bytes'] / 2**20:7.1f})"
                  f"  step peak {u['step_peak_bytes'] / 2**20:8.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "kbit_upcast": upcast, "args": vars(args),
                                               "torch": torch.__version__}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
