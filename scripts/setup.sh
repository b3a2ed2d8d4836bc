#!/usr/bin/env bash
# Set up qroute in ./.venv: Python packages, and llama-cpp-python compiled for this CPU.
#
#   bash scripts/setup.sh            runtime, test and predictor-training dependencies
#   QROUTE_EXTRAS=test bash scripts/setup.sh   fewer extras
#
# llama.cpp is compiled from source (about 5 minutes on 2 cores). The wheel is kept in
# ~/.cache/qroute/wheels under a key of the version and build flags, so a second setup on
# the same machine reuses it.
set -euo pipefail
cd "$(dirname "$0")/.."

# LLAMA_VERSION, llama_cmake_flags (AMX, CUDA), llama_cache_key: shared with build_llama_tools.sh
source scripts/lib/llama_build.sh
PY="${PYTHON:-python3}"
EXTRAS="${QROUTE_EXTRAS:-test,train}"

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
"$VPY" -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null

CMAKE_FLAGS="$(llama_cmake_flags)"

if ! "$VPY" -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$LLAMA_VERSION')" 2>/dev/null \
   || [ "$(cat .venv/.llama-flags 2>/dev/null)" != "$CMAKE_FLAGS" ]; then
  KEY=$(llama_cache_key "$LLAMA_VERSION" "$CMAKE_FLAGS" "$("$VPY" -c 'import sys; print(sys.version_info[:2])')")
  WHEELS="$(qroute_cache_dir)/wheels/$KEY"
  if ! ls "$WHEELS"/llama_cpp_python-*.whl >/dev/null 2>&1; then
    echo "Compiling llama-cpp-python $LLAMA_VERSION (about 5 minutes on 2 cores)..."
    mkdir -p "$WHEELS"
    CMAKE_ARGS="$CMAKE_FLAGS" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
      "$VPY" -m pip wheel -q --disable-pip-version-check --no-deps --no-binary llama-cpp-python \
      --no-cache-dir -w "$WHEELS" "llama-cpp-python==$LLAMA_VERSION"
  fi
  "$VPY" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps "$WHEELS"/llama_cpp_python-*.whl
  echo "$CMAKE_FLAGS" > .venv/.llama-flags
fi

"$VPY" -m pip install -q --disable-pip-version-check -e ".[${EXTRAS}]"
echo "qroute is installed in .venv (run .venv/bin/qroute --help)."
