"""`qroute models list | pull | verify | add`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape

models_app = typer.Typer(help="List, fetch, verify and add GGUF models.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")


@models_app.command("list")
def list_models(
    as_json: bool = typer.Option(False, "--json", help="Print models and pairs as one JSON object."),
    probe: bool = typer.Option(True, "--probe/--no-probe", help="Ask each remote endpoint whether it is up (a few seconds at most)."),
) -> None:
    """Show every model (with cache status), every pair, and each remote endpoint's state."""
    from qroute_cli.cli.options import registry
    from qroute_cli.endpoints.probe import probe_all
    from qroute_cli.models import cache
    from qroute_cli.render import console, endpoint_pairs_table, models_table, pairs_table

    reg = registry()
    statuses = [
        cache.ModelStatus(spec.name, spec.path, True, True, 0, spec.vocab_size) if spec.is_fake else
        cache.ModelStatus(spec.name, "remote: served by an endpoint", True, False, None, spec.vocab_size)
        if spec.remote else cache.status(spec)
        for spec in reg.models.values()
    ]
    states = probe_all(reg) if probe else {}
    if as_json:
        payload = {
            "models": [st.__dict__ for st in statuses],
            "pairs": [{"name": p.name, "verifier": p.verifier, "drafter": p.drafter, "endpoint": p.endpoint}
                      for p in reg.pairs.values()],
            "endpoints": [{"name": e.name, "url": e.url, "kind": e.kind,
                           "state": None if e.name not in states else "up" if states[e.name].ok else "down",
                           "error": states[e.name].error if e.name in states else None,
                           "models": list(states[e.name].models) if e.name in states else []}
                          for e in reg.endpoints.values()],
        }
        typer.echo(json.dumps(payload, indent=2))
        return
    out = console()
    out.print(models_table(reg, statuses))
    out.print(pairs_table(reg, {st.name: st for st in statuses}))
    if any(p.remote for p in reg.pairs.values()):
        out.print(endpoint_pairs_table(reg, states))
    missing = [st.name for st in statuses if not st.present]
    if missing:
        out.print(f"[dim]Fetch missing models with: qroute models pull {escape(' '.join(missing))}[/]")


@models_app.command("pull")
def pull(
    names: Optional[List[str]] = typer.Argument(None, help="Models to fetch (default: all built-in models)."),
    force: bool = typer.Option(False, "--force", help="Fetch again even if present."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Fetch models into the cache, assemble their parts and check size and SHA-256."""
    from rich.text import Text

    from qroute_cli.cli.options import registry, state
    from qroute_cli.models import cache, fetch
    from qroute_cli.render import err_console, progress_bar

    from qroute_cli.errors import UsageError

    reg = registry()
    targets = [reg.model(n) for n in names] if names else [m for m in reg.models.values()
                                                            if not m.is_fake and not m.remote]
    remote = [m.name for m in targets if m.remote]
    if remote:
        raise UsageError(f"Model '{remote[0]}' is remote: an endpoint serves it, there is nothing to pull.",
                         "`qroute models list` shows whether its endpoint is up.")
    results = []
    with progress_bar("bytes", "speed", "remaining", disable=state.quiet or as_json) as progress:
        for spec in targets:
            if spec.is_fake:
                continue
            task = progress.add_task(spec.name, total=spec.size)
            already = cache.model_path(spec).exists() and not force
            path = fetch.pull(
                spec, progress=lambda n, t=task: progress.advance(t, n), force=force,
                status=lambda text, t=task, name=spec.name: progress.update(t, description=f"{name} ({text})"),
            )
            progress.update(task, description=spec.name, completed=spec.size or path.stat().st_size)
            results.append({"name": spec.name, "path": str(path), "fetched": not already,
                            "verified": bool(spec.sha256)})
    if as_json:
        typer.echo(json.dumps(results, indent=2))
    elif not state.quiet:
        for r in results:
            verb = "fetched" if r["fetched"] else "already present"
            check = "SHA-256 verified" if r["verified"] else "not verified (no sha256 in models.toml)"
            err_console().print(Text.assemble(("✓", "green"), f" {r['name']} {verb}, {check}: {r['path']}"), soft_wrap=True)


@models_app.command("verify")
def verify(
    names: Optional[List[str]] = typer.Argument(None, help="Models to check (default: all present)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Re-hash model files and compare with the registry's SHA-256."""
    from qroute_cli.cli.options import registry
    from qroute_cli.errors import QrouteError
    from qroute_cli.models import cache
    from qroute_cli.render import err_console

    reg = registry()
    targets = [reg.model(n) for n in names] if names else [
        m for m in reg.models.values() if not m.is_fake and cache.model_path(m).exists()
    ]
    results, failed = [], 0
    for spec in targets:
        try:
            digest = cache.verify(spec)
            results.append({"name": spec.name, "ok": True, "sha256": digest})
            if not as_json:
                err_console().print(f"[green]✓[/] {escape(spec.name)} ok")
        except QrouteError as exc:
            failed += 1
            results.append({"name": spec.name, "ok": False, "error": exc.message})
            if not as_json:
                err_console().print(f"[red]✗[/] {escape(exc.message)}\n  [dim]{escape(exc.hint or '')}[/]")
    if as_json:
        typer.echo(json.dumps(results, indent=2))
    if not targets and not as_json:
        err_console().print("No model files present. Fetch them with: qroute models pull")
    if failed:
        raise typer.Exit(3)


@models_app.command("add")
def add(
    name: str = typer.Argument(..., help="Name for the model, e.g. my-llama-3b."),
    path: Path = typer.Argument(..., help="Path to a GGUF file.", exists=False),
    vocab: Optional[str] = typer.Option(None, help="Tokenizer family; pairs need the same vocab for model drafting."),
    drafter: List[str] = typer.Option([], "--pair-with", help="Also add pairs: 'ngram', 'none' or a drafter model name."),
    hash_file: bool = typer.Option(True, "--hash/--no-hash", help="Record the file's SHA-256 (reads the whole file)."),
) -> None:
    """Add your own GGUF file to the user models.toml (with a plain pair for it)."""
    from qroute_cli.models.user import add_user_model

    written = add_user_model(name, path, vocab=vocab, drafters=drafter, hash_file=hash_file)
    typer.echo(f"Added '{name}' to {written}.")
