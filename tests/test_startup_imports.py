"""What a one-shot `qroute run --pair` loads, and that the command-line values it converts
without pydantic are the values typer's own converter gives. The speed itself is measured in
bench/startup.py, not here."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import pytest

from conftest import FAKE_CONFIG, fake_profile, imported_modules, loaded_among


# What a forced pair answered through the fake backend needs none of.
PREDICTOR = ("onnxruntime", "tokenizers", "qroute_cli.routing.predict")
# Standard modules only some commands need: package metadata (the llama.cpp build is read without
# it), and statistics (remote calibration).
RARELY_NEEDED = ("importlib.metadata", "email", "statistics")


def _logged_scorers(home: Path) -> list[str]:
    with sqlite3.connect(home / "data" / "runs.db") as db:
        return [row[0] for row in db.execute("SELECT scorer FROM runs")]


def test_forced_pair_without_profile_converts_options_and_answers_without_pydantic_or_predictor(tmp_path, qroute_home):
    proc, modules = imported_modules(tmp_path, "--config", str(FAKE_CONFIG), "run", "--pair", "fake-big", "-n", "5",
                         "-t", "0.5", "--seed", "3", "--threads", "1", "--draft-max", "4", "hello there")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()
    # typer >= 0.26 would build a pydantic TypeAdapter per option; nothing is predicted without a profile.
    assert loaded_among(modules, ("pydantic", "pydantic_core") + PREDICTOR + RARELY_NEEDED) == []
    # The run is still logged, with no scorer since nothing was predicted for it.
    assert _logged_scorers(qroute_home) == ["none"]


@pytest.mark.parametrize("pair, extra, predicted, trained", [
    ("fake-big", (), False, False),  # nothing in a plain pair's run follows a prediction: no estimate at all
    ("fake-big", ("--explain",), True, True),  # unless every candidate is shown: then the predictor's
    ("fake-big+ngram", (), True, False),  # a drafting pair drafts by the prior estimate, without the predictor
    ("fake-big+ngram", ("--explain",), True, True),
])
def test_forced_pair_with_a_profile_loads_the_predictor_only_to_show_every_candidate(
        tmp_path, qroute_home, fake_registry, pair, extra, predicted, trained):
    from qroute_cli.routing.latency import save_profile

    save_profile(fake_profile(fake_registry))
    proc, modules = imported_modules(tmp_path, "--config", str(FAKE_CONFIG), "run", "--pair", pair, "-n", "5", "--json",
                                     *extra, "hello there")
    assert proc.returncode == 0, proc.stderr
    route = json.loads(proc.stdout)["route"]
    assert route["chosen"] == pair and (route["predicted_latency_s"] is not None) == predicted
    assert ("qroute_cli.routing.predict" in modules) == trained
    assert (loaded_among(modules, PREDICTOR) != []) == trained
    # Logged either way, naming what predicted it: nothing, the priors, or the trained predictor.
    scorer = _logged_scorers(qroute_home)[0]
    if not predicted:
        assert scorer == "none"
    else:
        assert (scorer == "prior") != trained


def test_a_drafting_pair_drafts_by_its_tasks_prior_then_by_what_it_learned(tmp_path, qroute_home, fake_registry):
    """No one-shot run of a forced drafting pair loads the predictor: the first drafts by the
    prior scorer's acceptance for the prompt's task type, and once the pair's drafts are
    logged, the next runs draft by the learned acceptance, shrunk to that prior."""
    from qroute_cli.routing.latency import save_profile

    save_profile(fake_profile(fake_registry))
    args = ("--config", str(FAKE_CONFIG), "run", "--pair", "fake-big+ngram", "-n", "24", "--json",
            "say the same words again: red green blue red green blue red green blue")
    first, modules = imported_modules(tmp_path, *args)
    assert first.returncode == 0, first.stderr
    assert loaded_among(modules, PREDICTOR) == []
    with sqlite3.connect(qroute_home / "data" / "runs.db") as db:
        drafted, accepted, predicted = db.execute("SELECT drafted, accepted, predicted_acceptance FROM runs").fetchone()
    assert drafted > 0 and predicted is not None  # it drafted, by an estimate: there is a rate to learn
    second, modules = imported_modules(tmp_path, *args)
    assert second.returncode == 0, second.stderr
    assert loaded_among(modules, PREDICTOR) == []
    route = json.loads(second.stdout)["route"]
    assert route["chosen"] == "fake-big+ngram" and route["predicted_latency_s"] is not None
    assert _logged_scorers(qroute_home) == ["prior", "prior"]  # predicted by the priors and the runs
    with sqlite3.connect(qroute_home / "data" / "runs.db") as db:
        again = db.execute("SELECT predicted_acceptance FROM runs ORDER BY rowid DESC").fetchone()[0]
    assert again != predicted  # the second run's estimate moved with what the first taught


def test_help_and_importing_the_cli_load_neither_pydantic_nor_the_predictor(tmp_path):
    proc, modules = imported_modules(tmp_path, "--help")
    assert proc.returncode == 0, proc.stderr
    assert loaded_among(modules, ("pydantic", "numpy", "sqlite3", "llama_cpp") + PREDICTOR) == []
    proc, modules = imported_modules(tmp_path, "run", "--help")
    assert proc.returncode == 0 and "--max-tokens" in proc.stdout
    assert loaded_among(modules, ("pydantic", "llama_cpp") + PREDICTOR) == []


def test_bad_values_still_get_typers_messages(tmp_path):
    for args, needle in (
        (("-n", "0"), "Invalid value for '--max-tokens'"),
        (("-n", "eight"), "Invalid value for '--max-tokens'"),
        (("-t", "9"), "Invalid value for '--temperature'"),
        (("--draft-max", "99"), "Invalid value for '--draft-max'"),
    ):
        proc, _ = imported_modules(tmp_path, "--config", str(FAKE_CONFIG), "run", "--pair", "fake-big", *args, "hi")
        assert proc.returncode == 2 and needle in proc.stderr, (args, proc.stderr)


# Raw values as a command line, an environment variable or a default hand them to a converter.
SAMPLES = [None, "", "0", "1", "-1", "8", "007", "1_000", " 8", "8 ", "+8", "1e3", "0.5", "5.0", "5.5", "-0.0",
           "-0", ".5", "5.", "nan", "inf", "abc", "\uff19", "12345678901234567890", 3, 0.0, 2.5, True,
           str(FAKE_CONFIG), "/nonexistent/models.toml", "-", "."]


def _outcome(convert, value, param):
    from typer._click.exceptions import BadParameter

    try:
        got = convert(value, param=param, ctx=None)
    except BadParameter as exc:
        return "error", exc.format_message()
    return "value", type(got), got


def test_quick_converter_gives_typers_value_or_leaves_it_to_typer():
    """For every parameter of every command: the same value, or the same error, as typer's own converter."""
    coercion = pytest.importorskip("typer._coercion", reason="typer < 0.26 converts through click types")
    import typer.main

    from qroute_cli.cli import _register_commands, app
    from qroute_cli.cli.coercion import QuickConverter

    _register_commands()

    def params(command):
        yield from command.params
        for sub in (getattr(command, "commands", None) or {}).values():
            yield from params(sub)

    checked = quick = 0
    for param in params(typer.main.get_command(app)):
        multi = param.multiple or param.nargs != 1
        for value in ([None, ("a",), "a"] if multi else SAMPLES):
            theirs = _outcome(coercion.build_runtime_param(param.type_descriptor).coerce, value, param)
            param._runtime_param = None
            ours = _outcome(QuickConverter(param.type_descriptor).coerce, value, param)
            assert ours == theirs, (param.name, value)
            checked += 1
            quick += param._runtime_param is None  # decided without typer's converter
    assert checked > 500 and quick > 200


