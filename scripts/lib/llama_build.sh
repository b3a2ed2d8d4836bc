# Shared by scripts/setup.sh (the llama-cpp-python wheel) and scripts/build_llama_tools.sh
# (llama.cpp's own llama-server and friends, from the same sdist): one llama.cpp version, one
# set of build flags, one way to name a cache folder after them. Source it; it defines:
#
#   LLAMA_VERSION            the llama-cpp-python release qroute is built against
#   llama_cmake_flags        the CMake flags for this machine (CMAKE_ARGS, when set, wins)
#   llama_cache_key PART...  a 16-hex-digit key of its arguments joined by "|"
#   qroute_cache_dir         ~/.cache/qroute, or $XDG_CACHE_HOME/qroute

LLAMA_VERSION="0.3.36"

qroute_cache_dir() {
  echo "${XDG_CACHE_HOME:-$HOME/.cache}/qroute"
}

# GGML's AMX kernels crash (SIGSEGV in ggml_backend_amx_mul_mat) on CPUs or VMs that report
# AMX, so where /proc/cpuinfo lists it we build without native tuning and name the instruction
# sets ourselves. CUDA is built where nvcc is on PATH and an NVIDIA GPU is present, for the
# GPUs of this machine; nvcc alone is not enough, since a
# CUDA toolkit without a GPU would only add a long compile that cannot run. Metal needs no
# flag: llama.cpp turns it on for Apple by default.
llama_cmake_flags() {
  if [ -n "${CMAKE_ARGS:-}" ]; then
    echo "$CMAKE_ARGS"
    return
  fi
  local flags=""
  if grep -qw amx_int8 /proc/cpuinfo 2>/dev/null; then
    flags="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
    if grep -qw avx512f /proc/cpuinfo; then
      flags="$flags -DGGML_AVX512=ON"
      grep -qw avx512_vnni /proc/cpuinfo && flags="$flags -DGGML_AVX512_VNNI=ON"
      grep -qw avx512_bf16 /proc/cpuinfo && flags="$flags -DGGML_AVX512_BF16=ON"
      grep -qw avx512vbmi /proc/cpuinfo && flags="$flags -DGGML_AVX512_VBMI=ON"
    fi
  fi
  if command -v nvcc >/dev/null 2>&1 && llama_has_nvidia_gpu; then
    # Kernels for this machine's GPUs alone. GGML picks "native" itself only with native CPU
    # tuning; without it (AMX above) it would build for every architecture, several times longer.
    flags="${flags:+$flags }-DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=native"
  fi
  echo "$flags"
}

llama_has_nvidia_gpu() {
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi -L 2>/dev/null | grep -q '^GPU'
  else
    [ -n "$(ls /proc/driver/nvidia/gpus 2>/dev/null)" ]
  fi
}

# The key of a cached build: the parts joined by "|", hashed. Existing wheel caches were keyed
# by exactly this string, so the join must stay as it is.
llama_cache_key() {
  local IFS="|"
  if command -v sha256sum >/dev/null 2>&1; then
    printf '%s' "$*" | sha256sum | cut -c1-16
  else
    printf '%s' "$*" | shasum -a 256 | cut -c1-16
  fi
}
