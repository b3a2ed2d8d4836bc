"""Chat benchmark: time to first token on turns 2+ with and without KV-cache reuse.

A scripted conversation runs through the chat's own History and the public `run_prompt`,
twice per repeat (alternating, so a busy machine slows both alike):
  - reuse:    the verifier keeps its KV cache between turns (what `qroute chat` does), so each
              turn only prefills the new user message (plus the template's turn markers);
  - no reuse: the verifier's cache is emptied (`truncate(0)`) before every turn, so each turn
              prefills the whole conversation.
Greedy decoding makes both runs see the same conversation. TTFT is the engine's (prefill to the
first token) and, beside it, the wall time from the call to the first streamed text. A warm-up
conversation runs first. Raw rows go to bench/results/chat_ttft.json.

    .venv/bin/python -m bench.chat_ttft                     # smollm2-135m, qwen2.5-coder-0.5b if present
    .venv/bin/python -m bench.chat_ttft --models smollm2-135m --repeats 1 --max-tokens 16
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from qroute_cli.chat import History, Turn
from qroute_cli.config import load_registry
from qroute_cli.evaluation import provenance
from qroute_cli.models.cache import model_path
from qroute_cli.generation.pool import ModelPool
from qroute_cli.generation.runner import run_prompt
from qroute_cli.types import GenerationConfig

SYSTEM = "You are a helpful assistant. Answer briefly."
QUESTIONS = [
    "What is the capital of France?",
    "What is it famous for?",
    "Name three museums there.",
    "Which one is the oldest?",
    "How do I get there from the airport?",
    "Thanks! Any tips for a first visit?",
]
DEFAULT_MODELS = ["smollm2-135m", "qwen2.5-coder-0.5b"]
OUT = Path(__file__).resolve().parent / "results" / "chat_ttft.json"


def conversation(pool: ModelPool, model: str, config: GenerationConfig, reuse: bool) -> list[dict]:
    """One scripted conversation on `model`'s plain pair; a row per turn."""
    pair = pool.registry.pair(model)
    backend = pool.get(model)
    backend.truncate(0)  # every conversation starts cold: turn 1 is the same in both modes
    history = History(system=SYSTEM)
    rows = []
    for i, question in enumerate(QUESTIONS, 1):
        if not reuse:
            backend.truncate(0)
        first_text: list[float] = []
        t0 = time.perf_counter()
        gen = run_prompt(pool, pair, history.messages(question), config,
                         on_text=lambda _: first_text or first_text.append(time.perf_counter() - t0))
        history.add(Turn(question, gen.text, gen.pair, gen.finish_reason, gen.stats))
        s = gen.stats
        rows.append({
            "model": model, "mode": "reuse" if reuse else "no-reuse", "turn": i,
            "prompt_tokens": s.prompt_tokens, "prompt_cached": s.prompt_cached,
            "ttft_s": s.ttft_s, "first_text_s": first_text[0] if first_text else None,
            "output_tokens": s.output_tokens, "latency_s": s.latency_s,
        })
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        for mode in ("reuse", "no-reuse"):
            later = [r for r in rows if r["model"] == model and r["mode"] == mode and r["turn"] >= 2]
            if not later:
                continue
            out.append({
                "model": model, "mode": mode, "turns": len(later),
                "prompt_tokens": statistics.mean(r["prompt_tokens"] for r in later),
                "prefilled": statistics.mean(r["prompt_tokens"] - r["prompt_cached"] for r in later),
                "ttft_ms_median": 1000 * statistics.median(r["ttft_s"] for r in later),
                "ttft_ms_mean": 1000 * statistics.mean(r["ttft_s"] for r in later),
                "first_text_ms_median": 1000 * statistics.median(
                    r["first_text_s"] for r in later if r["first_text_s"] is not None),
                "last_turn_ttft_ms": 1000 * statistics.median(
                    r["ttft_s"] for r in later if r["turn"] == len(QUESTIONS)),
            })
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated; absent ones are skipped")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=24, help="per answer (short: TTFT is the point)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)

    reg = load_registry(None, include_user=False)
    models = [m for m in args.models.split(",") if m]
    present = [m for m in models if model_path(reg.model(m)).exists()]
    for m in sorted(set(models) - set(present)):
        print(f"skipping {m}: not in the model cache (qroute models pull {m})", file=sys.stderr)
    if not present:
        return 1
    config = GenerationConfig(max_tokens=args.max_tokens)
    rows: list[dict] = []
    with ModelPool(reg, n_threads=args.threads, max_loaded=1) as pool:
        for model in present:
            conversation(pool, model, config, reuse=True)  # warm-up: load, page in, allocate
            for rep in range(args.repeats):
                for reuse in (True, False) if rep % 2 == 0 else (False, True):
                    for row in conversation(pool, model, config, reuse):
                        rows.append({**row, "repeat": rep})
    summary = summarise(rows)

    table = Table(title=f"Chat TTFT on turns 2-{len(QUESTIONS)} (median of {args.repeats} runs)",
                  title_justify="left", caption_justify="left",
                  caption="prefilled: prompt tokens evaluated per turn; the rest came from the KV cache")
    for col in ("model", "KV reuse", "prompt tok", "prefilled", "TTFT median", "first text", f"TTFT turn {len(QUESTIONS)}"):
        table.add_column(col, justify="left" if col in ("model", "KV reuse") else "right")
    for s in summary:
        table.add_row(s["model"], "yes" if s["mode"] == "reuse" else "no", f"{s['prompt_tokens']:.0f}",
                      f"{s['prefilled']:.0f}", f"{s['ttft_ms_median']:.0f} ms", f"{s['first_text_ms_median']:.0f} ms",
                      f"{s['last_turn_ttft_ms']:.0f} ms")
    Console(width=110).print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python -m bench.chat_ttft", *(sys.argv[1:] if argv is None else argv)])
    args.out.write_text(json.dumps({
        "provenance": provenance.record(command=command, threads=args.threads),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "threads": args.threads},
        "settings": {"repeats": args.repeats, "max_tokens": args.max_tokens, "questions": QUESTIONS, "system": SYSTEM},
        "summary": summary, "rows": rows,
    }, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
