#!/usr/bin/env bash
# Prepared GPU check (step time, peak memory, inference) — see benchmarks/gpu_check.py.
#   bash benchmarks/gpu_check.sh            # on a machine with one CUDA GPU; under 8 minutes
#   bash benchmarks/gpu_check.sh --dry-run  # tiny sizes on the CPU
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
exec timeout 470 "$PY" benchmarks/gpu_check.py "$@"
