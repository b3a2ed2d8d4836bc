"""GPU offload through the real llama.cpp build: runs where the build has a GPU backend (CUDA,
Metal), skips with the reason everywhere else (CI has no GPU)."""

from __future__ import annotations

import json

import pytest

from conftest import qroute, require_model

QUESTION = "What is the capital of France?"


@pytest.mark.real
def test_offloaded_answers_match_the_cpu_and_calibrate_per_gpu_setup(tmp_path):
    require_model("smollm2-135m")
    from qroute_cli.generation.backends.llama import gpu_offload_supported

    if not gpu_offload_supported():
        pytest.skip("this llama-cpp-python build has no GPU backend (a CPU build): scripts/setup.sh builds "
                    "CUDA where nvcc and an NVIDIA GPU are present, Metal on Apple silicon")
    runs = {}
    for layers in ("0", "-1"):
        r = qroute("run", QUESTION, "--pair", "smollm2-135m", "-n", "12", "--json", "--gpu-layers", layers,
                   config=None)
        assert r.returncode == 0, r.stderr
        runs[layers] = json.loads(r.stdout)
    assert runs["-1"]["tokens"] > 0 and runs["-1"]["text"].strip()
    # Greedy on both; GPU kernels sum in another order, so only a near-tie may differ: the
    # answers share their start.
    assert runs["-1"]["text"][:8] == runs["0"]["text"][:8]
    cal = qroute("calibrate", "--quick", "--gpu-layers", "-1", "--model", "smollm2-135m", config=None)
    assert cal.returncode == 0, cal.stderr
    shown = qroute("calibrate", "--show", "--json", "--gpu-layers", "-1", config=None)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["machine"]["gpu_layers"] == -1  # a profile of its own, apart from the CPU's


@pytest.mark.real
def test_a_drafter_kept_on_the_cpu_beside_an_offloaded_verifier(tmp_path):
    """--draft-gpu-layers 0 with --gpu-layers -1 (llama.cpp's -ngld beside -ngl): greedy
    speculation keeps the verifier's answer, and calibration keeps the setup's own profile."""
    require_model("qwen2.5-coder-1.5b")
    require_model("qwen2.5-coder-0.5b")
    from qroute_cli.generation.backends.llama import gpu_offload_supported

    if not gpu_offload_supported():
        pytest.skip("this llama-cpp-python build has no GPU backend (a CPU build): scripts/setup.sh builds "
                    "CUDA where nvcc and an NVIDIA GPU are present, Metal on Apple silicon")
    place = ("--gpu-layers", "-1", "--draft-gpu-layers", "0")
    runs = {}
    for pair in ("qwen2.5-coder-1.5b", "qwen2.5-coder-1.5b+0.5b"):
        r = qroute("run", QUESTION, "--pair", pair, "-n", "16", "--json", *place, config=None)
        assert r.returncode == 0, r.stderr
        runs[pair] = json.loads(r.stdout)
    assert runs["qwen2.5-coder-1.5b+0.5b"]["drafted"] > 0
    assert runs["qwen2.5-coder-1.5b+0.5b"]["text"][:8] == runs["qwen2.5-coder-1.5b"]["text"][:8]
    cal = qroute("calibrate", "--quick", "--model", "qwen2.5-coder-0.5b", *place, config=None)
    assert cal.returncode == 0, cal.stderr
    shown = json.loads(qroute("calibrate", "--show", "--json", *place, config=None).stdout)
    assert shown["machine"]["draft_gpu_layers"] == 0 and "qwen2.5-coder-0.5b (draft)" in shown["models"]


def _cmake_flags(tmp_path, tools: dict[str, str]) -> str:
    """llama_cmake_flags of scripts/lib/llama_build.sh with PATH holding only `tools` (name ->
    script body) beside the basic commands."""
    import os
    import shutil
    import subprocess
    from pathlib import Path

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    for name in ("grep", "cat", "ls"):
        (bin_dir / name).symlink_to(shutil.which(name))
    for name, body in tools.items():
        (bin_dir / name).write_text("#!/bin/sh\n" + body + "\n")
        (bin_dir / name).chmod(0o755)
    lib = Path(__file__).resolve().parent.parent / "scripts" / "lib" / "llama_build.sh"
    env = {k: v for k, v in os.environ.items() if k != "CMAKE_ARGS"} | {"PATH": str(bin_dir)}
    done = subprocess.run([shutil.which("bash"), "-c", f"source {lib}; llama_cmake_flags"],
                          capture_output=True, text=True, env=env, check=True)
    return done.stdout.strip()


def test_setup_builds_cuda_for_this_machines_gpu_only_where_one_is_present(tmp_path):
    """Where nvcc and an NVIDIA GPU are both present, setup builds CUDA kernels for that GPU
    alone (native: a build for every architecture takes several times longer); nvcc alone, a
    toolkit without a GPU, builds for the CPU."""
    gpu = {"nvcc": "exit 0", "nvidia-smi": "echo 'GPU 0: NVIDIA H200 (UUID: GPU-0)'"}
    flags = _cmake_flags(tmp_path / "gpu", gpu).split()
    assert "-DGGML_CUDA=ON" in flags and "-DCMAKE_CUDA_ARCHITECTURES=native" in flags
    no_gpu = _cmake_flags(tmp_path / "toolkit", {"nvcc": "exit 0", "nvidia-smi": "exit 9"})
    assert "CUDA" not in no_gpu
