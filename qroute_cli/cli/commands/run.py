"""`qroute run`: answer prompts from the argument or stdin, routed per prompt."""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer

from qroute_cli.cli.options import cap_threads
from qroute_cli.errors import QrouteError, UsageError
from qroute_cli.inputs import PromptLine, check_text, input_mode, read_prompts
from qroute_cli.output import silence_stdout, write_stdout
from qroute_cli.tuning import DRAFTING


def register(app: typer.Typer) -> None:
    app.command("run")(run)


def run(
    prompt: Optional[str] = typer.Argument(None, help="The prompt. Omit it to read prompts from stdin: one per line, or JSON Lines with a 'prompt' field (and optional 'system')."),
    lines: bool = typer.Option(False, "--lines", help="Read every stdin line as a plain prompt, even one that starts with '{'."),
    jsonl: bool = typer.Option(False, "--jsonl", help="Read stdin as JSON Lines only: {\"prompt\": ..., \"system\": ...} per line."),
    pair: Optional[str] = typer.Option(None, "--pair", "-p", help="Force this pair (see `qroute models list`) instead of routing."),
    strategy: Optional[str] = typer.Option(None, "--strategy", "-s", help="quality (default), cost, random or static:PAIR."),
    budget: Optional[str] = typer.Option(None, "--budget", "-b", help="Latency budget per prompt, e.g. 5s or 800ms (default from config)."),
    hard_budget: bool = typer.Option(False, "--hard-budget", help="Stop generating when the budget runs out: the text so far is kept, finish_reason 'deadline'."),
    explain: bool = typer.Option(False, "--explain", help="Show every candidate pair and why one was chosen."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", "-n", metavar="N", min=1, help="Most tokens to generate (default from config)."),
    temperature: float = typer.Option(0.0, "--temperature", "-t", metavar="T", min=0.0, max=5.0, help="0 = greedy; above 0 samples (speculation stays exact)."),
    seed: Optional[int] = typer.Option(None, "--seed", metavar="N", min=0, help="Random seed for sampling and the random strategy. With a seed, "
                                      "drafting follows acceptance only, not timing: on the same machine, the same pair "
                                      "and thread count (--pair, --threads) give the same text."),
    system: Optional[str] = typer.Option(None, "--system", help="System message."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per prompt (JSON Lines) instead of streamed text."),
    draft_max: int = typer.Option(DRAFTING.max_len, "--draft-max", metavar="N", min=1, max=DRAFTING.max_len,
                                  help=f"Upper bound of the adaptive draft length (at most {DRAFTING.max_len}: "
                                       "calibration measures verify batches up to that length)."),
    adaptive: bool = typer.Option(True, "--adaptive/--no-adaptive", help="Back off from drafting when it does not pay."),
    threads: Optional[int] = typer.Option(None, "--threads", metavar="N", min=1, callback=cap_threads, help="CPU threads for llama.cpp (default: all cores)."),
    gpu_layers: int = typer.Option(0, "--gpu-layers", metavar="N", min=-1, help="Layers to offload to a GPU (-1 = all) where llama.cpp has one."),
    draft_gpu_layers: Optional[int] = typer.Option(None, "--draft-gpu-layers", metavar="N", min=-1, help="Layers of a drafting model to offload (-1 = all; default: as --gpu-layers), e.g. 0 keeps a small drafter on the CPU while the verifier runs on the GPU."),
) -> None:
    """Answer a prompt (or every prompt on stdin) with the best pair that fits the budget.

    Examples:

      qroute run "Write a Python function that reverses a string"

      qroute run "What is 17 * 23?" --budget 3s --explain

      qroute run "Write a haiku about rain" --budget 2s --hard-budget

      cat prompts.txt | qroute run --json > answers.jsonl

    A stdin line that cannot be read is reported (with --json as a record with its line
    number and an error) and the batch goes on; the exit code is then non-zero.
    """
    from qroute_cli.cli.options import registry, state
    from qroute_cli.generation.pool import ModelPool
    from qroute_cli.render import calibration_progress, err_console
    from qroute_cli.routing.router import Router, parse_budget
    from qroute_cli.types import GenerationConfig

    reg = registry()
    if pair:
        reg.pair(pair)  # unknown pair: fail before reading stdin
    mode = input_mode(prompt, lines, jsonl)
    if prompt is None and sys.stdin.isatty():
        raise UsageError("No prompt given.", 'Pass one (qroute run "...") or pipe prompts on stdin.')
    if system is not None:
        check_text(system, "The --system text")
    budget_s = parse_budget(budget if budget is not None else reg.defaults.budget)
    config = GenerationConfig(
        max_tokens=max_tokens or reg.defaults.max_tokens, temperature=temperature, seed=seed,
        draft_max=draft_max, adaptive=adaptive, deadline_s=budget_s if hard_budget else None,
    )
    prompts = iter([PromptLine(None, check_text(prompt, "The prompt"))]) if prompt is not None \
        else read_prompts(sys.stdin, mode)
    err = err_console()
    show_status = not state.quiet and not as_json
    failures = 0
    with ModelPool(reg, n_threads=threads, n_gpu_layers=gpu_layers, draft_gpu_layers=draft_gpu_layers) as pool:
        # The router calibrates missing models through this pool (they stay loaded for the run).
        router = Router(reg, strategy=strategy or reg.defaults.strategy, budget_s=budget_s, console=err,
                        progress=calibration_progress, pool=pool, seed=seed, explain=explain)
        try:
            for item in prompts:
                code = _answer_one(item, pool, router, config, pair, system, explain, as_json, show_status, err)
                if code == INTERRUPTED:
                    raise typer.Exit(INTERRUPTED)
                failures = max(failures, code)
        except BrokenPipeError:
            silence_stdout()
            return
        finally:
            router.close()
    if failures:
        raise typer.Exit(failures)  # the exit code of the worst error; the other prompts were answered


def _error_record(item: PromptLine, error: str, **fields) -> str:
    """The --json line for a prompt that got no answer (the line number when it came from stdin)."""
    where = {} if item.line is None else {"line": item.line}
    obj = {"prompt": item.prompt if item.error is None else None, **where, "error": error, **fields}
    return json.dumps(obj, ensure_ascii=False) + "\n"


# The exit code of a prompt cut by Ctrl-C: the batch stops there.
INTERRUPTED = 130


def _answer_one(item: PromptLine, pool, router, config, forced, system, explain, as_json, show_status,
                err) -> int:
    """Answer one prompt and render it; its exit code: 0, that of a reported error, or INTERRUPTED."""
    from qroute_cli.answer import answer
    from qroute_cli.generation.runner import user_messages
    from qroute_cli.render import explain_table, print_error, stats_line

    if item.error is not None:  # a stdin line that could not be read: report it, the batch goes on
        if as_json:
            write_stdout(_error_record(item, item.error.message, hint=item.error.hint))
        print_error(err, item.error)
        return item.error.exit_code

    def show_decision(decision, pair, cfg) -> None:
        if explain and not as_json:
            err.print(explain_table(decision))

    messages = user_messages(item.prompt, item.system or system)
    try:
        result = answer(router, pool, messages, config, None if as_json else write_stdout,
                        forced_pair=forced, before_run=show_decision)
    except QrouteError as exc:
        if as_json:
            write_stdout(_error_record(item, exc.message, hint=exc.hint))
        print_error(err, exc)
        return exc.exit_code
    if result.generation is None:  # interrupted while routing or loading
        if as_json:
            write_stdout(_error_record(item, "interrupted", finish_reason="interrupted"))
        err.print("[yellow]Interrupted.[/]")
        return INTERRUPTED
    if as_json:
        write_stdout(json.dumps(result.to_json(item.prompt), ensure_ascii=False) + "\n")
    else:
        write_stdout("\n")
        if show_status:
            err.print(stats_line(result.generation, router.budget_s, result.threads), highlight=False)
    return INTERRUPTED if result.outcome == "interrupted" else 0
