"""What this run ran on: package versions and the device, collected once for the bench, the CLI and the notebooks."""
from __future__ import annotations

import platform

import torch

VERSION = "0.1.0"  # peftbook's own version (pyproject.toml says the same; a test keeps them equal)


def package_version(name: str) -> str | None:
    """``name.__version__``, or None when it is not installed or fails to import (a broken backend)."""
    try:
        return __import__(name).__version__
    except Exception:  # ImportError, or a native backend that fails while loading
        return None


def versions(extra: tuple[str, ...] = ()) -> dict:
    """peftbook, python, torch, transformers, accelerate, bitsandbytes (and ``extra`` packages)."""
    found = {"peftbook": VERSION, "python": platform.python_version(), "torch": torch.__version__}
    for name in ("transformers", "accelerate", "bitsandbytes", *extra):
        found[name] = package_version(name)
    return found


def device_info(device: str = "auto") -> dict:
    """The device ``device`` resolves to, CPU threads, and the GPU's name when there is one."""
    from peftbook.models import resolve_device

    info = {"device": str(resolve_device(device)), "cpu_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info
