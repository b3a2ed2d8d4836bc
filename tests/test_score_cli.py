"""`qroute score` as a user runs it (subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import FAKE_CONFIG, qroute


@pytest.fixture
def tiny(tmp_path):
    pytest.importorskip("onnx")
    from predictor import export

    path = tmp_path / "predictor.onnx"
    export.random_predictor(path, ["fake-big", "fake-small"], ["fake-big+fake-small", "fake-big+ngram"])
    return path


def test_json_has_documented_fields(tiny):
    r = qroute("score", "What is 17 * 23?", "--json", "--predictor", str(tiny))
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stdout)
    assert set(obj) == {"prompt", "quality", "acceptance", "length", "predictor", "latency_ms"}
    assert obj["prompt"] == "What is 17 * 23?" and obj["predictor"] == "random-0"
    assert set(obj["quality"]) == set(obj["length"]) == {"fake-big", "fake-small"}
    assert set(obj["acceptance"]) == {"fake-big+small", "fake-big+ngram"}
    assert obj["latency_ms"] > 0


def test_stdin_plain_lines_and_json_lines(tiny):
    stdin = 'first prompt\n{"prompt": "second prompt"}\n\nthird\n'
    r = qroute("score", "--json", input=stdin, env={"QROUTE_PREDICTOR": str(tiny)})
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["prompt"] for row in rows] == ["first prompt", "second prompt", "third"]
    assert rows[0]["quality"] != rows[2]["quality"]


def test_table_output_names_models_and_pairs(tiny):
    r = qroute("score", "Write a poem about rain.", "--predictor", str(tiny))
    assert r.returncode == 0, r.stderr
    for name in ("fake-big", "fake-small", "fake-big+ngram", "quality", "acceptance"):
        assert name in r.stdout


def test_missing_predictor_is_a_message_not_a_traceback(tmp_path):
    r = qroute("score", "hi", "--predictor", str(tmp_path / "none.onnx"))
    assert r.returncode == 5
    assert "Predictor file not found" in r.stderr and "predictor.train" in r.stderr
    assert "Traceback" not in r.stderr


def test_corrupt_predictor_is_a_message_not_a_traceback(tmp_path):
    bad = tmp_path / "predictor.onnx"
    bad.write_bytes(b"\x00garbage" * 100)
    r = qroute("score", "hi", "--predictor", str(bad))
    assert r.returncode == 5
    assert "cannot be loaded" in r.stderr and "Traceback" not in r.stderr


def test_shipped_predictor_scores_real_models():
    r = qroute("score", "What is the capital of France?", "--json", config=None)
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stdout)
    assert {"qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b", "gemma-3-270m", "smollm2-135m"} <= set(obj["quality"])
    assert "qwen2.5-coder-1.5b+0.5b" in obj["acceptance"]


def test_a_bad_line_is_reported_and_the_rest_are_scored(tiny):
    r = qroute("score", "--json", input='one\n{"prompt": 1}\ntwo\n', env={"QROUTE_PREDICTOR": str(tiny)})
    assert r.returncode == 2, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["prompt"] for row in rows] == ["one", None, "two"] and rows[1]["line"] == 2
    assert "stdin line 2" in r.stderr and "Traceback" not in r.stderr


def test_markup_in_the_prompt_is_printed_as_typed(tiny):
    r = qroute("score", "[bold]x[/] and [/]", "--predictor", str(tiny), env={"COLUMNS": "200"})
    assert r.returncode == 0, r.stderr
    assert "[bold]x[/] and [/]" in r.stdout


def test_a_closed_stdout_exits_quietly_with_0(tiny):
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        for args in (["score", "hi"], ["score", "hi", "--json"]):
            proc = subprocess.run([sys.executable, "-m", "qroute_cli", "--config", str(FAKE_CONFIG), *args,
                                   "--predictor", str(tiny)], stdout=write_end, stderr=subprocess.PIPE, timeout=120)
            assert proc.returncode == 0, proc.stderr.decode()
            assert b"Traceback" not in proc.stderr and b"Broken pipe" not in proc.stderr
    finally:
        os.close(write_end)
