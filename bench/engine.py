"""Engine benchmark: plain vs. speculative decoding, side by side in one run.

For each prompt it runs, alternating and repeated, on the same verifier:
  - llama-cpp-python plain greedy generation (`Llama.generate`),
  - llama-cpp-python's own prompt-lookup `draft_model` path,
  - qroute plain decoding, qroute n-gram speculation, qroute model-draft speculation,
and prints tokens/s (median over repeats), acceptance, the ratio to qroute plain (qroute plain
also runs a second time each repeat, "qroute plain again": its ratio is the run's own noise), the
token agreement with plain output and, for speculative modes, the limit: the speed-up over
plain decoding that the verifier's cost curve allows at the per-token acceptance of the answer
(qroute_cli/speculation.py, the rule the engine drafts by). qroute's speculative modes draft
by the cost curve of this setup's calibration profile (models it lacks are measured first,
with the full plan, and not saved). --baseline adds the same drafters with the draft length following
acceptance alone (the rule without a curve). Raw rows, with the commit, date, machine,
threads and command, go to bench/results/engine.json.

    .venv/bin/python -m bench.engine                 # Qwen 1.5B verifier, 0.5B drafter
    .venv/bin/python -m bench.engine --quick         # smollm2-135m, fewer tokens
    .venv/bin/python -m bench.engine --repeats 1 --max-tokens 64 --baseline   # a short before/after
"""

from __future__ import annotations

import argparse
import functools
import json
import os
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
from qroute_cli.routing.calibrate import calibrate
from qroute_cli.evaluation.provenance import engine_revision, source_commit
from qroute_cli.routing.latency import cost_curve, cpu_detail, cpu_model, current_machine, load_profile, missing_models
from qroute_cli.generation.engine import ngram_stats, teacher_forced_acceptance
from qroute_cli.speculation import best_draft_len
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


AGAIN = "qroute plain again"


def limit_inputs(label: str, runs: list[dict], prompt: list[int], plain: list[int],
                 teacher_forced: float | None = None) -> tuple[float | None, float, str | None]:
    """(per-token acceptance, coverage, where the acceptance comes from) the limit is computed
    at. N-gram drafting's are a property of the answer (what the lookup finds in the plain
    output); a model drafter's per-token acceptance is what its runs observed, with a draft on
    every step, or, where its runs never drafted (the curve said no draft pays), the share of
    the plain answer's tokens the drafter predicts when it reads the answer (`teacher_forced`)."""
    if "ngram" in label:
        return (*ngram_stats(prompt, plain), "n-gram lookup on the plain answer")
    judged = sum(r.get("checked") or 0 for r in runs)
    if judged:
        return sum(r["accepted"] for r in runs) / judged, 1.0, "observed"
    if teacher_forced is not None and label.startswith("qroute model-draft"):
        return teacher_forced, 1.0, "teacher-forced on the plain answer"
    return None, 1.0, None


