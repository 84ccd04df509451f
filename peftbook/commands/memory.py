"""``python -m peftbook memory``: what one training step costs, simulated, estimated, measured.

    python -m peftbook memory --model llama-8b --method lora --rank 16 --batch 1 --seq 2048
    python -m peftbook memory --model tiny --method qlora --batch 4 --seq 128 --dtype fp32 --measure --json
    python -m peftbook memory --table

``--model``: ``tiny`` (the embedded base), a local model directory or config.json, a hub id (needs
the network), ``tiny-<type>`` (a tiny random config of llama, mistral, qwen2, gemma, gemma2, phi3,
gpt2) or the built-in Llama 3 shapes ``llama-1b``, ``llama-8b``, ``llama-70b``, ``llama-405b``.
"""
from __future__ import annotations

import sys

from peftbook.errors import strict_json
from peftbook.methods import TRAINABLE_METHODS

def count_or_fraction(text: str) -> int | float:
    """``--adapter-layers 4`` (a count) or ``0.5`` (a fraction of the depth)."""
    return float(text) if "." in text else int(text)


# CLI flag -> method config field
METHOD_FLAGS = {"rank": int, "alpha": float, "targets": str, "quant_type": str, "num_virtual_tokens": int,
                "adapter_layers": count_or_fraction, "adapter_len": int}


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("memory", help="simulate / estimate / measure the memory of a training step",
                                   description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny",
                        help="tiny | llama-1b | llama-8b | llama-70b | llama-405b | tiny-<type> | local dir | hub id")
    parser.add_argument("--method", default="full", help=f"one of: {', '.join(TRAINABLE_METHODS)}")
    for flag, kind in METHOD_FLAGS.items():
        parser.add_argument("--" + flag.replace("_", "-"), type=kind, default=None,
                            help=f"method config field {flag} (only for methods that have it)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--dtype", default="bf16", help="bf16 | fp16 | fp32 | mixed (fp32 weights, bf16 autocast)")
    add_step_option_flags(parser)
    parser.add_argument("--measure", action="store_true",
                        help="also run the step for real (CUDA if available, else CPU)")
    parser.add_argument("--table", action="store_true",
                        help="print the rule-of-thumb table (Llama 1B-405B, every method, seq 512 and 2048)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.set_defaults(handler=run)


def add_step_option_flags(parser) -> None:
    """The ``StepOptions`` flags, shared with ``plan``."""
    from peftbook.memory.options import OPTIMIZERS

    parser.add_argument("--optimizer", default="auto",
                        help=f"{' | '.join(OPTIMIZERS)} (auto: what train uses on the device)")
    parser.add_argument("--grad-checkpointing", action="store_true",
                        help="recompute each decoder layer in backward (keeps only the layers' inputs)")
    parser.add_argument("--adapter-dtype", default="base", help="base | fp32 (fp32 adapter weights on a 16-bit base)")
    parser.add_argument("--loss-chunk-tokens", type=int, default=None,
                        help="LM head + cross-entropy this many tokens at a time (default: all at once)")
    parser.add_argument("--simulate-device", default="cuda",
                        help="the device the simulation models: cuda (default) or cpu")


def step_options_from_args(args, device=None):
    """``StepOptions`` from the flags (validated), on ``device`` or the simulated device."""
    from peftbook.memory.options import StepOptions

    return StepOptions(grad_checkpointing=args.grad_checkpointing, optimizer=args.optimizer,
                       adapter_dtype=args.adapter_dtype, loss_chunk_tokens=args.loss_chunk_tokens,
                       device=device or args.simulate_device).validate()


def method_config_from_args(args):
    from dataclasses import fields

    from peftbook.methods import trainable_method

    cls = trainable_method(args.method).config
    allowed = {f.name for f in fields(cls)}
    values = {k: getattr(args, k) for k in METHOD_FLAGS if getattr(args, k) is not None}
    wrong = sorted(set(values) - allowed)
    if wrong:
        raise ValueError(f"--{wrong[0].replace('_', '-')} does not apply to method {args.method!r}; "
                         f"its fields: {', '.join(sorted(allowed))}")
    if "targets" in values and values["targets"] != "all-linear":
        values["targets"] = values["targets"].split(",")
    config = cls(**values)
    config.validate()
    return None if args.method == "full" and not values else config


def measure(args, method_config) -> dict:
    """Build the model for real (random init from the config unless it is a saved model) and measure."""
    import torch

    from peftbook.memory.simulate import BUILTIN_SHAPES, build_model, measure_memory, resolve_config, resolve_step_dtype
    from peftbook.models import load_model, resolve_device

    device = resolve_device("auto")
    weights_dtype = resolve_step_dtype(args.dtype)
    name = str(args.model)
    if name.lower() in BUILTIN_SHAPES or name.startswith("tiny-"):
        with torch.device(device):
            model = build_model(resolve_config(name), weights_dtype, method_config)
    else:
        model, _ = load_model(name, dtype=weights_dtype, device=device)
        model = _apply(model, method_config)
    options = step_options_from_args(args, torch.device(device).type)
    report = measure_memory(model, args.batch, args.seq, device=device, dtype=args.dtype, options=options)
    return report.to_dict()


def _apply(model, method_config):
    from peftbook.methods import apply

    if method_config is None:
        return model.requires_grad_(True)
    return apply(model, method_config)


def run(args) -> int:
    from dataclasses import replace

    from peftbook.memory import estimate_memory, simulate_memory
    from peftbook.memory.simulate import prepare_step, resolve_config

    if args.table:
        return run_table(args)
    # every check before any heavy work
    options = step_options_from_args(args)
    method_config = method_config_from_args(args)
    _, method_config, options = prepare_step(args.batch, args.seq, args.dtype, method_config, options, None, None,
                                             "cuda")
    config = resolve_config(args.model)
    context = getattr(config, "max_position_embeddings", None)
    notes = []
    if context and args.seq > context:  # allowed (a what-if), but say so: the model was never trained that long
        notes.append(f"--seq {args.seq} is {args.seq / context:.3g}x {args.model}'s context of {context} tokens")
        print(f"note: {notes[-1]}", file=sys.stderr)
    simulated = simulate_memory(config, method_config, args.batch, args.seq, args.dtype, options=options)
    estimated = estimate_memory(config, method_config, args.batch, args.seq, args.dtype, options=options)
    measured = measure(args, method_config) if args.measure else None
    result = {"model": args.model, "method": args.method, "batch": args.batch, "seq": args.seq, "dtype": args.dtype,
              "optimizer": args.optimizer, "options": options.to_dict(), "simulated": simulated.to_dict(),
              "estimated": estimated, "measured": measured, "simulated_as_measured": None, "notes": notes}
    measured_on = measured and measured["device"].split(":")[0]
    if measured_on and measured_on != options.device:
        # compare like with like: the devices run different optimizer implementations and allocators
        result["simulated_as_measured"] = simulate_memory(config, method_config, args.batch, args.seq, args.dtype,
                                                          options=replace(options, device=measured_on)).to_dict()
    if args.json:
        print(strict_json(result, indent=2))
        return 0
    optimizer = next(n for n in simulated.notes if n.startswith("optimizer: ")).removeprefix("optimizer: ")
    checkpointing = ", gradient checkpointing" if options.grad_checkpointing else ""
    print(f"{args.model}, {args.method}, batch {args.batch}, seq {args.seq}, {args.dtype}, {optimizer}{checkpointing}: "
          f"{estimated['num_params']:,} parameters, {estimated['trainable_params']:,} trainable")
    columns = [(f"simulated ({options.device})", simulated.to_dict()), ("estimated", estimated)]
    if result["simulated_as_measured"] is not None:
        columns.append((f"simulated ({measured_on})", result["simulated_as_measured"]))
    if result["measured"] is not None:
        columns.append((f"measured ({result['measured']['device']})", result["measured"]))
    unit, scale = ("GB", 1e9) if simulated.peak_bytes >= 1e9 else ("MB", 1e6)
    print(f"{unit:<12}" + "".join(f"{name:>22}" for name, _ in columns))
    for category in [*simulated.by_category, "peak"]:
        values = [c["peak_bytes"] if category == "peak" else c["by_category"][category] for _, c in columns]
        print(f"{category:<12}" + "".join(f"{v / scale:>22.3f}" for v in values))
    print(f"rule of thumb (16 GB per 1B parameters): {estimated['rule_of_thumb_bytes'] / 1e9:.1f} GB")
    return 0


def run_table(args) -> int:
    from peftbook.memory.simulate import prepare_step
    from peftbook.memory.table import format_table, rule_of_thumb_table

    options = step_options_from_args(args)
    prepare_step(args.batch, 1, args.dtype, None, options, None, None, "cuda")
    rows = rule_of_thumb_table(batch_size=args.batch, dtype=args.dtype, options=options)
    if args.json:
        print(strict_json(rows, indent=2))
    else:
        print(format_table(rows))
    return 0
