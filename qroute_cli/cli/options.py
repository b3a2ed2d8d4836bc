"""What every command shares: the global options (--config, --quiet), the registry they give,
and the --threads cap.

Its own module, below the app (cli/__init__.py) and the commands, so that commands import it
and the app imports the commands without an import cycle.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer


class State:
    """Global options, shared with every command through typer's context."""

    config: Optional[Path] = None
    quiet: bool = False


state = State()


def registry():
    """The merged, validated model registry for this invocation."""
    from qroute_cli.config import load_registry

    return load_registry(state.config)


def cap_threads(value: int | None) -> int | None:
    """--threads: llama.cpp's threads spin while they wait for each other, so more than a few
    per core only slows every token down; past 4 per core the count is capped, with a warning."""
    cores = os.cpu_count() or 1
    if value is not None and value > 4 * cores:
        typer.secho(f"--threads {value} is more than 4 per core on this machine ({cores} cores); "
                    f"using {4 * cores}.", err=True, fg="yellow")
        return 4 * cores
    return value
