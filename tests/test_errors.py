"""Errors and exit codes as a user meets them: usage errors, Ctrl-C, closed pipes, markup in
user text, text that is not UTF-8, and bad values (subprocess on the fake models, or main()
in-process where an interrupt has to land at one exact place)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import FAKE_CONFIG, qroute


@pytest.fixture(autouse=True)
def only_fakes(tmp_path, monkeypatch):
    """Hide the real model files so routing weighs the fake pairs only."""
    monkeypatch.setenv("QROUTE_MODELS", str(tmp_path / "no-models"))


@pytest.fixture
def last_error():
    """last-error.txt, holding an earlier bug report that a usage error must not overwrite."""
    from qroute_cli import paths

    path = paths.data_dir() / "last-error.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("an earlier report\n")
    return path


# -- usage errors ----------------------------------------------------------------------------


@pytest.mark.parametrize("args, needle", [
    (["run", "hi", "--bogus"], "--bogus"),
    (["run", "hi", "--max-tokens", "0"], "--max-tokens"),
    (["run", "hi", "--threads", "0"], "--threads"),
    (["run", "hi", "--seed", "-1"], "--seed"),
    (["chat", "--seed", "-1"], "--seed"),
    (["bench", "--seed", "-1"], "--seed"),
    (["run", "hi", "--gpu-layers", "-2"], "--gpu-layers"),
    (["frobnicate"], "frobnicate"),
])
def test_usage_errors_show_usage_and_exit_2(args, needle, last_error):
    r = qroute(*args)
    assert r.returncode == 2, r.stderr
    assert "Usage:" in r.stderr and needle in r.stderr
    assert "Internal error" not in r.stderr and "Traceback" not in r.stderr
    assert last_error.read_text() == "an earlier report\n"


def _main(monkeypatch, *argv):
    """cli.main() in-process; its exit code."""
    from qroute_cli import cli

    monkeypatch.setattr(sys, "argv", ["qroute", "--config", str(FAKE_CONFIG), *argv])
    monkeypatch.delenv("QROUTE_DEBUG", raising=False)
    with pytest.raises(SystemExit) as info:
        cli.main()
    return info.value.code


def test_usage_errors_from_typer_own_click_are_usage_errors(monkeypatch, capsys, last_error):
    """typer >= 0.26 raises the exceptions of its own copy of click."""
    import typer

    from qroute_cli import config

    def bad(*a, **kw):
        raise typer.BadParameter("no good", param_hint="'--thing'")

    monkeypatch.setattr(config, "load_registry", bad)
    assert _main(monkeypatch, "models", "list") == 2
    err = capsys.readouterr().err
    assert "no good" in err and "Internal error" not in err
    assert last_error.read_text() == "an earlier report\n"


def test_usage_errors_from_click_itself_are_usage_errors(monkeypatch, capsys, last_error):
    """Older typer (and code written for it) raises click's own exceptions."""
    click = pytest.importorskip("click")
    from qroute_cli import config

    def bad(*a, **kw):
        raise click.UsageError("no good")

    monkeypatch.setattr(config, "load_registry", bad)
    assert _main(monkeypatch, "models", "list") == 2
    err = capsys.readouterr().err
    assert "no good" in err and "Internal error" not in err
    assert last_error.read_text() == "an earlier report\n"


# -- Ctrl-C and closed pipes -------------------------------------------------------------------


def test_ctrl_c_while_routing_gives_a_json_record_and_130(monkeypatch, capsys):
    from qroute_cli.routing.router import Router

    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(Router, "decide", interrupted)
    assert _main(monkeypatch, "run", "hello", "--pair", "fake-big", "--json") == 130
    out = capsys.readouterr()
    record = json.loads(out.out)
    assert record == {"prompt": "hello", "error": "interrupted", "finish_reason": "interrupted"}
    assert "Interrupted" in out.err


def test_ctrl_c_anywhere_in_a_command_exits_130(monkeypatch, capsys, last_error):
    from qroute_cli import config

    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(config, "load_registry", interrupted)
    assert _main(monkeypatch, "models", "list") == 130
    assert "Interrupted" in capsys.readouterr().err
    assert last_error.read_text() == "an earlier report\n"


