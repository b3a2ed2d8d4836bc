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
    as_json: bool = typer.Option(False, "--json", help="One JSON object per prompt (JSON Lines)."),
    predictor: Optional[Path] = typer.Option(None, "--predictor", help="A predictor .onnx file (default: the shipped one, or $QROUTE_PREDICTOR).", envvar="QROUTE_PREDICTOR"),
) -> None:
    """Predict each verifier's quality and answer length and each drafter's acceptance rate.

    Examples:

      qroute score "What is 17 * 23?"

      cat prompts.txt | qroute score --json
    """
    from qroute_cli import predict
    from qroute_cli.cli import registry
    from qroute_cli.commands.run import read_prompts

    reg = registry()
    if prompt is None and sys.stdin.isatty():
        raise UsageError("No prompt given.", 'Pass one (qroute score "...") or pipe prompts on stdin.')
    scorer = predict.load_default(reg, predictor)
    prompts = iter([{"prompt": prompt}]) if prompt is not None else read_prompts(sys.stdin)
    out = None
    for item in prompts:
        pred = scorer.predict(item["prompt"])
        if as_json:
            sys.stdout.write(json.dumps(to_json(item["prompt"], pred, scorer.last_latency_ms)) + "\n")
            sys.stdout.flush()
            continue
        from qroute_cli.render import console

        out = out or console()
        out.print(prediction_table(item["prompt"], pred, scorer.last_latency_ms))


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
    from rich.table import Table

    short = prompt if len(prompt) <= 70 else prompt[:67] + "..."
    table = Table(title=short, caption=f"predictor {pred.scorer}, {latency_ms:.2f} ms", title_justify="left")
    table.add_column("model / pair")
    table.add_column("quality", justify="right")
    table.add_column("length (tokens)", justify="right")
    table.add_column("acceptance", justify="right")
    for model in sorted(pred.quality, key=lambda m: -pred.quality[m]):
        length = pred.length.get(model)
        table.add_row(model, f"{pred.quality[model]:.3f}", "" if length is None else f"{length:.0f}", "")
    for pair, acc in sorted(pred.acceptance.items()):
        table.add_row(f"[dim]{pair}[/]", "", "", f"{acc:.0%}")
    return table
