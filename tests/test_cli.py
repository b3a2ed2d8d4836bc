"""The CLI as a user runs it (subprocess), on the fake backend and on smollm2-135m."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import FAKE_CONFIG, default_sigint, qroute, require_model


def test_help_does_not_load_native_libraries():
    code = ("import sys; from qroute_cli.cli import app, _register_commands; _register_commands();"
            "from typer.testing import CliRunner; r = CliRunner().invoke(app, ['--help']);"
            "assert r.exit_code == 0, r.output;"
            "print('llama_cpp' in sys.modules, 'onnxruntime' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False False"


def test_every_option_name_shows_whole_in_help_at_80_columns(monkeypatch):
    """typer's option table shrinks columns to the terminal: no name may be cut to fit."""
    import typer.main
    from typer.testing import CliRunner

    from qroute_cli.cli import _register_commands, app

    monkeypatch.setenv("COLUMNS", "80")
    _register_commands()

    def commands(cmd, path=()):
        yield path, cmd
        for name, sub in (getattr(cmd, "commands", None) or {}).items():
            yield from commands(sub, path + (name,))

    checked = 0
    for path, cmd in commands(typer.main.get_command(app)):
        result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "80"})
        assert result.exit_code == 0, (path, result.output)
        assert max(map(len, result.output.splitlines())) <= 80
        for param in cmd.params:
            for name in [] if getattr(param, "hidden", False) else param.opts + param.secondary_opts:
                if name.startswith("--"):
                    assert name in result.output, (path, name)
                    checked += 1
    assert checked > 60


def test_run_json_has_documented_fields():
    r = qroute("run", "hello there", "--pair", "fake-big+small", "--json", "-n", "30")
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stdout.strip().splitlines()[0])
    for key in ("prompt", "text", "pair", "verifier", "drafter", "tokens", "latency_s", "ttft_s",
                "tokens_per_s", "drafted", "accepted", "acceptance", "route"):
        assert key in obj, key
    assert obj["pair"] == "fake-big+small" and obj["drafter"] == "fake-small"
    assert 0 < obj["tokens"] <= 30
    assert obj["route"]["chosen"] == "fake-big+small"


def test_run_streams_text_and_plain_pair_has_null_acceptance():
    r = qroute("run", "hi", "--pair", "fake-big", "--json", "-n", "10")
    obj = json.loads(r.stdout)
    assert obj["acceptance"] is None and obj["drafted"] == 0
    streamed = qroute("-q", "run", "hi", "--pair", "fake-big", "-n", "10")
    assert streamed.returncode == 0
    assert streamed.stdout.strip() == obj["text"].strip()


def test_stdin_lines_and_json_lines():
    stdin = 'first prompt\n{"prompt": "second prompt"}\n\nthird\n'
    r = qroute("run", "--pair", "fake-big", "--json", "-n", "5", input=stdin)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["prompt"] for row in rows] == ["first prompt", "second prompt", "third"]


def test_bad_json_line_is_a_clear_error():
    r = qroute("run", "--pair", "fake-big", input='{"text": 1}\n')
    assert r.returncode == 2
    assert "prompt" in r.stderr and "Traceback" not in r.stderr


def test_unknown_pair_suggests_a_name():
    r = qroute("run", "hi", "--pair", "fake-bigg")
    assert r.returncode == 2
    assert "Did you mean 'fake-big'" in r.stderr and "Traceback" not in r.stderr


def test_bad_config_names_file_and_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[models.x]\npath = "/x.gguf"\nsize_bytes = 3\n')
    r = qroute("models", "list", config=bad)
    assert r.returncode == 2
    assert str(bad) in r.stderr and "models.x.size_bytes" in r.stderr


def test_cross_vocabulary_pair_is_rejected(tmp_path):
    cfg = tmp_path / "pairs.toml"
    cfg.write_text('[pairs.mixed]\nverifier = "qwen2.5-coder-1.5b"\ndrafter = "smollm2-135m"\n')
    r = qroute("models", "list", config=cfg)
    assert r.returncode == 2
    assert "different tokenizers" in r.stderr and "ngram" in r.stderr


