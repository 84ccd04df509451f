"""What this run ran on: package versions and the device, collected once for the bench, the CLI and the notebooks."""
from __future__ import annotations

import logging
import platform

import torch

VERSION = "0.1.0"  # peftbook's own version (pyproject.toml says the same; a test keeps them equal)

# Third-party log lines that say nothing about the user's run, by logger: dropped at their source.
KNOWN_NOISE = {
    # bitsandbytes tries an optional CPU kernel from the `kernels` package at import and falls back
    # to its own implementation when it is missing; the 4-bit results are the same either way.
    "bitsandbytes.backends.cpu.ops": ("Failed to load CPU gemm_4bit_forward from kernels-community",),
}


class _DropKnownNoise(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


def silence_known_noise() -> None:
    """Drop the ``KNOWN_NOISE`` messages (every other message of those loggers still shows); idempotent."""
    for name, prefixes in KNOWN_NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropKnownNoise) for f in logger.filters):
            logger.addFilter(_DropKnownNoise(prefixes))


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
    """The device ``device`` resolves to, the dtype ``"auto"`` computes in there (``peftbook.precision``), CPU
    threads, and the GPU's name when there is one."""
    from peftbook.models import resolve_device
    from peftbook.precision import choose, dtype_name

    resolved = resolve_device(device)
    info = {"device": str(resolved), "dtype_auto": dtype_name(choose("auto", resolved)[0]),
            "cpu_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info
