"""`qroute bench`: quality-speed comparison of routing strategies on GSM8K, NQ, WritingPrompts and HumanEval."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Optional

import typer

from qroute_cli.cli.options import cap_threads
from qroute_cli.errors import UsageError

PRESETS = {"quick": 3, "full": 40}  # full: the size bench/REPORT.md is made at


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)


def bench(
    tasks: Optional[str] = typer.Option(
        None, "--tasks", help="Comma-separated, from gsm8k, nq, wp and code (HumanEval, pass@1: each answer's "
                              "tests run in a sandbox). Default: all four."),
    limit: Optional[int] = typer.Option(None, "--limit", "-n", metavar="N", min=1, help="Prompts per task (overrides the preset)."),
    quick: bool = typer.Option(False, "--quick", help="3 prompts per task: a few minutes on 2 cores."),
    full: bool = typer.Option(False, "--full", help="40 prompts per task: the preset behind bench/REPORT.md "
                                                    "(hours on 2 cores; rerun the same command to resume)."),
    pairs: Optional[str] = typer.Option(None, "--pairs", help="Comma-separated pairs (default: all with models present)."),
    seed: int = typer.Option(0, "--seed", metavar="N", min=0, help="Seed for random and bandit baselines."),
    data_dir: Optional[Path] = typer.Option(
        None, "--data-dir", help="Use your own copy of the data sets (laid out like shared/data) for gsm8k, nq and "
                                 "wp; code always comes from the HumanEval file qroute ships."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write JSON, CSV, PNG plots and summary.json here."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Result cache (default: in the user data dir)."),
    seed_from: Optional[str] = typer.Option(
        None, "--seed-from", metavar="DIR",
        help="An earlier bench's --out directory whose cells of this regime are reused instead of run "
             "(default: the committed bench/results; 'none': only the cache)."),
    rerun_busy: Optional[float] = typer.Option(
        None, "--rerun-busy", min=0.0, metavar="CORES",
        help="Run again the cached cells during which other processes kept more than CORES cores busy "
             "(each cell records it), e.g. 0.1 after a sitting that shared the machine."),
    wait_quiet: Optional[float] = typer.Option(
        None, "--wait-quiet", min=0.0, metavar="CORES",
        help="Before each cell, wait (up to 30 minutes) until other processes keep at most CORES cores "
             "busy, e.g. 0.1 on a machine you keep using meanwhile; the table says how long it waited."),
    scorer: Optional[list[str]] = typer.Option(
        None, "--scorer", metavar="NAME=FILE.onnx",
        help="Also route with this predictor file, as an ablation (repeatable), e.g. "
             "--scorer length-only=predictor/build/length-only.onnx"),
    live: bool = typer.Option(True, "--live/--no-live",
                              help="After the matrix, run the online-learning loop for real over the prompt stream."),
    bootstrap: int = typer.Option(1000, "--bootstrap", metavar="N", min=0,
                                  help="Resamples of the prompts behind each figure's 95% interval (0: none)."),
    as_json: bool = typer.Option(False, "--json", help="Print summary.json to stdout instead of tables."),
    threads: Optional[int] = typer.Option(
        None, "--threads", metavar="N", min=1, callback=cap_threads,
        help="CPU threads for llama.cpp (default: what the load leaves, per answer). A fixed count keeps every "
             "cell of a long run in one regime: cells are cached per thread count."),
) -> None:
    """Run every (prompt, pair) once, then compare strategies on the same results.

    Compares each static pair, cost-only routing, random, a MetaLLM-style bandit, an LLM-Blender-style ensemble, qroute's quality routing at a sweep of budgets (with the trained predictor, the per-model priors and any --scorer files), online learning replayed on the matrix and run live, and the oracle.

    Reports Pareto frontiers, hypervolume, quality at matched latency and APGR, against the Pareto frontier of all static pairs as well as the single best pair, each with a 95% bootstrap interval over prompts, and how often a drafter changed the verifier's answer.

    Results are cached, so an interrupted bench resumes when the same command runs again; the cells of earlier results (--seed-from, default bench/results) are reused where their regime matches.

    Examples:

      qroute bench --quick

      qroute bench --full --threads 2 --out bench/results

      qroute bench --quick --seed-from none
    """
    from rich.markup import escape

    from qroute_cli import paths
    from qroute_cli.cli.options import registry, state
    from qroute_cli.evaluation.bench import BenchConfig, run_bench, select_items
    from qroute_cli.evaluation import provenance
    from qroute_cli.evaluation.report import headline_table, matrix_table, summary_table, write_outputs
    from qroute_cli.evaluation.strategies import fresh_router
    from qroute_cli.generation.pool import ModelPool
    from qroute_cli.models.cache import installed_pairs
    from qroute_cli.render import console, err_console, progress_bar

    if quick and full:
        raise UsageError("Choose one of --quick and --full.")
    reg = registry()
    n = limit or PRESETS["full" if full else "quick"]
    task_list = tuple(t.strip() for t in tasks.split(",") if t.strip()) if tasks else BenchConfig.tasks
    if pairs:
        pair_list = tuple(reg.pair(p.strip()).name for p in pairs.split(",") if p.strip())
    else:
        pair_list = tuple(p.name for p in installed_pairs(reg))
    if len(pair_list) < 2:
        raise UsageError("The bench needs at least two pairs with their models present.",
                         "Fetch models with: qroute models pull")
    extra_scorers = _scorer_files(scorer or [])
    cfg = BenchConfig(tasks=task_list, limit=n, pairs=pair_list, seed=seed, data_dir=data_dir, live=live,
                      bootstrap=bootstrap, seed_dir=_seed_dir(seed_from), rerun_busy=rerun_busy,
                      wait_quiet=wait_quiet)
    items = select_items(cfg)
    total = len(items) * len(pair_list)
    cache_path = cache or paths.data_dir() / "bench" / "matrix.jsonl"
    err = err_console()
    # The router weighs only the benched pairs (and calibrates only their models).
    bench_reg = replace(reg, pairs={p: reg.pairs[p] for p in pair_list})
    # Ablations: the same router with per-model constant qualities, and any --scorer files.
    from qroute_cli.routing.predict import OnnxScorer, PredictorError
    from qroute_cli.routing.scoring import PriorScorer

    scorers = {"prior": PriorScorer(bench_reg)}
    for name, path in extra_scorers.items():
        try:
            scorers[name] = OnnxScorer(path, bench_reg)
        except PredictorError as exc:
            raise UsageError(f"--scorer {name}: {exc.message}") from exc

    # The strategies route from the calibration alone, with an empty learning store, so the
    # figures do not depend on what this user ran before; learning is measured on its own
    # (quality+online, replayed and live).
    # Every benched model stays loaded: the cells go prompt by prompt through every pair
    # (matrix.cell_order), and a reload between cells would cost more than the cells.
    models = {name for p in pair_list for name in bench_reg.pair(p).model_names}
    with ModelPool(bench_reg, max_loaded=max(3, len(models)), n_threads=threads) as pool, \
            fresh_router(bench_reg, strategy="quality", pool=pool, console=err, seed=seed) as router:
        with progress_bar("count", "remaining", console=err, disable=state.quiet) as progress:
            bar = progress.add_task("running prompts x pairs", total=total)

            def on_cell(item, pair, cell, cached):
                progress.update(bar, advance=1, description=f"{pair} · {item.task}{' (cached)' if cached else ''}")

            # Capped answers: how many the routes will ask for is known only as they ask.
            capped_bar = progress.add_task("capped answers", total=None, visible=False)

            def on_capped(item, pair, cap, cached):
                progress.update(capped_bar, advance=1, visible=True,
                                description=f"capped: {pair} · {item.task} · {cap} tokens{' (cached)' if cached else ''}")

            live_bar = progress.add_task("live: route, run and learn", total=len(items), visible=live)

            def on_live(item, pair):
                progress.update(live_bar, advance=1, description=f"live: {pair} · {item.task}")

            wait_bar = progress.add_task("waiting for a quiet machine", total=None, visible=False)

            def on_wait(load, waited):
                progress.update(wait_bar, visible=True, description=(
                    f"waiting for a quiet machine: others keep {load:.2f} cores busy "
                    f"(--wait-quiet {wait_quiet:g}), {waited:.0f} s so far"))

            res = run_bench(pool, cfg, cache_path, router=router, on_cell=on_cell, scorers=scorers, items=items,
                            on_live=on_live, on_capped=on_capped, on_wait=on_wait)
            # threads: the --threads count, or None where each answer took what the load left
            res.summary.setdefault("provenance", {}).update(provenance.record(threads=pool.n_threads))
    if out is not None:
        written = write_outputs(res, out)
        err.print(f"[dim]wrote {len(written)} files to {escape(str(out))}[/]")
    if as_json:
        typer.echo(json.dumps(res.summary, indent=1))
        return
    c = console()
    c.print(matrix_table(res))
    c.print(summary_table(res))
    c.print(headline_table(res))


def _seed_dir(value: str | None) -> Path | None:
    """--seed-from -> the results directory that seeds the cache (None: none); a clear error
    for one that is missing or holds no cells."""
    from qroute_cli.evaluation.bench import BenchConfig
    from qroute_cli.evaluation.matrix import CAPPED_FILE, MATRIX_FILE

    if value is None:
        return BenchConfig.seed_dir
    if value.strip().lower() == "none":
        return None
    path = Path(value).expanduser()
    hint = "Give a directory an earlier `qroute bench --out` wrote, or --seed-from none (a folder named none: ./none)."
    if not path.is_dir():
        raise UsageError(f"--seed-from: no such directory {path}.", hint)
    if not any((path / name).is_file() for name in (MATRIX_FILE, CAPPED_FILE)):
        raise UsageError(f"--seed-from: {path} has no {MATRIX_FILE} or {CAPPED_FILE}.", hint)
    return path


def _scorer_files(specs: list[str]) -> dict[str, Path]:
    """'NAME=FILE' options -> {name: path}; a clear error for a bad one."""
    out: dict[str, Path] = {}
    for spec in specs:
        name, sep, file = spec.partition("=")
        name, path = name.strip(), Path(file.strip()).expanduser()
        if not sep or not name or not file.strip():
            raise UsageError(f"Cannot read --scorer '{spec}'.", "Write it as NAME=FILE.onnx, e.g. "
                             "--scorer length-only=predictor/build/length-only.onnx")
        if name in ("default", "prior") or name in out:
            raise UsageError(f"--scorer name '{name}' is taken; choose another.")
        if not path.is_file():
            raise UsageError(f"--scorer {name}: no such file {path}.",
                             "Build the ablation predictors with: python -m predictor.train")
        out[name] = path
    return out
