"""Which precision a model computes in: ``dtype="auto"`` and the CPU's native bf16.

``resolve_dtype("auto", device)`` picks

* **bf16 on CUDA** (every GPU peftbook supports computes it natively);
* **bf16 on a CPU with native bf16** (x86 ``avx512_bf16`` or ``amx_bf16`` in the processor's flags:
  Intel Cooper Lake / Sapphire Rapids and later, AMD Zen 4 and later; ARM's ``bf16`` feature:
  Apple M2 and later, Graviton 3): there a bf16 matrix product runs about twice as fast as fp32
  (measured on this project's 2-core AMD EPYC: 205 against 94 GFLOP/s for SmolLM2's MLP shape);
* **fp32 on any other CPU**, where bf16 is emulated and slower than fp32.

Where the flags cannot be read, a short probe times a bf16 and an fp32 matrix product and calls
bf16 native when it is clearly faster. The choice and its reason are printed once per process and
go into every run's record (``precision_record``). ``"fp32"`` and ``"bf16"`` force either; a forced
bf16 on a CPU without it works, slower, with a one-line note.

What "computing in bf16" means for training (``peftbook.train``): the frozen weights are bf16, the
trainable ones and their optimizer state fp32 (master weights), the forward runs under bf16
autocast. See ``benchmarks/README.md`` ("bf16 on the CPU") for the measurements behind it.
"""
from __future__ import annotations

import contextlib
import functools
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

DTYPE_CHOICES = ("auto", "fp32", "bf16")
DTYPE_NAMES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
               "fp16": torch.float16, "float16": torch.float16}
X86_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo names of the instructions
PROBE_SPEEDUP = 1.3  # bf16 must beat fp32 by this much in the probe to count as native


