#!/usr/bin/env bash
# The GPU suite in one command (see benchmarks/gpu_suite.py --help): run it whenever a GPU is lent.
#   benchmarks/gpu_suite.sh                    # CUDA, fp16, 16 x 512 x 512, 50 DDIM steps; writes gpu_suite.json
#   benchmarks/gpu_suite.sh --smoke --json x   # the same code on the CPU, tiny sizes
# PYTHON names the interpreter (default: python on the PATH).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python}" "$root/benchmarks/gpu_suite.py" "$@"
