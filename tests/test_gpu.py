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
