#!/usr/bin/env bash
# Simulated vs measured peak memory on CUDA, every method, tiny base + a ~1B random-init Llama.
# Usage: scripts/gpu_check.sh [--json OUT.json]   (needs a CUDA GPU; fails loudly without one)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
# 8 minutes at most, whatever happens
exec timeout 480 "$PY" scripts/gpu_check.py "$@"
