#!/usr/bin/env bash
# Regenerate bench/results and bench/REPORT.md (the figures in the report).
# Needs the built-in models (`.venv/bin/qroute models pull`) and a quiet machine: every
# figure is a timing. Takes several hours on 2 cores, the 40-prompt bench most of them.
#
# The routing ablations use the predictor files of `python -m predictor.train` in
# predictor/build (length-only, task-mean: one quality per task type, and the MiniLM model
# when its weights are installed, see predictor/README.md); whichever is missing is left out
# of the comparison. The bench (40 prompts per task, --full) extends the committed
# bench/results where the regime matches, and an interrupted run resumes from its cache:
# to go on, rerun its `qroute bench` line alone (the whole script calibrates again, and the
# routes follow the profile; see "The result cache" in README.md).
# bench/results/build_speed.jsonl (two llama.cpp builds side by side) is made by hand: see
# the "Decode speed" section of bench/REPORT.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
SPEED=bench/results/decode_speed.jsonl
rm -f "$SPEED"
$PY -m bench.decode_speed --models smollm2-135m,qwen2.5-coder-0.5b --threads 2 --label "2 threads" --out "$SPEED"
$PY -m bench.decode_speed --models smollm2-135m,qwen2.5-coder-0.5b --threads 1 --label "1 thread" --out "$SPEED"
$PY -m bench.decode_speed --models smollm2-135m --threads 2 --hog --label "2 threads, one core busy" --out "$SPEED"
$PY -m bench.decode_speed --models smollm2-135m --threads 1 --hog --label "1 thread, one core busy" --out "$SPEED"
.venv/bin/qroute calibrate --yes
$PY -m bench.engine --out bench/results/engine.json
bash scripts/build_llama_tools.sh
$PY -m bench.native --threads 2 --repeats 3
$PY -m bench.cli_speed
$PY -m bench.startup
SCORERS=()
[ -f predictor/build/length-only.onnx ] && SCORERS+=(--scorer length-only=predictor/build/length-only.onnx)
[ -f predictor/build/task-mean.onnx ] && SCORERS+=(--scorer task-mean=predictor/build/task-mean.onnx)
[ -f predictor/build/minilm-ridge.onnx ] && SCORERS+=(--scorer minilm=predictor/build/minilm-ridge.onnx)
# The shipped architecture as fitted, before the share of its spread each task keeps (predictor.train).
SHIP=$($PY -c "import json; print(json.load(open('predictor/results/cv.json'))['shipped'])")
[ -f "predictor/build/$SHIP.onnx" ] && SCORERS+=(--scorer "as-fitted=predictor/build/$SHIP.onnx")
.venv/bin/qroute bench --full --threads 2 --wait-quiet 0.1 --out bench/results "${SCORERS[@]}"
# NQ on 200 prompts: 40 cannot tell its pairs apart (NQ answers are short: about an hour).
.venv/bin/qroute bench --tasks nq --limit 200 --no-live --threads 2 --wait-quiet 0.1 --out bench/results/nq200 "${SCORERS[@]}"
$PY -m bench.overhead
$PY -m bench.latency_error
$PY -m bench.chat_ttft
$PY -m bench.budget_hit
$PY -m bench.load_test
$PY -m bench.write_report
