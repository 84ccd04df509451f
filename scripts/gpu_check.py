"""GPU check: simulated vs measured peak memory of one training step, on CUDA, for every method.

Models: the embedded tiny base (``data/tiny``; a tiny random Llama if it is not built) and a
random-init Llama 3.2 1B shape (~1.2B parameters), bf16 weights, AdamW (PyTorch's foreach path, as
on any CUDA run). For each (model, method, batch, seq) the simulation (``simulate_memory(...,
device="cuda")``, fake tensors on CPU) is compared with the allocator's real peak
(``torch.cuda.max_memory_allocated`` over the same steady-state step). Prints one table; exits 1 if
any row is off by more than the tolerance, 2 if there is no CUDA device.

"untracked MB" is what the allocator holds that no tensor storage accounts for: mostly the cuBLAS
workspace (a few to 32 MiB per stream, allocated by the first matmul) and scratch memory inside
kernels. The simulation does not model it, so on the tiny base (a few MB in all) expect those rows
to be OFF by about that amount; on the 1B model it is well under 1%.

    scripts/gpu_check.sh [--json results.json] [--tolerance 0.05]
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
import time

DEADLINE_S = 450  # leave headroom inside the 8 minutes of gpu_check.sh


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument("--tolerance", type=float, default=0.05)
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("GPU CHECK FAILED: torch.cuda.is_available() is False (torch "
              f"{torch.__version__}, CUDA build: {torch.version.cuda}). This check needs a CUDA GPU; "
              "nothing was compared.", file=sys.stderr)
        return 2

    from peftbook.memory import measure_memory, simulate_memory
    from peftbook.memory.simulate import build_model, resolve_config
    from peftbook.methods import TRAINABLE_METHODS, make_config
    from peftbook.models import TINY_DIR

    tiny = "tiny" if (TINY_DIR / "config.json").exists() else "tiny-llama"
    cases = [(tiny, 4, 128), (tiny, 8, 256), ("llama-1b", 1, 512), ("llama-1b", 2, 1024)]
    print(f"device: {torch.cuda.get_device_name(0)}; torch {torch.__version__}; tolerance {args.tolerance:.0%}",
          flush=True)
    start = time.perf_counter()
    rows, failures = [], []
    header = (f"{'model':<11} {'method':<14} {'batch':>5} {'seq':>5} {'simulated MB':>13} {'measured MB':>12} "
              f"{'sim/meas':>8} {'reserved MB':>12} {'untracked MB':>12}  status")
    print(header + "\n" + "-" * len(header), flush=True)
    for model_name, batch, seq in cases:
        config = resolve_config(model_name)
        for method in TRAINABLE_METHODS:
            if time.perf_counter() - start > DEADLINE_S:
                failures.append(f"{model_name}/{method}/{batch}x{seq}: not run (time budget exhausted)")
                continue
            row = {"model": model_name, "method": method, "batch": batch, "seq": seq}
            try:
                simulated = simulate_memory(config, make_config(method), batch, seq, "bf16", device="cuda")
                with torch.device("cuda"):
                    model = build_model(config, torch.bfloat16, make_config(method))
                measured = measure_memory(model, batch, seq, device="cuda")
                del model
                row.update(simulated_bytes=simulated.peak_bytes, measured_bytes=measured.peak_bytes,
                           reserved_bytes=measured.reserved_bytes,
                           tracker_bytes=sum(v for k, v in measured.by_category.items() if k != "other"),
                           simulated_by_category=simulated.by_category, measured_by_category=measured.by_category)
                ratio = simulated.peak_bytes / measured.peak_bytes
                row["ratio"] = ratio
                ok = abs(ratio - 1) <= args.tolerance
                row["status"] = "ok" if ok else "OFF"
                if not ok:
                    failures.append(f"{model_name}/{method}/{batch}x{seq}: simulated/measured = {ratio:.3f}")
                print(f"{model_name:<11} {method:<14} {batch:>5} {seq:>5} {simulated.peak_bytes / 1e6:>13.1f} "
                      f"{measured.peak_bytes / 1e6:>12.1f} {ratio:>8.3f} {measured.reserved_bytes / 1e6:>12.1f} "
                      f"{measured.by_category['other'] / 1e6:>12.1f}  {row['status']}", flush=True)
            except Exception as error:  # report every case, fail at the end
                row["status"] = f"ERROR {type(error).__name__}: {error}"
                failures.append(f"{model_name}/{method}/{batch}x{seq}: {row['status']}")
                print(f"{model_name:<11} {method:<14} {batch:>5} {seq:>5}  {row['status']}", flush=True)
            rows.append(row)
            gc.collect()
            torch.cuda.empty_cache()
    print(f"\n{len(rows)} cases in {time.perf_counter() - start:.0f} s")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=2)
    if failures:
        print("GPU CHECK FAILED:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    print("GPU CHECK PASSED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
