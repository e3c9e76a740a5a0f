#!/bin/bash
# The GPU check (benchmarks/gpu_check.py says what it runs): one JSON
# summary in OUT_DIR/summary.json. On a CPU it skips what needs a GPU.
# Usage: bash benchmarks/gpu_check.sh [OUT_DIR] [--quick]
set -eu
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-/tmp/gpu_check}}
shift || true
exec python -m benchmarks.gpu_check --out "$OUT_DIR" "$@"