def test_a_one_shot_command_loads_no_other_commands_module(tmp_path):
    proc, modules = imported_modules(tmp_path, "-q", "-c", str(FAKE_CONFIG), "run", "--pair", "fake-big", "-n", "3", "hi")
    assert proc.returncode == 0, proc.stderr
    others = [f"qroute_cli.cli.commands.{name}" for name in ("chat", "serve", "models", "calibrate", "stats", "score",
                                                             "bench")]
    assert loaded_among(modules, others) == [] and "qroute_cli.cli.commands.run" in modules


@pytest.mark.parametrize("args, named", [
    (["run", "hi"], "run"),
    (["-q", "--config", "x.toml", "models", "list"], "models"),
    (["--config=x.toml", "-c", "run", "stats"], "stats"),  # -c's value is 'run'
    (["--help"], None), (["--version", "run"], None), (["--bogus", "run"], None), (["-qc", "x.toml", "run"], None),
    (["-c"], None), ([], None),
])
def test_the_command_a_command_line_names(args, named):
    from qroute_cli.cli import _command_named

    assert _command_named(args) == named


def test_main_run_again_in_one_process_registers_what_each_command_line_needs(monkeypatch, capsys):
    """A first command line registers only its command; a later --help still lists every command,
    in order, and a command group's callbacks are guarded once."""
    from qroute_cli import cli
    from qroute_cli.cli.commands import COMMANDS

    def main(*argv: str) -> int:
        monkeypatch.setattr(sys, "argv", ["qroute", "--config", str(FAKE_CONFIG), *argv])
        with pytest.raises(SystemExit) as info:
            cli.main()
        return info.value.code

    monkeypatch.setattr(cli, "_registered", [])  # as in a fresh process
    assert main("models", "list", "--json") == 0
    assert [g.name for g in cli.app.registered_groups] == ["models"] and not cli.app.registered_commands
    assert main("run", "--pair", "fake-big", "-n", "2", "hi") == 0
    assert [c.name for c in cli.app.registered_commands] == ["run"]
    capsys.readouterr()
    assert main("--help") == 0
    shown = capsys.readouterr().out
    assert all(name in shown for name in COMMANDS)
    assert [c.name for c in cli.app.registered_commands] + [g.name for g in cli.app.registered_groups] == \
        [n for n in COMMANDS if n != "models"] + ["models"]
    group = cli.app.registered_groups[0].typer_instance
    assert all(not hasattr(info.callback.__wrapped__, "_qroute_guarded") for info in group.registered_commands)
    assert main("models", "list", "--json") == 0


