#!/usr/bin/env bash
# The GPU suite on a CUDA machine whose Python already holds JAX (CUDA plugin) and PyTorch:
#   benchmarks/gpu_suite.sh [--wheels DIR] OUT [gpu_suite.py options]
# run from anywhere; DIR holds the wheels of benchmarks/gpu-requirements.txt, installed without an
# index into a private folder first. It ends within 6 minutes of its start, installs included
# (gpu_suite.py --budget gets what is left of 355 s). Results: OUT/suite.json, OUT/suite.log.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
if [[ "${1:-}" == "--wheels" ]]; then
    site="$(mktemp -d)"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$2"/*.whl
    export PYTHONPATH="$site"
    shift 2
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec python3 "$root/benchmarks/gpu_suite.py" --budget "$((355 - SECONDS))" --out "$@"
