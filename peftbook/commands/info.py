"""``python -m peftbook info``: versions, device, backends, methods and architectures; ``--coverage``: the matrix."""
from __future__ import annotations

from peftbook.errors import ConfigError, strict_json


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("info", help="versions, device, bitsandbytes backend, methods, architectures")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--coverage", action="store_true",
                        help="run every method on a tiny model of every causal-LM type of transformers "
                             "(peftbook.coverage; about 4 minutes on 2 cores) and print the matrix as markdown")
    parser.add_argument("--types", default=None, metavar="T1,T2",
                        help="with --coverage: only these model types (comma-separated)")
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
    if args.types is not None and not args.coverage:
        raise ConfigError("--types only goes with --coverage")
    if args.coverage:
        from peftbook import coverage

        types = None
        if args.types is not None:
            types = [name.strip() for name in args.types.split(",") if name.strip()]
            unknown = sorted(set(types) - set(coverage.causal_lm_types()))
            if not types or unknown:
                raise ConfigError(f"--types {args.types!r}: {', '.join(unknown) or 'no type'} is not a causal-LM "
                                  "type of transformers; `python -m peftbook info --coverage` lists them all")
        matrix = coverage.coverage_matrix(types, strict=False)
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
