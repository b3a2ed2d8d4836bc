#!/usr/bin/env bash
# GPU checks and figures on a machine where scripts/setup.sh built llama.cpp with CUDA:
# the GPU tests, calibration with every layer offloaded and on the CPU alone, forced pairs
# through `qroute run` on the GPU, and bench.engine on the GPU and on the CPU of the same
# machine. smollm2-135m only (the smallest model: `qroute models pull smollm2-135m`).
# Writes bench/results/gpu/; bench/REPORT.md's GPU section is written from those files.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=bench/results/gpu
mkdir -p "$OUT"
$PY -m pytest -q -rs tests/test_gpu.py
for gl in -1 0; do
  $PY -m qroute_cli calibrate --model smollm2-135m --gpu-layers $gl
done
$PY -m qroute_cli calibrate --show --json --gpu-layers -1 > "$OUT/profile_gpu.json"
$PY -m qroute_cli calibrate --show --json --gpu-layers 0 > "$OUT/profile_host_cpu.json"
$PY -m bench.cli_speed --verifier smollm2-135m --pairs smollm2-135m+ngram --rounds 5 -n 128 \
  --gpu-layers -1 --out "$OUT/cli_speed_gpu.json"
$PY -m bench.engine --quick --gpu-layers -1 --out "$OUT/engine_gpu.json"
$PY -m bench.engine --quick --out "$OUT/engine_host_cpu.json"