def agreement(a, b) -> float:
    """Share of positions (over the longer output) where two token sequences agree before
    their first difference: 1.0 means identical."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n / max(len(a), len(b), 1)


def setup_profile(pool, pairs, path: Path | None, console: Console, gpu_layers: int = 0):
    """The calibration profile the runs draft by: --profile, else this setup's saved one, with
    the models it lacks measured now (the full plan: a quick one is too noisy on a busy machine
    to choose draft lengths by; not saved). Returns (profile, where it came from)."""
    machine = current_machine(gpu_layers=gpu_layers)
    profile = load_profile(path) if path else load_profile(machine=machine)
    source = str(path) if path else ("saved" if profile else "measured")
    need = missing_models(profile, pool.registry, pairs)
    if need:
        console.print(f"[dim]measuring {', '.join(need)} for the cost curve (calibration)...[/]")
        profile = calibrate(pool, need, machine, quick=False, base=profile)
        source += f" + measured {', '.join(need)}"
    return profile, source


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--verifier", default="qwen2.5-coder-1.5b")
    ap.add_argument("--drafter", default="qwen2.5-coder-0.5b")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="smollm2-135m, 64 tokens, 2 repeats")
    ap.add_argument("--baseline", action="store_true",
                    help="also run each drafter with the draft length following acceptance alone (no cost curve)")
    ap.add_argument("--profile", type=Path, default=None, help="a calibration profile JSON (default: this setup's)")
    ap.add_argument("--gpu-layers", type=int, default=0,
                    help="layers of each model offloaded to a GPU (-1: all), every row alike (a GPU build)")
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
    with ModelPool(reg, n_gpu_layers=args.gpu_layers) as pool:
        profile, profile_source = setup_profile(pool, list(pairs.values()), args.profile, console, args.gpu_layers)
        curves = {label: cost_curve(profile, pair) for label, pair in pairs.items()}
        # label -> (pair, cost curve it drafts by): the modes that run through qroute.
        modes = {label: (pair, curves[label]) for label, pair in pairs.items()}
        if args.baseline:
            for label, pair in pairs.items():
                if curves[label] is not None:
                    modes[f"{label} (acceptance rule)"] = (pair, None)
        # Plain once more each repeat: how far apart two identical runs land, the yardstick for
        # telling a slower mode from a noisy one.
        modes[AGAIN] = (pairs["qroute plain"], None)
        verifier = pool.get(args.verifier)
        path = cache.require(spec)
        lcp_plain = lcp_lookup = None
        for name, text in PROMPTS.items():
            msgs = user_messages(text)
            toks, _ = prompt_tokens(verifier, spec, msgs)
            # Warm up every path once (page cache, graph allocation).
            for pair, curve in modes.values():
                run_prompt(pool, pair, msgs, GenerationConfig(max_tokens=8), costs=curve)
            # llama-cpp-python's own generation of this prompt (placed as qroute's models are).
            reference = functools.partial(reference_completion, spec, path, toks, n_gpu_layers=args.gpu_layers)
            _, _, lcp_plain = reference(8, llm=lcp_plain)
            _, _, lcp_lookup = reference(8, prompt_lookup=10, llm=lcp_lookup)
            results: dict[str, list[dict]] = {}
            for rep in range(args.repeats):
                out, secs, lcp_plain = reference(args.max_tokens, llm=lcp_plain)
                results.setdefault("llama-cpp-python plain", []).append(
                    {"tokens": out, "seconds": secs, "acceptance": None})
                out, secs, lcp_lookup = reference(args.max_tokens, prompt_lookup=10, llm=lcp_lookup)
                results.setdefault("llama-cpp-python draft_model (prompt lookup)", []).append(
                    {"tokens": out, "seconds": secs, "acceptance": None})
                for label, (pair, curve) in modes.items():
                    pool.speed.pop(pair.name, None)  # every repeat starts without speed memory
                    for name_ in pool.loaded():  # and reads its prompt afresh, as the llama-cpp-python rows do
                        pool.get(name_).truncate(0)
                    gen = run_prompt(pool, pair, msgs, cfg, costs=curve)
                    results.setdefault(label, []).append(
                        {"tokens": list(gen.tokens), "seconds": gen.stats.latency_s,
                         "acceptance": gen.stats.acceptance, "token_acceptance": gen.stats.token_acceptance,
                         "drafted": gen.stats.drafted, "accepted": gen.stats.accepted,
                         "checked": gen.stats.checked, "draft_steps": gen.stats.draft_steps,
                         "plain_steps": gen.stats.plain_steps, "threads": pool.last_threads})
            ref = results["qroute plain"][0]["tokens"]
            # What a model drafter would be accepted at on this answer, read in one pass: the
            # limit's input where the curve kept its runs from drafting at all.
            forced = teacher_forced_acceptance(pool.get(args.drafter), toks, ref) if args.drafter else None
            base_tps = statistics.median(len(r["tokens"]) / r["seconds"] for r in results["qroute plain"])
            for label, runs in results.items():
                tps = statistics.median(len(r["tokens"]) / r["seconds"] for r in runs)
                acc = [r["acceptance"] for r in runs if r["acceptance"] is not None]
                curve = curves.get(label.removesuffix(" (acceptance rule)"))
                mean_acc = statistics.mean(acc) if acc else None
                per_token, coverage, source = limit_inputs(label, runs, toks, ref, forced)
                # The limit: what the cost curve allows at the per-token acceptance (and, for
                # n-gram drafts, the lookup's coverage) of this answer.
                best = best_draft_len(curve, per_token, cfg.draft_max, coverage) if curve and per_token is not None else None
                limit = curve.plain_s / best[1] if best else None
                rows.append({
                    "prompt": name, "mode": label, "tokens_per_s": round(tps, 2),
                    "ratio_vs_qroute_plain": round(tps / base_tps, 3),
                    "limit_vs_plain": None if limit is None else round(limit, 3),
                    "best_draft_len": None if best is None else best[0],
                    "share_of_limit": None if limit is None else round(tps / base_tps / limit, 3),
                    "acceptance": round(mean_acc, 3) if acc else None,
                    "token_acceptance": None if per_token is None else round(per_token, 3),
                    "coverage": None if per_token is None else round(coverage, 3),
                    "acceptance_source": source,
                    "agreement_with_plain": round(statistics.mean(agreement(r["tokens"], ref) for r in runs), 3),
                    "tokens": statistics.median(len(r["tokens"]) for r in runs),
                    "runs": [{k: v for k, v in r.items() if k != "tokens"} for r in runs],
                })
        for llm in (lcp_plain, lcp_lookup):
            if llm is not None:
                llm.close()

    table = Table(title=f"Engine: {args.verifier} verifier, {args.max_tokens} tokens, median of {args.repeats}")
    for col in ("prompt", "mode", "tok/s", "x qroute plain", "limit (k)", "share of limit", "kept / per token",
                "agrees w/ plain", "tokens"):
        table.add_column(col)
    for r in rows:
        limit = "-" if r["limit_vs_plain"] is None else f"{r['limit_vs_plain']:.2f} ({r['best_draft_len']})"
        share = "-" if r["share_of_limit"] is None else f"{r['share_of_limit']:.0%}"
        acc = "-" if r["acceptance"] is None else f"{r['acceptance']:.0%}"
        if r["token_acceptance"] is not None:
            acc += f" / {r['token_acceptance']:.0%}" + (" (tf)" if r["acceptance_source"].startswith("teacher") else "")
        table.add_row(r["prompt"], r["mode"], f"{r['tokens_per_s']:.1f}", f"{r['ratio_vs_qroute_plain']:.2f}", limit,
                      share, acc, f"{r['agreement_with_plain']:.0%}", str(r["tokens"]))
    console.print(table)
    console.print("[dim]limit: the speed-up over plain the verifier's cost curve allows at the answer's per-token "
                  "acceptance (n-gram: and the share of steps its lookup finds a draft), with the draft length k "
                  "it takes. kept: drafted tokens kept; per token: kept / judged; (tf): the runs never drafted, so the "
                  "per-token acceptance is the drafter's teacher-forced match on the plain answer.[/]")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    threads = sorted({run["threads"] for r in rows for run in r["runs"] if run.get("threads")})
    meta = {"verifier": args.verifier, "drafter": args.drafter, "max_tokens": args.max_tokens,
            "repeats": args.repeats, "gpu_layers": args.gpu_layers, "llama_cpp_python": llama_cpp_version(), "machine": platform.machine(),
            "cpu": cpu_model(), "cpu_detail": cpu_detail(), "cores": os.cpu_count(), "threads": threads or None,
            "commit": source_commit(), "engine": engine_revision(), "command": " ".join([Path(sys.executable).name, "-m", "bench.engine"] + sys.argv[1:]),
            "profile": profile_source,
            "cost_curves": {label: None if c is None else {"verify_s": [round(x, 5) for x in c.verify_s],
                                                          "draft_s": round(c.draft_s, 6),
                                                          "catchup_s": round(c.catchup_s, 6)}
                            for label, c in curves.items()},
            "python": sys.version.split()[0], "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    console.print(f"[dim]raw results: {args.out}[/]")


if __name__ == "__main__":
    main()