def cpu_flags() -> set[str] | None:
    """The processor's feature flags from /proc/cpuinfo (Linux), or None where they cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86, ARM
            return set(value.split())
    return None


def macos_has_bf16() -> bool | None:
    """Apple silicon's ``hw.optional.arm.FEAT_BF16`` (M2 and later), or None where sysctl does not say."""
    try:
        out = subprocess.run(["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], capture_output=True, text=True,
                             timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() == "1" if out.returncode == 0 else None


def probe_speedup(size: int = 384, repeats: int = 5) -> float:
    """fp32 time / bf16 time of a ``size``-square matrix product (best of ``repeats``): > 1 means bf16 is faster."""
    def best(dtype):
        a = torch.randn(size, size).to(dtype)
        b = torch.randn(size, size).to(dtype)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - start)
        return min(times)

    return best(torch.float32) / best(torch.bfloat16)


@functools.lru_cache(maxsize=1)
def native_bf16() -> tuple[bool, str]:
    """(whether this CPU computes bf16 natively, why we think so): its flags, else a measured probe."""
    capability = torch.backends.cpu.get_cpu_capability()  # torch's kernel level, e.g. "AVX512"; not bf16 itself
    flags = cpu_flags()
    machine = platform.machine().lower()
    if flags is not None and machine in ("x86_64", "amd64", "i686"):
        found = [f for f in X86_BF16_FLAGS if f in flags]
        if found:
            return True, f"the processor has native bf16 ({', '.join(found)}; torch kernels: {capability})"
        return False, f"the processor has no native bf16 (no {' or '.join(X86_BF16_FLAGS)} in its flags)"
    if flags is not None and machine in ("aarch64", "arm64"):
        if "bf16" in flags:
            return True, "the processor has native bf16 (ARM bf16 feature)"
        return False, "the processor has no native bf16 (no ARM bf16 feature)"
    if sys.platform == "darwin" and machine == "arm64":
        apple = macos_has_bf16()
        if apple is not None:
            return apple, ("Apple silicon with native bf16 (FEAT_BF16)" if apple
                           else "Apple silicon without native bf16 (M1: no FEAT_BF16)")
    speedup = probe_speedup()
    verdict = speedup >= PROBE_SPEEDUP
    return verdict, (f"a probe found bf16 matrix products {speedup:.2f}x as fast as fp32 "
                     f"({'native' if verdict else 'not native'}: the threshold is {PROBE_SPEEDUP}x)")


_said: set[str] = set()


def say_once(message: str) -> None:
    """Print ``message`` the first time it comes up in this process: on stderr, beside progress bars; on stdout
    under the notebook runner (``PEFTBOOK_PROGRESS=final``), where it is part of the recorded output."""
    from peftbook.progress import progress_mode

    if message not in _said:
        _said.add(message)
        print(f"peftbook: {message}", file=sys.stdout if progress_mode() == "final" else sys.stderr, flush=True)


def choose(dtype, device: torch.device) -> tuple[torch.dtype, bool, str]:
    """(the torch dtype ``dtype`` resolves to on ``device``, whether it was chosen automatically, why).

    ``dtype``: None or "auto", "fp32" / "bf16" (or "float32", "bfloat16", "fp16", "float16"), or a torch dtype.
    """
    if isinstance(dtype, torch.dtype):
        return dtype, False, "asked for"
    if dtype is None or dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16, True, "CUDA computes bf16 natively"
        native, why = native_bf16()
        return (torch.bfloat16 if native else torch.float32), True, why
    if dtype not in DTYPE_NAMES:
        raise ValueError(f"dtype {dtype!r} is not allowed; allowed: auto, {', '.join(DTYPE_NAMES)}")
    return DTYPE_NAMES[dtype], False, "asked for"


def resolve_dtype(dtype, device: torch.device) -> torch.dtype:
    """The torch dtype for ``dtype`` on ``device``; on a CPU, the automatic choice is printed once per process,
    and a note when bf16 is forced on a CPU that only emulates it (``choose`` decides without a word)."""
    chosen, automatic, why = choose(dtype, device)
    if device.type == "cpu":
        if automatic:
            say_once(f"computing in {dtype_name(chosen)} on the CPU: {why}; dtype='fp32' or 'bf16' forces either")
        elif chosen == torch.bfloat16 and not native_bf16()[0]:
            say_once("bf16 was asked for on a CPU without native bf16: it works, but slower than fp32 here")
    return chosen


def dtype_name(dtype: torch.dtype) -> str:
    """"fp32", "bf16", "fp16" (or torch's name for another dtype)."""
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, str(dtype))


def model_dtype(model) -> torch.dtype:
    """The dtype a model computes in: that of its frozen floating-point weights, or of all of them when every
    weight trains (full fine-tuning); a 4-bit base computes in its layers' compute dtype."""
    frozen = [p for p in model.parameters() if p.is_floating_point() and not p.requires_grad]
    chosen = frozen or [p for p in model.parameters() if p.is_floating_point()]
    compute = {getattr(m, "compute_dtype", None) for m in model.modules()} - {None}
    dtypes = {p.dtype for p in chosen} | compute
    for dtype in (torch.bfloat16, torch.float16):  # a 16-bit base with fp32 norms or adapters computes in 16 bits
        if dtype in dtypes:
            return dtype
    return torch.float32


def precision_record(model, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> dict:
    """What a run records of its precision: ``{"dtype", "device", "native_bf16", "reason"}`` (the last two on a
    CPU); ``dtype``: the compute dtype, when it is not the model's own (``model_dtype``)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    record = {"dtype": dtype_name(dtype or model_dtype(model)), "device": device.type}
    if device.type == "cpu":
        native, why = native_bf16()
        record.update(native_bf16=native, reason=why)
    return record


@contextlib.contextmanager
def fp32_master_weights(params: list):
    """The 16-bit ``params`` in fp32 while the block runs (master weights: gradients, optimizer state and
    updates in fp32); rounded back to their own dtype when it ends, however it ends."""
    originals = {p: p.dtype for p in params if p.dtype in (torch.bfloat16, torch.float16)}
    for parameter in originals:
        parameter.data = parameter.data.float()
    try:
        yield
    finally:
        for parameter, dtype in originals.items():
            parameter.data = parameter.data.to(dtype)