@pytest.mark.parametrize("args, stdin", [
    (["run", "--pair", "fake-big", "-n", "20"], b"one\ntwo\n"),
    (["chat", "--pair", "fake-big", "-n", "20"], b"one\ntwo\n"),
    (["models", "list"], b""),
    (["stats", "--json"], b""),
])
def test_a_closed_stdout_ends_every_command_quietly_with_0(args, stdin):
    """The reader is gone before the first byte is written: every command leaves with 0."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([sys.executable, "-m", "qroute_cli", "--config", str(FAKE_CONFIG), *args],
                              input=stdin, stdout=write_end, stderr=subprocess.PIPE, timeout=120)
    finally:
        os.close(write_end)
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "Broken pipe" not in err and "Internal error" not in err


# -- Rich markup in user text ------------------------------------------------------------------


@pytest.mark.parametrize("args, needle", [
    (["run", "hi", "--pair", "[/]"], "Unknown pair '[/]'"),
    (["run", "hi", "--budget", "[/]"], "Cannot read the budget '[/]'"),
    (["run", "hi", "--pair", "[bold]x"], "Unknown pair '[bold]x'"),
    (["chat", "--budget", "[/]"], "Cannot read the budget '[/]'"),
])
def test_markup_in_user_input_is_printed_as_typed(args, needle):
    r = qroute(*args, input="hi\n")
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr and "Traceback" not in r.stderr and "MarkupError" not in r.stderr


def test_brackets_in_paths_are_kept(tmp_path):
    missing = tmp_path / "[work]" / "models.toml"
    r = qroute("models", "list", config=missing)
    assert r.returncode == 2 and f"Config file not found: {missing}" in r.stderr
    home = tmp_path / "[work]" / "home"
    r = qroute("stats", env={"QROUTE_HOME": str(home), "COLUMNS": "400"})
    assert r.returncode == 0, r.stderr
    assert "[work]" in r.stdout


def test_brackets_in_chat_messages_are_kept():
    import io

    from rich.console import Console

    from qroute_cli.chat import View
    from qroute_cli.errors import UsageError

    err = io.StringIO()
    view = View(Console(file=io.StringIO()), Console(file=err, width=300), write=lambda s: None)
    view.notice("No input history this time (/home/[work]/chat_history: denied).")
    view.error(UsageError("Could not write /x/[work]/c.md.", "Pick [/] another."))
    assert "/home/[work]/chat_history" in err.getvalue()
    assert "/x/[work]/c.md" in err.getvalue() and "Pick [/] another." in err.getvalue()


def test_render_helpers_keep_brackets_in_names():
    import io

    from rich.console import Console

    from qroute_cli.render import explain_table, stats_line
    from qroute_cli.types import Candidate, Generation, RouteDecision, SpecStats

    stats = SpecStats(prompt_tokens=2, output_tokens=3, ttft_s=0.1, latency_s=0.5)
    gen = Generation(text="x", tokens=(1, 2, 3), stats=stats, finish_reason="stop", pair="[mine]")
    out = io.StringIO()
    console = Console(file=out, width=300)
    console.print(stats_line(gen, 1.0))
    cand = Candidate(pair="[mine]", predicted_quality=0.5, predicted_latency_s=0.2, fits=True)
    console.print(explain_table(RouteDecision(strategy="quality", chosen="[mine]", reason="[mine] fits",
                                              budget_s=1.0, candidates=(cand,))))
    assert out.getvalue().count("[mine]") == 3  # the status line, the table row, the reason


# -- text that is not UTF-8 --------------------------------------------------------------------


def test_an_argument_that_is_not_utf8_is_a_usage_error():
    r = qroute("run", b"caf\xe9", "--pair", "fake-big")
    assert r.returncode == 2, r.stderr
    assert b"not valid UTF-8" in r.stderr and b"Internal error" not in r.stderr
    r = qroute("run", "hi", "--pair", "fake-big", "--system", b"\xff")
    assert r.returncode == 2 and b"--system" in r.stderr


def test_a_stdin_line_that_is_not_utf8_is_reported_and_the_batch_goes_on():
    r = qroute("run", "--pair", "fake-big", "--json", "-n", "5", input=b"first\ncaf\xe9\nthird\n")
    assert r.returncode == 2, r.stderr
    rows = [json.loads(line) for line in r.stdout.decode().splitlines()]
    assert [row["prompt"] for row in rows] == ["first", None, "third"]
    assert rows[1]["line"] == 2 and "not valid UTF-8" in rows[1]["error"]
    assert rows[0]["text"] and rows[2]["text"]
    assert b"stdin line 2 is not valid UTF-8" in r.stderr and b"Internal error" not in r.stderr


def test_a_chat_line_that_is_not_utf8_does_not_end_the_chat():
    r = qroute("chat", "--pair", "fake-big", "-n", "8", "--json", input=b"one\n\xff\xfe\ntwo\n")
    assert r.returncode == 2, r.stderr
    rows = [json.loads(line) for line in r.stdout.decode().splitlines()]
    assert [row["prompt"] for row in rows] == ["one", "two"] and rows[1]["turn"] == 2
    assert b"stdin line 2 is not valid UTF-8" in r.stderr and b"Internal error" not in r.stderr


# -- bad values --------------------------------------------------------------------------------


def test_empty_budget_is_an_error_not_the_default():
    r = qroute("run", "hi", "--budget", "")
    assert r.returncode == 2 and "budget is empty" in r.stderr
    r = qroute("chat", "--budget", "", input="hi\n")
    assert r.returncode == 2 and "budget is empty" in r.stderr


def test_too_many_threads_are_capped_with_a_warning(monkeypatch, capsys):
    from qroute_cli.cli import options

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert options.cap_threads(8) == 8 and options.cap_threads(None) is None
    assert options.cap_threads(999) == 8
    assert "--threads 999" in capsys.readouterr().err
    r = qroute("run", "hi", "--pair", "fake-big", "-n", "3", "--threads", "100000")
    assert r.returncode == 0, r.stderr
    assert "--threads 100000 is more than 4 per core" in r.stderr


def test_config_that_is_a_directory_or_not_utf8_is_a_config_error(tmp_path):
    r = qroute("models", "list", config=tmp_path)
    assert r.returncode == 2 and "is a directory" in r.stderr and "Internal error" not in r.stderr
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes(b'[models.x]\ndescription = "caf\xe9"\npath = "x.gguf"\n')
    r = qroute("models", "list", config=latin1)
    assert r.returncode == 2 and "not UTF-8" in r.stderr and "Internal error" not in r.stderr


def test_router_messages_keep_brackets_in_paths():
    """Store and profile warnings name files; a '[work]' folder must survive Rich."""
    from rich.console import Console

    from qroute_cli.config import load_registry
    from qroute_cli.routing.router import Router

    out = Console(record=True, width=200)
    router = Router(load_registry(FAKE_CONFIG), console=out)
    router._say("The learning store /home/me/[work]/runs.db is locked.")
    assert "/home/me/[work]/runs.db" in out.export_text()


def test_a_store_problem_is_a_user_error_not_a_bug():
    from qroute_cli.errors import StoreError

    assert StoreError("locked").exit_code == 2
