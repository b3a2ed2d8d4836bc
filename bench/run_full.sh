#!/usr/bin/env bash
# Regenerate bench/results and bench/REPORT.md (the figures in the report).
# Needs the built-in models: `.venv/bin/qroute models pull`. Takes about an hour on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
$PY bench/engine.py --out bench/results/engine.json
.venv/bin/qroute bench --full --out bench/results
[ -f bench/latency_error.py ] && $PY bench/latency_error.py || true
$PY bench/write_report.py
