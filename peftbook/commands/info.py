"""``python -m peftbook info``: versions, device, backends, methods and architectures."""
from __future__ import annotations

import json


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("info", help="versions, device, bitsandbytes backend, methods, architectures")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.set_defaults(handler=run)


def collect() -> dict:
    import platform

    import torch
    import transformers

    import peftbook
    from peftbook.methods import ALL_METHODS
    from peftbook.models import ARCHITECTURES, TINY_DIR, bnb_4bit_available

    try:
        import bitsandbytes
        bnb_version = bitsandbytes.__version__
    except Exception:  # not installed or broken backend
        bnb_version = None
    cuda = torch.cuda.is_available()
    return {
        "peftbook": peftbook.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "bitsandbytes": bnb_version,
        "device": "cuda" if cuda else "cpu",
        "cuda_available": cuda,
        "cuda_device": torch.cuda.get_device_name(0) if cuda else None,
        "cpu_threads": torch.get_num_threads(),
        "bitsandbytes_4bit": bnb_4bit_available(),
        "tiny_base_built": (TINY_DIR / "config.json").exists(),
        "methods": list(ALL_METHODS),
        "architectures": sorted(ARCHITECTURES),
    }


def run(args) -> int:
    info = collect()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    width = max(map(len, info))
    for key, value in info.items():
        if isinstance(value, list):
            value = ", ".join(value)
        print(f"{key:<{width}}  {value}")
    return 0
