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
    from rich.text import Text

    from qroute_cli.errors import StoreError
    from qroute_cli.render import console, err_console
    from qroute_cli.render_route import stats_table
    from qroute_cli.routing.runlog import Store, summarize

    err = err_console()
    # Read-only unless resetting: a store on a read-only medium (or locked by a run) still reads.
    with Store(read_only=not reset, notify=lambda msg: err.print(Text(msg, style="yellow"))) as store:
        if store.problem:
            raise StoreError(store.problem)
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
        console().print(Text(f"No runs recorded yet in {path}."))
        return
    console().print(stats_table(summary))
