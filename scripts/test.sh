#!/usr/bin/env bash
# Set up qroute (scripts/setup.sh), fetch the models the tests use, run the whole test suite.
#
# Real-model tests use smollm2-135m and the Qwen pair (about 1.7 GB, fetched once into the
# model cache). QROUTE_REQUIRE_MODELS=1 turns a missing model (or a package of the test extra)
# into a failure, not a skip.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
# llama.cpp's own llama-server (for the tests against real servers) compiles while the models
# download; cached, so only the first run pays. If it fails, QROUTE_LLAMA_BIN_DIR names a
# folder that does not exist and the tests that need it fail, with the build log named above.
TOOLS_OUT="$(mktemp)"
bash scripts/build_llama_tools.sh >"$TOOLS_OUT" &
TOOLS_PID=$!
.venv/bin/qroute models pull smollm2-135m qwen2.5-coder-0.5b qwen2.5-coder-1.5b
if wait "$TOOLS_PID"; then
  QROUTE_LLAMA_BIN_DIR="$(tail -n 1 "$TOOLS_OUT")"
else
  QROUTE_LLAMA_BIN_DIR="/nonexistent/llama-tools-build-failed"
fi
rm -f "$TOOLS_OUT"
export QROUTE_LLAMA_BIN_DIR
# -rs lists every skipped test with its reason.
QROUTE_REQUIRE_MODELS=1 .venv/bin/python -m pytest -q -rs "$@"
