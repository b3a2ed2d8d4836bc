"""The qroute command line: global options, command registration, the one error handler.

Commands live in qroute_cli/cli/commands/, one thin module each, and import heavy libraries
(llama_cpp, onnxruntime) only inside their functions, so `qroute --help` stays fast.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from qroute_cli import __version__
from qroute_cli.cli.options import state
from qroute_cli.errors import QrouteError
from qroute_cli.output import silence_stdout

app = typer.Typer(
    name="qroute",
    help=(
        "Route each prompt to the local LLM draft/verify pair with the best predicted quality "
        "that fits your latency budget, and run it with speculative decoding on llama.cpp.\n\n"
        "Start with:  qroute models pull  then  qroute run \"your prompt\" --explain"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"qroute {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    config: Optional[Path] = typer.Option(
        None, "--config", "-c", help="A models.toml that adds to or overrides the built-in models and pairs.",
        envvar="QROUTE_CONFIG",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print answers only, no status lines."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    state.config = config
    state.quiet = quiet


class _Interrupted(Exception):
    """Ctrl-C inside a command, carried past typer/click (which end it silently, or as Abort)."""


class _PipeClosed(Exception):
    """The reader of stdout went away, carried past typer/click (which exit 1 for it)."""


def _guard(callback):
    """A command callback whose Ctrl-C and closed pipe reach main(), which owns exit codes."""
    if getattr(callback, "_qroute_guarded", False):
        return callback  # a command group's commands stay registered when the app's are redone

    @functools.wraps(callback)
    def guarded(*args, **kwargs):
        try:
            return callback(*args, **kwargs)
        except KeyboardInterrupt:
            raise _Interrupted() from None
        except BrokenPipeError:
            raise _PipeClosed() from None

    guarded._qroute_guarded = True
    return guarded


def _guard_commands(typer_app: typer.Typer) -> None:
    """Guard every command callback of `typer_app` and of the command groups under it."""
    for info in typer_app.registered_commands:
        info.callback = _guard(info.callback)
    for group in typer_app.registered_groups:
        _guard_commands(group.typer_instance)


# The commands on the app, by name (main() may run more than once in one process, e.g. in tests).
_registered: list[str] = []


def _register_commands(only: str | None = None) -> None:
    """Put the command `only` on the app where it names one (a command line that runs one command
    needs no other: each costs an import and typer's parameter building), else every command."""
    from qroute_cli.cli.commands import COMMANDS, register

    names = [only] if only in COMMANDS else list(COMMANDS)
    if set(names) <= set(_registered):
        return
    app.registered_commands.clear()
    app.registered_groups.clear()
    for name in names:
        register(app, name)
    _guard_commands(app)
    _registered[:] = names


def _command_named(args: list[str]) -> str | None:
    """The command a command line names after the global options (main_callback's); None when
    something else comes first, e.g. --help, --version or an unknown option."""
    rest = list(args)
    while rest and (rest[0] in ("--config", "-c", "--quiet", "-q") or rest[0].startswith("--config=")):
        rest = rest[2:] if rest[0] in ("--config", "-c") else rest[1:]
    return rest[0] if rest and not rest[0].startswith("-") else None


def _click_exceptions() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """(usage error types, abort types) of the click that typer runs on and of click itself.

    typer >= 0.26 runs on its own copy of click, whose exceptions are not click's; older typer
    uses click. Both are found through typer's public names, so either version is handled.
    Read when an exception reaches main(): click itself is looked at only when something in
    this process imported it (older typer does), so a run on typer's own copy never loads it.
    """
    usage = [c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"]
    abort = [typer.Abort]
    click = sys.modules.get("click")
    if click is not None:
        usage.append(click.exceptions.ClickException)
        abort.append(click.exceptions.Abort)
    return tuple(usage), tuple(abort)


def _usage_errors() -> tuple[type, ...]:
    return _click_exceptions()[0]


def _aborts() -> tuple[type, ...]:
    return _click_exceptions()[1]


def _save_traceback() -> str:
    """The current exception's traceback in the data dir (or a temp file); its path."""
    import tempfile
    import traceback

    text = traceback.format_exc()
    try:
        from qroute_cli import paths

        path = paths.data_dir() / "last-error.txt"
        paths.private_dir(path.parent)
        paths.write_private(path, text)  # a traceback can quote a prompt: owner-only
    except OSError:
        fd, name = tempfile.mkstemp(prefix="qroute-error-", suffix=".txt")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        return name
    return str(path)


def main() -> None:
    """Console entry point: run the app and turn known failures into messages and exit codes."""
    from rich.console import Console
    from rich.text import Text

    from qroute_cli.cli.coercion import quick_coercion
    from qroute_cli.render import print_error

    _register_commands(_command_named(sys.argv[1:]))
    err = Console(stderr=True, highlight=False)
    try:
        command = typer.main.get_command(app)  # what app() runs, so that values convert without pydantic
        quick_coercion(command)
        rc = command(standalone_mode=False)
    except QrouteError as exc:
        print_error(err, exc)
        sys.exit(exc.exit_code)
    except _usage_errors() as exc:  # unknown command or option, bad value: click's usage message
        exc.show()
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, _Interrupted, *_aborts()):  # click turns a Ctrl-C while parsing into Abort
        err.print("\n[yellow]Interrupted.[/]")
        sys.exit(130)
    except (BrokenPipeError, _PipeClosed):
        # The reader went away (e.g. `qroute run ... | head -1`): leave quietly.
        silence_stdout()
        sys.exit(0)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:
        if os.environ.get("QROUTE_DEBUG") == "1":
            raise
        report = _save_traceback()
        err.print(Text.assemble(("Internal error:", "bold red"), f" {type(exc).__name__}: {exc}"))
        err.print(Text(f"This is a bug in qroute. The traceback is in {report}; "
                       "QROUTE_DEBUG=1 prints it here.", style="dim"))
        sys.exit(1)
    sys.exit(rc if isinstance(rc, int) else 0)
