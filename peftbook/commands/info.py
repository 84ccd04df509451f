"""``python -m peftbook info``: versions, device, backends, methods and architectures; ``--coverage``: the matrix."""
from __future__ import annotations

from peftbook.errors import strict_json


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("info", help="versions, device, bitsandbytes backend, methods, architectures")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--coverage", action="store_true",
                        help="run every method on tiny models of README's representative model types "
                             "(peftbook.coverage) and print the matrix as markdown")
    parser.add_argument("--all", action="store_true",
                        help="with --coverage: every causal-LM type of transformers (slow: ~150 types)")
    parser.set_defaults(handler=run)


def collect() -> dict:
    import torch

    from peftbook.environment import device_info, versions
    from peftbook.methods import ALL_METHODS
    from peftbook.models import ARCHITECTURES, TINY_DIR, bnb_4bit_available

    found = versions()
    cuda = torch.cuda.is_available()
    device = device_info()
    return {
        **{k: found[k] for k in ("peftbook", "python", "torch", "transformers", "bitsandbytes")},
        "device": "cuda" if cuda else "cpu",
        "cuda_available": cuda,
        "cuda_device": device.get("gpu"),
        "cpu_threads": device["cpu_threads"],
        "bitsandbytes_4bit": bnb_4bit_available(),
        "tiny_base_built": (TINY_DIR / "config.json").exists(),
        "methods": list(ALL_METHODS),
        "architectures": sorted(ARCHITECTURES),
    }


def run(args) -> int:
    if args.coverage:
        from peftbook import coverage

        matrix = coverage.coverage_matrix(None if args.all else coverage.REPRESENTATIVE_TYPES, strict=False)
        print(strict_json(matrix, indent=2) if args.json else coverage.matrix_markdown(matrix), end="\n" if args.json else "")
        return 0
    info = collect()
    if args.json:
        print(strict_json(info, indent=2))
        return 0
    width = max(map(len, info))
    for key, value in info.items():
        if isinstance(value, list):
            value = ", ".join(value)
        print(f"{key:<{width}}  {value}")
    return 0
