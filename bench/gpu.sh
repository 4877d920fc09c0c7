#!/usr/bin/env bash
# The GPU check: harvest ratio, SAE training tokens/s against the bf16
# matrix-product floor, in-process scoring features/minute; one JSON (--out, default
# gpu_check.json). `--smoke` runs it on CPU at tiny sizes (the test suite does).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
exec "$PYTHON" bench/gpu.py "$@"
