"""`qroute chat`: an interactive, routed chat; reads turns from stdin when it is not a terminal."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from qroute_cli.cli.options import cap_threads


def register(app: typer.Typer) -> None:
    app.command("chat")(chat)


def chat(
    pair: Optional[str] = typer.Option(None, "--pair", "-p", help="Answer every turn with this pair instead of routing (/pair auto routes again)."),
    strategy: Optional[str] = typer.Option(None, "--strategy", "-s", help="quality (default), cost, random or static:PAIR."),
    budget: Optional[str] = typer.Option(None, "--budget", "-b", help="Latency budget per turn, e.g. 5s or 800ms (default from config)."),
    hard_budget: bool = typer.Option(False, "--hard-budget", help="Stop each answer when the budget runs out, keeping its text so far (/hard-budget on|off inside)."),
    system: Optional[str] = typer.Option(None, "--system", help="System message."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", "-n", metavar="N", min=1, help="Most tokens per answer (default from config)."),
    temperature: float = typer.Option(0.0, "--temperature", "-t", metavar="T", min=0.0, max=5.0, help="0 = greedy; above 0 samples."),
    seed: Optional[int] = typer.Option(None, "--seed", metavar="N", min=0, help="Random seed for sampling and the random strategy."),
    threads: Optional[int] = typer.Option(None, "--threads", metavar="N", min=1, callback=cap_threads, help="CPU threads for llama.cpp (default: all cores)."),
    gpu_layers: int = typer.Option(0, "--gpu-layers", metavar="N", min=-1, help="Layers to offload to a GPU (-1 = all) where llama.cpp has one."),
    draft_gpu_layers: Optional[int] = typer.Option(None, "--draft-gpu-layers", metavar="N", min=-1, help="Layers of a drafting model to offload (-1 = all; default: as --gpu-layers), e.g. 0 keeps a small drafter on the CPU while the verifier runs on the GPU."),
    as_json: bool = typer.Option(False, "--json", help="Without a terminal: one JSON object per answer (JSON Lines)."),
) -> None:
    """Chat in the terminal; each turn is routed with the conversation as context.

    Type /help inside for the slash commands (/pair, /budget, /explain, /save, ...).

    Ctrl-C stops an answer, Ctrl-D leaves.

    Examples:

      qroute chat --budget 5s

      printf 'Hi!\\nAnd in French?\\n' | qroute chat --pair smollm2-135m
    """
    from qroute_cli.chat import Chat, History, View, stdin_loop, terminal_loop
    from qroute_cli.cli.options import registry, state
    from qroute_cli.inputs import check_text, text_lines
    from qroute_cli.generation.pool import ModelPool
    from qroute_cli.render import calibration_progress, console, err_console
    from qroute_cli.routing.router import Router, parse_budget
    from qroute_cli.types import GenerationConfig

    reg = registry()
    if pair:
        reg.pair(pair)  # an unknown pair fails before anything loads
    if system is not None:
        check_text(system, "The --system text")
    budget_s = parse_budget(budget if budget is not None else reg.defaults.budget)
    config = GenerationConfig(max_tokens=max_tokens or reg.defaults.max_tokens, temperature=temperature, seed=seed)
    interactive = sys.stdin.isatty()
    err = err_console()
    view = View(console(), err, markdown=interactive and sys.stdout.isatty(),
                status=not state.quiet and not as_json, as_json=as_json and not interactive)
    with ModelPool(reg, n_threads=threads, n_gpu_layers=gpu_layers, draft_gpu_layers=draft_gpu_layers) as pool:
        router = Router(reg, strategy=strategy or reg.defaults.strategy, budget_s=budget_s, console=err,
                        progress=calibration_progress, pool=pool, seed=seed)
        try:
            session = Chat(pool, router, config, view, History(system=system), forced_pair=pair,
                           hard_budget=hard_budget)
            code = terminal_loop(session) if interactive else stdin_loop(session, text_lines(sys.stdin))
        finally:
            router.close()
    if code:
        raise typer.Exit(code)
