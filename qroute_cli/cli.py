"""The qroute command line: global options, command registration, the one error handler.

Commands live in qroute_cli/commands/, one thin module each, and import heavy libraries
(llama_cpp, onnxruntime) only inside their functions, so `qroute --help` stays fast.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer

from qroute_cli import __version__
from qroute_cli.errors import QrouteError

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


class State:
    """Global options, shared with every command through typer's context."""

    config: Optional[Path] = None
    quiet: bool = False


state = State()


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


def registry():
    """The merged, validated model registry for this invocation."""
    from qroute_cli.config import load_registry

    return load_registry(state.config)


def write_stdout(text: str) -> None:
    """Answer text goes straight out, so it streams through pipes."""
    sys.stdout.write(text)
    sys.stdout.flush()


def silence_stdout() -> None:
    """After the reader closed the pipe, point stdout at /dev/null so exit does not complain."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass


def _register_commands() -> None:
    from qroute_cli.commands import COMMANDS

    for register in COMMANDS:
        register(app)


def _save_traceback() -> str:
    """The current exception's traceback in the data dir (or a temp file); its path."""
    import tempfile
    import traceback

    text = traceback.format_exc()
    try:
        from qroute_cli import paths

        path = paths.data_dir() / "last-error.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError:
        fd, name = tempfile.mkstemp(prefix="qroute-error-", suffix=".txt")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        return name
    return str(path)


def main() -> None:
    """Console entry point: run the app and turn known failures into messages."""
    from rich.console import Console

    _register_commands()
    err = Console(stderr=True)
    try:
        rc = app(standalone_mode=False)
    except QrouteError as exc:
        err.print(f"[bold red]Error:[/] {exc.message}", highlight=False)
        if exc.hint:
            err.print(f"[dim]{exc.hint}[/]", highlight=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("\n[yellow]Interrupted.[/]")
        sys.exit(130)
    except BrokenPipeError:
        # The reader went away (e.g. `qroute run ... | head -1`): leave quietly.
        silence_stdout()
        sys.exit(0)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:  # click turns Ctrl-C into Abort
        err.print("\n[yellow]Interrupted.[/]")
        sys.exit(130)
    except Exception as exc:  # click usage errors arrive here in non-standalone mode
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if os.environ.get("QROUTE_DEBUG") == "1":
            raise
        report = _save_traceback()
        err.print(f"[bold red]Internal error:[/] {type(exc).__name__}: {exc}", highlight=False)
        err.print(f"[dim]This is a bug in qroute. The traceback is in {report}; "
                  "QROUTE_DEBUG=1 prints it here.[/]", highlight=False)
        sys.exit(1)
    sys.exit(rc if isinstance(rc, int) else 0)