def _dist_info(folder: Path, name: str, version: str, meta: str = "METADATA") -> None:
    (folder / name).mkdir(parents=True)
    (folder / name / meta).write_text(f"Metadata-Version: 2.1\nName: x\nVersion: {version}\n\nVersion: not a header\n")


def test_installed_version_answers_as_importlib_metadata_or_leaves_it_to_it(tmp_path, monkeypatch):
    from importlib import metadata

    from qroute_cli.routing.latency import installed_version, llama_cpp_build

    try:
        assert llama_cpp_build() == metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        assert llama_cpp_build() == "none"

    first, second, empty = tmp_path / "a", tmp_path / "b", tmp_path / "empty"
    empty.mkdir()
    _dist_info(first, "Plain.Name-1.2.dist-info", "1.2")
    _dist_info(second, "plain_name-9.0.dist-info", "9.0")
    _dist_info(first, "two_here-1.0.dist-info", "1.0")
    _dist_info(first, "Two.Here-2.0.dist-info", "2.0")
    _dist_info(first, "an_egg-3.0.egg-info", "3.0", meta="PKG-INFO")
    _dist_info(second, "later_only-4.0.dist-info", "4.0")
    monkeypatch.setattr(sys, "path", [str(tmp_path / "missing"), str(empty), str(first), str(second)])
    expected = {"plain_name": "1.2", "later_only": "4.0", "two_here": None, "an_egg": None, "absent": None}
    for name, ours in expected.items():
        assert installed_version(name) == ours, name
        try:
            theirs = metadata.version(name)
        except metadata.PackageNotFoundError:
            theirs = None
        assert ours is None or ours == theirs, name  # None: importlib.metadata decides
