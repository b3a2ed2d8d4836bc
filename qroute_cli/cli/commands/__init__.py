"""One module per command, named as the command; each exposes `register(app)`."""

from __future__ import annotations

import importlib

import typer

# Every command, in the order `qroute --help` shows them.
COMMANDS = ("run", "chat", "serve", "models", "calibrate", "stats", "score", "bench")


def register(app: typer.Typer, name: str) -> None:
    """Add the command `name` to `app`."""
    # By name: a command line that runs one command imports no other command's module.
    importlib.import_module(f"{__name__}.{name}").register(app)
