"""`qroute stats`: what the run log says about each pair; `--reset` clears it."""

from __future__ import annotations

import json

import typer


def register(app: typer.Typer) -> None:
    app.command("stats")(stats)


def stats(
    reset: bool = typer.Option(False, "--reset", help="Delete every recorded run (asks first)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask before --reset."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Runs per pair, observed acceptance, latency error, budget hit rate and routing overhead."""
    from qroute_cli.render import console, err_console
    from qroute_cli.render_route import stats_table
    from qroute_cli.store import Store, summarize

    err = err_console()
    with Store(notify=lambda msg: err.print(f"[yellow]{msg}[/]")) as store:
        if reset:
            n = store.count()
            if not yes and not typer.confirm(f"Delete all {n} recorded runs from {store.path}?", default=False, err=True):
                raise typer.Exit(1)
            store.reset()
            err.print(f"Deleted {n} runs.")
            return
        summary = summarize(store.recent(limit=1_000_000))
        path = store.path
    if as_json:
        typer.echo(json.dumps({"store": str(path), **summary}, indent=1))
        return
    if summary["total"]["runs"] == 0:
        console().print(f"No runs recorded yet in {path}.")
        return
    console().print(stats_table(summary))
