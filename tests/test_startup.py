"""What a one-shot `qroute` process imports: shell loops that call it once per prompt pay its
start-up every time, so libraries only some commands need stay out of the others. The speed
itself is measured in bench/startup.py, not here."""

from __future__ import annotations

import importlib.util

from conftest import FAKE_CONFIG, imported_modules, loaded_among


# Needed by no command that answers a prompt: charts, text metrics, the chat line editor.
NEVER_FOR_ANSWERS = ("matplotlib", "sacrebleu", "rouge_score", "prompt_toolkit")


def _typer_has_own_click() -> bool:
    return importlib.util.find_spec("typer._click") is not None


def test_help_imports_no_model_runtime_and_no_store(tmp_path):
    proc, modules = imported_modules(tmp_path, "--help")
    assert proc.returncode == 0, proc.stderr
    heavy = ("llama_cpp", "onnxruntime", "tokenizers", "numpy", "sqlite3") + NEVER_FOR_ANSWERS
    assert loaded_among(modules, heavy) == []


def test_run_with_a_forced_pair_imports_only_what_answering_needs(tmp_path):
    proc, modules = imported_modules(tmp_path, "--config", str(FAKE_CONFIG), "run", "--pair", "fake-big", "-n", "5",
                              "hello there")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()
    # The fake backend answers: llama.cpp stays unloaded; no table is drawn without --explain.
    heavy = ("llama_cpp", "rich.table") + NEVER_FOR_ANSWERS
    if _typer_has_own_click():
        heavy += ("click",)  # typer's own copy parses; click itself is only caught when loaded
    assert loaded_among(modules, heavy) == []
    # Other commands' modules stay unimported where they import anything beyond typer.
    assert loaded_among(modules, ("qroute_cli.evaluation", "qroute_cli.chat", "qroute_cli.models.fetch")) == []


def test_a_usage_error_still_prints_clicks_message(tmp_path):
    proc, _ = imported_modules(tmp_path, "--config", str(FAKE_CONFIG), "run", "--pair", "fake-big", "-n", "0", "hi")
    assert proc.returncode == 2
    assert "Invalid value for '--max-tokens'" in proc.stderr
