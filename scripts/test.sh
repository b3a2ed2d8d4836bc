#!/usr/bin/env bash
# Set up qroute (scripts/setup.sh), fetch the models the tests use, run the whole test suite.
#
# Real-model tests use smollm2-135m and the Qwen pair (about 1.7 GB, fetched once into the
# model cache). QROUTE_REQUIRE_MODELS=1 turns a missing model (or a package of the test extra)
# into a failure, not a skip.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
.venv/bin/qroute models pull smollm2-135m qwen2.5-coder-0.5b qwen2.5-coder-1.5b
# -rs lists every skipped test with its reason.
QROUTE_REQUIRE_MODELS=1 .venv/bin/python -m pytest -q -rs "$@"
