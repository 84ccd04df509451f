#!/usr/bin/env bash
# Simulated vs measured peak memory on CUDA, every method, tiny base + a ~1B random-init Llama,
# then every step option (memory.StepOptions) on a tiny shape.
# Usage: scripts/gpu_check.sh [--json OUT.json]   (needs a CUDA GPU; fails loudly without one)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
# 1. every method on the tiny base and a 1B shape, default step: 7 minutes at most, whatever happens
status=0
timeout 420 "$PY" scripts/gpu_check.py "$@" || status=$?
# 2. the step options (checkpointing, fused / 8-bit AdamW, SGD, fp32 adapter, chunked loss) x full, LoRA,
#    QLoRA, prefix tuning, simulated vs measured on CUDA (tests marked gpu): 2 minutes at most
timeout 120 "$PY" -m pytest -q -m gpu tests/test_memory_options.py -k on_cuda || status=$?
exit $status
