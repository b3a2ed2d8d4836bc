"""`qroute calibrate`: measure prefill, decode, verify-batch and drafting costs on this machine."""

from __future__ import annotations

import json
from typing import List, Optional

import typer

from qroute_cli.errors import QrouteError, UsageError


def register(app: typer.Typer) -> None:
    app.command("calibrate")(calibrate)


def calibrate(
    models: Optional[List[str]] = typer.Option(None, "--model", "-m", help="Measure only this model (repeatable; default: every installed model)."),
    quick: bool = typer.Option(False, "--quick", help="Fewer repeats: under a minute for the small models."),
    show: bool = typer.Option(False, "--show", help="Print the saved profile instead of measuring."),
    threads: Optional[int] = typer.Option(None, "--threads", metavar="N", min=1, help="CPU threads for llama.cpp (default: all cores); part of the profile's key."),
    gpu_layers: int = typer.Option(0, "--gpu-layers", metavar="N", help="Layers to offload to a GPU (-1 = all) where llama.cpp has one; part of the profile's key."),
    draft_gpu_layers: Optional[int] = typer.Option(None, "--draft-gpu-layers", metavar="N", min=-1, help="Layers of a drafting model to offload (-1 = all; default: as --gpu-layers); part of the profile's key, and each drafter is measured in that place too."),
    yes: bool = typer.Option(False, "--yes", "-y", hidden=True, help="Accepted for older scripts: profiles are kept per setup, nothing is replaced."),
    as_json: bool = typer.Option(False, "--json", help="Print the profile as JSON."),
    endpoints: Optional[List[str]] = typer.Option(None, "--endpoint", "-e", help="Measure the pairs on this remote endpoint of models.toml instead (repeatable): a few short requests each."),
) -> None:
    """Measure what each model costs on this machine and save the profile the router uses.

    Examples:

      qroute calibrate --quick

      qroute calibrate --show

      qroute calibrate --endpoint gpu-box
    """
    from rich.markup import escape

    from qroute_cli.routing.calibrate import FULL, QUICK, calibrate as measure, calibration_steps
    from qroute_cli.cli.options import registry, state
    from qroute_cli.routing.latency import current_machine, save_profile, saved_profiles, usable_profile
    from qroute_cli.generation.pool import ModelPool
    from qroute_cli.models.cache import installed
    from qroute_cli.render import console, err_console, progress_bar
    from qroute_cli.render_route import profile_table

    reg = registry()
    if endpoints:
        from dataclasses import asdict

        from qroute_cli.render_route import remote_profile_table
        from qroute_cli.routing.remote import calibrate_endpoints

        say = (lambda name: None) if state.quiet or as_json else \
            (lambda name: err_console().print(f"[dim]measuring {escape(name)}[/]"))
        measured = calibrate_endpoints(reg, list(endpoints), say)
        if as_json:
            typer.echo(json.dumps({name: asdict(p) for name, p in measured.items()}, indent=1))
        else:
            console().print(remote_profile_table(measured))
        return
    machine = current_machine(threads, gpu_layers, draft_gpu_layers)  # each setup keeps its own profile
    saved = usable_profile(machine, lambda msg: err_console().print(f"[yellow]{escape(msg)}[/]"))
    if show:
        if saved is None:
            others = len(saved_profiles())
            where = f" (there {'is' if others == 1 else 'are'} {others} for other setups)" if others else ""
            raise QrouteError(f"No calibration profile for this setup yet{where}: {machine.key}.",
                              "Measure one with: qroute calibrate --quick (with the --threads, --gpu-layers and --draft-gpu-layers you run with)")
        if as_json:
            typer.echo(json.dumps(saved.to_json(), indent=1))
        else:
            console().print(profile_table(saved, machine))
        return

    names = list(models or [])
    for name in names:
        reg.model(name)  # unknown model -> "Did you mean"
    if not names:
        names = [m.name for m in reg.models.values() if installed(m)]
    missing = [n for n in names if not installed(reg.models[n])]
    if missing:
        raise UsageError(f"Not installed: {', '.join(missing)}.", f"Fetch with: qroute models pull {' '.join(missing)}")
    if not names:
        raise UsageError("No model is installed.", "Fetch one with: qroute models pull smollm2-135m")

    plan = QUICK if quick else FULL
    with ModelPool(reg, n_threads=threads, n_gpu_layers=gpu_layers, draft_gpu_layers=draft_gpu_layers, max_loaded=1) as pool, \
            progress_bar("count", "elapsed", disable=state.quiet or as_json) as progress:
        task = progress.add_task("calibrating", total=calibration_steps(reg, names, machine, plan))
        profile = measure(
            pool, names, machine, quick=quick, base=saved,
            advance=lambda n: progress.advance(task, n),
            on_model=lambda name: progress.update(task, description=f"{name:<22}"),
        )
    try:
        path = save_profile(profile)
    except OSError as exc:
        raise QrouteError(f"Could not save the calibration profile: {exc.strerror or exc} ({exc.filename}).",
                          "Check that the data directory is writable, or set QROUTE_HOME.") from None
    if as_json:
        typer.echo(json.dumps(profile.to_json(), indent=1))
        return
    console().print(profile_table(profile, machine))
    if not state.quiet:
        err_console().print(f"[dim]Saved to {escape(str(path))}[/]")
