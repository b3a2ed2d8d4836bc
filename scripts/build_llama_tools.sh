#!/usr/bin/env bash
# Build llama.cpp's own tools (llama-server, llama-speculative-simple, llama-bench) from the
# llama.cpp that the llama-cpp-python sdist vendors, with the same version and build flags as
# the wheel scripts/setup.sh compiles, and keep them in a cache folder named after both:
#
#   bash scripts/build_llama_tools.sh        prints the folder holding the binaries (last line)
#   QROUTE_LLAMA_BIN_DIR=$(bash scripts/build_llama_tools.sh)
#
# The folder is $XDG_CACHE_HOME/qroute/bin/<key> (~/.cache/qroute/bin/<key>); with it in place
# this takes a second and compiles nothing. A cold build compiles llama.cpp's common code and
# the three tools only (no tests, no other examples, no web UI): minutes on 2 cores, logged to
# a file whose name the progress line gives. Binaries are linked statically, so the folder can
# be moved. CMAKE_ARGS overrides the build flags as it does for setup.sh;
# QROUTE_BUILD_JOBS sets the parallel compile jobs (default: the number of cores).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/llama_build.sh

TOOLS="llama-server llama-speculative-simple llama-bench"
FLAGS="$(llama_cmake_flags)"
KEY=$(llama_cache_key "$LLAMA_VERSION" "$FLAGS" "$(uname -sm)" "$TOOLS")
CACHE="$(qroute_cache_dir)"
BIN="$CACHE/bin/$KEY"

have_all() {
  local tool
  for tool in $TOOLS; do
    [ -x "$1/$tool" ] || return 1
  done
}

if have_all "$BIN"; then
  echo "$BIN"
  exit 0
fi

fail() {
  echo "error: $1" >&2
  [ -n "${2:-}" ] && echo "hint: $2" >&2
  exit 1
}

CMAKE="$(command -v cmake || true)"
[ -z "$CMAKE" ] && [ -x .venv/bin/cmake ] && CMAKE=.venv/bin/cmake
[ -n "$CMAKE" ] || fail "cmake is not installed" "install it (apt-get install cmake, brew install cmake, or pip install cmake)"
GENERATOR=()
command -v ninja >/dev/null 2>&1 && GENERATOR=(-G Ninja)
JOBS="${QROUTE_BUILD_JOBS:-$(nproc 2>/dev/null || sysctl -n hw.ncpu)}"

# The sdist is kept beside the binaries, so a rebuild with other flags fetches nothing.
SDIST_DIR="$CACHE/sdist"
SDIST="$SDIST_DIR/llama_cpp_python-$LLAMA_VERSION.tar.gz"
if [ ! -f "$SDIST" ]; then
  echo "Fetching the llama-cpp-python $LLAMA_VERSION source..." >&2
  mkdir -p "$SDIST_DIR"
  PIP_PY=.venv/bin/python
  [ -x "$PIP_PY" ] || PIP_PY="${PYTHON:-python3}"
  "$PIP_PY" -m pip download -q --disable-pip-version-check --no-binary :all: --no-deps \
    -d "$SDIST_DIR" "llama-cpp-python==$LLAMA_VERSION" >&2 \
    || fail "could not download the llama-cpp-python $LLAMA_VERSION source" "check the network, or put the sdist at $SDIST"
fi

WORK="$CACHE/build/tools-$KEY"
LOG="$CACHE/build/tools-$KEY.log"
rm -rf "$WORK"
mkdir -p "$WORK"
echo "Compiling llama.cpp's $TOOLS ($JOBS jobs, a few minutes; log: $LOG)..." >&2
# The steps are joined by && because errexit does not apply inside a block followed by ||.
{
  SRC="$WORK/llama_cpp_python-$LLAMA_VERSION/vendor/llama.cpp"
  tar -xzf "$SDIST" -C "$WORK" &&
  # shellcheck disable=SC2086  # FLAGS is a list of -D options
  "$CMAKE" -S "$SRC" -B "$WORK/build" ${GENERATOR[@]+"${GENERATOR[@]}"} -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=ON \
    -DLLAMA_BUILD_EXAMPLES=ON -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_UI=OFF \
    -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF $FLAGS &&
  # shellcheck disable=SC2086  # TOOLS is a list of targets
  "$CMAKE" --build "$WORK/build" --config Release -j "$JOBS" --target $TOOLS
} >"$LOG" 2>&1 || {
  tail -n 15 "$LOG" >&2
  rm -rf "$WORK"
  fail "compiling llama.cpp's tools failed (full log: $LOG)" "a C++17 compiler and cmake >= 3.14 are needed; CMAKE_ARGS overrides the build flags"
}

# Fill a temporary folder and rename it into place, so that an interrupted or concurrent
# build never leaves a half-filled cache folder that looks complete.
TMP="$BIN.tmp.$$"
rm -rf "$TMP"
mkdir -p "$TMP"
for tool in $TOOLS; do
  cp "$WORK/build/bin/$tool" "$TMP/"
done
printf 'llama-cpp-python: %s\ncmake flags: %s\nplatform: %s\ntools: %s\nkey: %s\nbuilt: %s\n' \
  "$LLAMA_VERSION" "${FLAGS:-(none)}" "$(uname -sm)" "$TOOLS" "$KEY" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  >"$TMP/build-info.txt"
if [ -d "$BIN" ]; then
  rm -rf "$BIN"
fi
mv "$TMP" "$BIN" 2>/dev/null || rm -rf "$TMP"
have_all "$BIN" || fail "the tools were built but are missing from $BIN" "delete $BIN and run this again"
rm -rf "$WORK"
echo "llama.cpp tools are in $BIN" >&2
echo "$BIN"