def test_broken_pipe_exits_quietly():
    cmd = (f"printf 'a\\nb\\nc\\nd\\n' | {sys.executable} -m qroute_cli --config {FAKE_CONFIG} "
           "run --pair fake-big --json -n 200 | head -1")
    r = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 1
    assert "Traceback" not in r.stderr and "Broken pipe" not in r.stderr


def test_missing_model_says_how_to_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv("QROUTE_MODELS", str(tmp_path / "empty"))
    r = qroute("run", "hi", "--pair", "smollm2-135m", config=None)
    assert r.returncode == 3
    assert "qroute models pull smollm2-135m" in r.stderr


def test_models_list_json_shape():
    r = qroute("models", "list", "--json", config=None)
    data = json.loads(r.stdout)
    names = {m["name"] for m in data["models"]}
    assert {"qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b", "gemma-3-270m", "smollm2-135m"} <= names
    for m in data["models"]:
        assert set(m) >= {"name", "path", "present", "verified", "size_bytes", "vocab_size"}
    pairs = {p["name"]: p for p in data["pairs"]}
    assert pairs["qwen2.5-coder-1.5b+0.5b"]["drafter"] == "qwen2.5-coder-0.5b"
    assert pairs["qwen2.5-coder-1.5b+ngram"]["drafter"] == "ngram"


@pytest.mark.real
def test_run_real_model_json_and_verify():
    require_model("smollm2-135m")
    r = qroute("run", "Say hello.", "--pair", "smollm2-135m+ngram", "--json", "-n", "16", config=None)
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stdout)
    assert obj["verifier"] == "smollm2-135m" and obj["tokens"] > 0 and obj["text"]
    v = qroute("models", "verify", "smollm2-135m", "--json", config=None)
    assert v.returncode == 0 and json.loads(v.stdout)[0]["ok"] is True


@pytest.mark.real
def test_models_add_user_gguf(tmp_path):
    from synth_gguf import write_tiny_llama

    tiny = write_tiny_llama(require_model("smollm2-135m"), tmp_path / "mine.gguf")
    r = qroute("models", "add", "mine", str(tiny), "--vocab", "smollm2", "--pair-with", "ngram", config=None)
    assert r.returncode == 0, r.stderr
    listed = json.loads(qroute("models", "list", "--json", config=None).stdout)
    assert any(p["name"] == "mine+ngram" for p in listed["pairs"])
    out = qroute("run", "hi", "--pair", "mine+ngram", "--json", "-n", "5", config=None)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["verifier"] == "mine"


@pytest.mark.real
def test_ctrl_c_stops_cleanly():
    import signal
    import time

    require_model("smollm2-135m")
    cmd = [sys.executable, "-m", "qroute_cli", "run", "Write a very long story about a dragon.",
           "--pair", "smollm2-135m", "-n", "100000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ.copy(),
                            preexec_fn=default_sigint)
    first = os.read(proc.stdout.fileno(), 1)  # generation has started
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    out, err = first + out, err.decode()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert len(out) > 0  # what was generated before Ctrl-C was kept


def test_unexpected_error_is_one_line_and_the_traceback_is_saved(monkeypatch, capsys):
    """A bug shows as one line and a file to report, not a wall of traceback."""
    from qroute_cli import cli, config, paths

    def broken(*args, **kwargs):
        raise RuntimeError("registry exploded")

    monkeypatch.setattr(config, "load_registry", broken)
    monkeypatch.setattr(sys, "argv", ["qroute", "models", "list"])
    monkeypatch.delenv("QROUTE_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 1
    said = " ".join(capsys.readouterr().err.split())
    assert "Internal error: RuntimeError: registry exploded" in said and "Traceback" not in said
    saved = (paths.data_dir() / "last-error.txt").read_text()
    assert "Traceback" in saved and "registry exploded" in saved
    monkeypatch.setenv("QROUTE_DEBUG", "1")
    with pytest.raises(RuntimeError):
        cli.main()
