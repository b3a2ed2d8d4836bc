"""One module per command; each exposes `register(app)`."""

from __future__ import annotations

import typer

from qroute_cli.cli.commands import bench, calibrate, chat, models, run, score, serve, stats


def register_all(app: typer.Typer) -> None:
    """Add every command to `app`, in the order `qroute --help` shows them."""
    for command in (run, chat, serve, models, calibrate, stats, score, bench):
        command.register(app)
