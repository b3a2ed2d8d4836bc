"""Engine benchmark: plain vs. speculative decoding, side by side in one run.

For each prompt it runs, alternating and repeated, on the same verifier:
  - llama-cpp-python plain greedy generation (`Llama.generate`),
  - llama-cpp-python's own prompt-lookup `draft_model` path,
  - qroute plain decoding, qroute n-gram speculation, qroute model-draft speculation,
and prints tokens/s (median over repeats), acceptance, the ratio to qroute plain and the
token agreement with plain output. Raw rows go to bench/results/engine.json.

    .venv/bin/python -m bench.engine                 # Qwen 1.5B verifier, 0.5B drafter
    .venv/bin/python -m bench.engine --quick         # smollm2-135m, fewer tokens
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

from qroute_cli.generation.backends.llama import llama_cpp_version, reference_completion
from qroute_cli.config import load_registry
from qroute_cli.models import cache
from qroute_cli.generation.pool import ModelPool
from qroute_cli.generation.runner import prompt_tokens, run_prompt, user_messages
from qroute_cli.types import GenerationConfig, Pair

PROMPTS = {
    "write-code": "Write a Python function `merge_intervals(intervals)` that merges overlapping "
                  "intervals and returns them sorted. Include a docstring.",
    "edit-code": (
        "Add type hints to this code and keep everything else exactly the same:\n\n"
        "def parse_config(path, defaults):\n"
        "    settings = dict(defaults)\n"
        "    with open(path) as fh:\n"
        "        for line in fh:\n"
        "            line = line.strip()\n"
        "            if not line or line.startswith('#'):\n"
        "                continue\n"
        "            key, value = line.split('=', 1)\n"
        "            settings[key.strip()] = value.strip()\n"
        "    return settings\n\n"
        "def merge_settings(base, override):\n"
        "    merged = dict(base)\n"
        "    for key, value in override.items():\n"
        "        merged[key] = value\n"
        "    return merged\n"
    ),
}


def agreement(a, b) -> float:
    """Share of positions (over the longer output) where two token sequences agree before
    their first difference: 1.0 means identical."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n / max(len(a), len(b), 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--verifier", default="qwen2.5-coder-1.5b")
    ap.add_argument("--drafter", default="qwen2.5-coder-0.5b")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="smollm2-135m, 64 tokens, 2 repeats")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "engine.json")
    args = ap.parse_args()
    if args.quick:
        args.verifier, args.drafter, args.max_tokens, args.repeats = "smollm2-135m", None, 64, 2

    reg = load_registry(None, include_user=False)
    spec = reg.model(args.verifier)
    pairs = {"qroute plain": Pair("plain", args.verifier), "qroute ngram": Pair("ngram", args.verifier, "ngram")}
    if args.drafter:
        pairs["qroute model-draft"] = Pair("model", args.verifier, args.drafter)
    reg.pairs.update({p.name: p for p in pairs.values()})
    console = Console()
    rows = []
    cfg = GenerationConfig(max_tokens=args.max_tokens)
    with ModelPool(reg) as pool:
        verifier = pool.get(args.verifier)
        path = cache.require(spec)
        lcp_plain = lcp_lookup = None
        for name, text in PROMPTS.items():
            msgs = user_messages(text)
            toks, _ = prompt_tokens(verifier, spec, msgs)
            # Warm up every path once (page cache, graph allocation).
            for pair in pairs.values():
                run_prompt(pool, pair, msgs, GenerationConfig(max_tokens=8))
            _, _, lcp_plain = reference_completion(spec, path, toks, 8, llm=lcp_plain)
            _, _, lcp_lookup = reference_completion(spec, path, toks, 8, prompt_lookup=10, llm=lcp_lookup)
            results: dict[str, list[dict]] = {}
            for rep in range(args.repeats):
                out, secs, lcp_plain = reference_completion(spec, path, toks, args.max_tokens, llm=lcp_plain)
                results.setdefault("llama-cpp-python plain", []).append(
                    {"tokens": out, "seconds": secs, "acceptance": None})
                out, secs, lcp_lookup = reference_completion(spec, path, toks, args.max_tokens,
                                                             prompt_lookup=10, llm=lcp_lookup)
                results.setdefault("llama-cpp-python draft_model (prompt lookup)", []).append(
                    {"tokens": out, "seconds": secs, "acceptance": None})
                for label, pair in pairs.items():
                    pool.speed.pop(pair.name, None)  # every repeat starts without speed memory
                    gen = run_prompt(pool, pair, msgs, cfg)
                    results.setdefault(label, []).append(
                        {"tokens": list(gen.tokens), "seconds": gen.stats.latency_s,
                         "acceptance": gen.stats.acceptance, "drafted": gen.stats.drafted,
                         "accepted": gen.stats.accepted})
            ref = results["qroute plain"][0]["tokens"]
            base_tps = statistics.median(len(r["tokens"]) / r["seconds"] for r in results["qroute plain"])
            for label, runs in results.items():
                tps = statistics.median(len(r["tokens"]) / r["seconds"] for r in runs)
                acc = [r["acceptance"] for r in runs if r["acceptance"] is not None]
                rows.append({
                    "prompt": name, "mode": label, "tokens_per_s": round(tps, 2),
                    "ratio_vs_qroute_plain": round(tps / base_tps, 3),
                    "acceptance": round(statistics.mean(acc), 3) if acc else None,
                    "agreement_with_plain": round(statistics.mean(agreement(r["tokens"], ref) for r in runs), 3),
                    "tokens": statistics.median(len(r["tokens"]) for r in runs),
                    "runs": [{k: v for k, v in r.items() if k != "tokens"} for r in runs],
                })
        for llm in (lcp_plain, lcp_lookup):
            if llm is not None:
                llm.close()

    table = Table(title=f"Engine: {args.verifier} verifier, {args.max_tokens} tokens, median of {args.repeats}")
    for col in ("prompt", "mode", "tok/s", "x qroute plain", "acceptance", "agrees w/ plain", "tokens"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["prompt"], r["mode"], f"{r['tokens_per_s']:.1f}", f"{r['ratio_vs_qroute_plain']:.2f}",
                      "-" if r["acceptance"] is None else f"{r['acceptance']:.0%}",
                      f"{r['agreement_with_plain']:.0%}", str(r["tokens"]))
    console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"verifier": args.verifier, "drafter": args.drafter, "max_tokens": args.max_tokens,
            "repeats": args.repeats, "llama_cpp_python": llama_cpp_version(), "machine": platform.machine(),
            "python": sys.version.split()[0], "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    console.print(f"[dim]raw results: {args.out}[/]")


if __name__ == "__main__":
    main()
