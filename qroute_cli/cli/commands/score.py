"""`qroute score`: what the predictor expects for a prompt, without running any model."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from qroute_cli.errors import UsageError


def register(app: typer.Typer) -> None:
    app.command("score")(score)


def score(
    prompt: Optional[str] = typer.Argument(None, help="The prompt. Omit it to read prompts from stdin, one per line or JSON Lines with a 'prompt' field."),
    lines: bool = typer.Option(False, "--lines", help="Read every stdin line as a plain prompt, even one that starts with '{'."),
    jsonl: bool = typer.Option(False, "--jsonl", help="Read stdin as JSON Lines only: {\"prompt\": ...} per line."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per prompt (JSON Lines)."),
    predictor: Optional[Path] = typer.Option(None, "--predictor", help="A predictor .onnx file (default: the shipped one, or $QROUTE_PREDICTOR).", envvar="QROUTE_PREDICTOR"),
) -> None:
    """Predict each verifier's quality and answer length and each drafter's acceptance rate.

    Examples:

      qroute score "What is 17 * 23?"

      cat prompts.txt | qroute score --json
    """
    from qroute_cli.routing import predict
    from qroute_cli.cli.options import registry
    from qroute_cli.inputs import PromptLine, check_text, input_mode, read_prompts
    from qroute_cli.render import console, err_console, print_error

    reg = registry()
    mode = input_mode(prompt, lines, jsonl)
    if prompt is None and sys.stdin.isatty():
        raise UsageError("No prompt given.", 'Pass one (qroute score "...") or pipe prompts on stdin.')
    scorer = predict.load_default(reg, predictor)
    prompts = iter([PromptLine(None, check_text(prompt, "The prompt"))]) if prompt is not None \
        else read_prompts(sys.stdin, mode)
    worst = 0
    for item in prompts:
        if item.error is not None:  # a stdin line that could not be read: report it and go on
            if as_json:
                sys.stdout.write(json.dumps({"prompt": None, "line": item.line, "error": item.error.message,
                                             "hint": item.error.hint}) + "\n")
                sys.stdout.flush()
            print_error(err_console(), item.error)
            worst = max(worst, item.error.exit_code)
            continue
        pred = scorer.predict(item.prompt)
        if as_json:
            sys.stdout.write(json.dumps(to_json(item.prompt, pred, scorer.last_latency_ms)) + "\n")
            sys.stdout.flush()
            continue
        console().print(prediction_table(item.prompt, pred, scorer.last_latency_ms))
    if worst:
        raise typer.Exit(worst)


def to_json(prompt: str, pred, latency_ms: float) -> dict:
    """The --json record: {prompt, quality, acceptance, length, predictor, latency_ms}."""
    return {
        "prompt": prompt,
        "quality": {k: round(v, 4) for k, v in pred.quality.items()},
        "acceptance": {k: round(v, 4) for k, v in pred.acceptance.items()},
        "length": {k: round(v, 1) for k, v in pred.length.items()},
        "predictor": pred.scorer,
        "latency_ms": round(latency_ms, 3),
    }


def prediction_table(prompt: str, pred, latency_ms: float):
    """Verifiers with quality and length, then pairs with acceptance."""
    from rich.markup import escape
    from rich.table import Table

    short = prompt if len(prompt) <= 70 else prompt[:67] + "..."
    table = Table(title=escape(short), caption=escape(f"predictor {pred.scorer}, {latency_ms:.2f} ms"),
                  title_justify="left")
    table.add_column("model / pair")
    table.add_column("quality", justify="right")
    table.add_column("length (tokens)", justify="right")
    table.add_column("acceptance", justify="right")
    for model in sorted(pred.quality, key=lambda m: -pred.quality[m]):
        length = pred.length.get(model)
        table.add_row(escape(model), f"{pred.quality[model]:.3f}", "" if length is None else f"{length:.0f}", "")
    for pair, acc in sorted(pred.acceptance.items()):
        table.add_row(f"[dim]{escape(pair)}[/]", "", "", f"{acc:.0%}")
    return table
