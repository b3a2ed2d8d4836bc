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

LLAMA_VERSION="0.3.36"
PY="${PYTHON:-python3}"
EXTRAS="${QROUTE_EXTRAS:-test,train}"

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
"$VPY" -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null

# Build flags. GGML's AMX kernels crash (SIGSEGV in ggml_backend_amx_mul_mat) on CPUs or VMs
# that report AMX, so where /proc/cpuinfo lists it we build without native tuning and name
# the instruction sets ourselves.
CMAKE_FLAGS="${CMAKE_ARGS:-}"
if [ -z "$CMAKE_FLAGS" ] && grep -qw amx_int8 /proc/cpuinfo 2>/dev/null; then
  CMAKE_FLAGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
  if grep -qw avx512f /proc/cpuinfo; then
    CMAKE_FLAGS="$CMAKE_FLAGS -DGGML_AVX512=ON"
    grep -qw avx512_vnni /proc/cpuinfo && CMAKE_FLAGS="$CMAKE_FLAGS -DGGML_AVX512_VNNI=ON"
    grep -qw avx512_bf16 /proc/cpuinfo && CMAKE_FLAGS="$CMAKE_FLAGS -DGGML_AVX512_BF16=ON"
    grep -qw avx512vbmi /proc/cpuinfo && CMAKE_FLAGS="$CMAKE_FLAGS -DGGML_AVX512_VBMI=ON"
  fi
fi

if ! "$VPY" -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$LLAMA_VERSION')" 2>/dev/null \
   || [ "$(cat .venv/.llama-flags 2>/dev/null)" != "$CMAKE_FLAGS" ]; then
  KEY=$(printf '%s|%s|%s' "$LLAMA_VERSION" "$CMAKE_FLAGS" "$("$VPY" -c 'import sys; print(sys.version_info[:2])')" | sha256sum | cut -c1-16)
  WHEELS="${XDG_CACHE_HOME:-$HOME/.cache}/qroute/wheels/$KEY"
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
