"""Latency-model error and online recovery, on real models through the public API.

1. Calibrate the models of the chosen pairs on this machine.
2. MAPE: run every prompt on every pair (Router with static:PAIR, so the prediction is the one
   the router makes in use, with online learning on as in real use) and compare predicted with
   measured latency. Also reported: the error with the true output length plugged in, which
   separates the cost model (prefill + per-token time) from the length guess.
3. Routing overhead: p50 of features + prediction + decision, and its share of end-to-end time.
4. Recovery: the models are re-measured (quick), then the profile's costs are scaled by
   `--wrong` (0.3: it claims the machine is 3.3x faster, as if calibrated on a faster setting).
   The budget is 60% of what a full-length answer takes now. The router thinks the answer
   fits and misses; learning from the run log corrects the latency factors, so it caps the
   answer or picks a faster pair, and the hit rate recovers. N = the fewest leading prompts
   after which the hit rate of the rest is >= 80%. A control run with learning off shows
   the misses go on.

    .venv/bin/python -m bench.latency_error                      # smollm2 pairs
    .venv/bin/python -m bench.latency_error --pairs smollm2-135m qwen2.5-coder-0.5b

Writes bench/results/latency_error.json. State lives in a temporary QROUTE_HOME.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from qroute_cli import paths

ROOT = Path(__file__).resolve().parent.parent

os.environ.setdefault("QROUTE_MODELS", str(paths.cache_dir()))  # keep the real model cache
os.environ["QROUTE_HOME"] = tempfile.mkdtemp(prefix="qroute-bench-")  # never touch the user's store

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from qroute_cli.answer import answer  # noqa: E402
from qroute_cli.routing.calibrate import calibrate  # noqa: E402
from qroute_cli.config import Registry, load_registry  # noqa: E402
from qroute_cli.evaluation import provenance  # noqa: E402
from qroute_cli.routing.latency import Profile, current_machine  # noqa: E402
from qroute_cli.generation.pool import ModelPool  # noqa: E402
from qroute_cli.routing.router import Router  # noqa: E402
from qroute_cli.routing.scoring import PriorScorer  # noqa: E402
from qroute_cli.generation.runner import run_prompt, user_messages  # noqa: E402
from qroute_cli.routing.runlog import Store  # noqa: E402
from qroute_cli.types import GenerationConfig  # noqa: E402

PROMPTS = [
    "What is the capital of France?",
    "Who wrote Pride and Prejudice?",
    "Explain in two sentences why the sky is blue.",
    "Tom has 12 apples and gives 5 to Anna. How many apples does Tom have left?",
    "A train travels 60 km per hour for 3 hours. How far does it go?",
    "Write a Python function that returns the factorial of n.",
    "Write a haiku about the sea.",
    "Write a short story about a robot who learns to paint.",
    "List three uses of copper.",
    "Translate 'good morning' into Spanish and German.",
    "Explain what a hash table is to a beginner.",
    "Give me a recipe for pancakes.",
    "def add(a, b):\n    return a + b\n\nAdd type hints and a docstring to this function.",
    "What is 15% of 80?",
    "Describe the water cycle.",
    "Write a limerick about a cat.",
]
LONG_PROMPTS = [  # answers that run to the token limit: the recovery experiment's workload
    "Write a long story about a dragon who wants to become a baker.",
    "Explain in detail how a car engine works.",
    "Describe the history of the Roman Empire.",
    "Write a long letter to a friend about your summer holiday.",
    "Explain how computers store numbers, with examples.",
    "Write a story about two friends lost in a forest.",
]


def subset(reg: Registry, pairs: list[str]) -> Registry:
    """The registry restricted to `pairs` and their models."""
    chosen = {p: reg.pair(p) for p in pairs}
    models = {m.name: m for p in chosen.values() for m in reg.pair_models(p)}
    return Registry(models=models, pairs=chosen, defaults=reg.defaults, sources=reg.sources)


def mape(pred: list[float], obs: list[float]) -> float:
    """Median absolute percentage error (the issue's metric)."""
    return statistics.median(abs(p - o) / o for p, o in zip(pred, obs))


def scaled(profile: Profile, factor: float) -> Profile:
    """Every cost x factor: a profile from a faster (factor < 1) or slower setting."""
    models = {
        n: replace(m, prefill_base_s=m.prefill_base_s * factor, prefill_tps=m.prefill_tps / factor,
                   decode_s=m.decode_s * factor, verify_s=tuple(v * factor for v in m.verify_s),
                   draft_token_s=None if m.draft_token_s is None else m.draft_token_s * factor)
        for n, m in profile.models.items()
    }
    return Profile(profile.machine, models, profile.ngram_s * factor)


def measure_error(pool: ModelPool, reg: Registry, profile: Profile, scorer, max_tokens: int) -> list[dict]:
    """Each prompt on each pair, in use order: decide, run, record (online learning on)."""
    rows = []
    for pair in reg.pairs:
        router = Router(reg, strategy=f"static:{pair}", budget_s=1e6, profile=profile, scorer=scorer,
                        store=Store(Path(os.environ["QROUTE_HOME"]) / f"mape-{pair}.db"), pool=pool,
                        console=Console(stderr=True))
        warm = user_messages("Hello!")
        run_prompt(pool, reg.pair(pair), warm, GenerationConfig(max_tokens=8))  # warm-up, not measured
        for i, prompt in enumerate(PROMPTS):
            msgs = user_messages(prompt)
            result = answer(router, pool, msgs, GenerationConfig(max_tokens=max_tokens))
            if result.generation is None:
                raise KeyboardInterrupt  # Ctrl-C before the answer began: the bench stops
            d, gen = result.decision, result.generation
            opts = {c.pair: c for c in d.candidates}
            est = d.estimate(pair)
            s = gen.stats
            rows.append({
                "pair": pair, "i": i, "prompt": prompt,
                "predicted_s": opts[pair].predicted_latency_s, "measured_s": s.latency_s,
                "predicted_tokens": est.tokens, "tokens": s.output_tokens,
                "given_length_s": est.prefill_s + est.draft_prefill_s + s.output_tokens * est.per_token_s,
                "predicted_prefill_s": est.prefill_s, "measured_ttft_s": s.ttft_s,
                "predicted_per_token_s": est.per_token_s,
                # the drafter's prompt pass (predicted) is not part of the per-token cost
                "measured_per_token_s": (s.latency_s - s.ttft_s - est.draft_prefill_s) / max(s.output_tokens - 1, 1),
                "acceptance": s.acceptance, "overhead_ms": d.overhead_ms,
            })
            print(f"  {pair:<26} #{i:<2} predicted {rows[-1]['predicted_s']:.2f}s measured {s.latency_s:.2f}s "
                  f"({s.output_tokens} tok, expected {est.tokens:.0f})", flush=True)
        router.close()
    return rows


def recovery(pool: ModelPool, reg: Registry, profile: Profile, *, wrong: float, budget: float,
             max_tokens: int, runs: int, learn: bool) -> list[dict]:
    """Wrong profile, fixed budget: per prompt, was the budget hit and was the answer capped?"""
    tag = "learn" if learn else "control"
    router = Router(reg, strategy="quality", budget_s=budget, profile=scaled(profile, wrong),
                    scorer=PriorScorer(reg, default_length=max_tokens), pool=pool,
                    store=Store(Path(os.environ["QROUTE_HOME"]) / f"recovery-{tag}.db"),
                    console=Console(stderr=True, quiet=True))
    rows = []
    for i in range(runs):
        msgs = user_messages(LONG_PROMPTS[i % len(LONG_PROMPTS)])
        result = answer(router, pool, msgs, GenerationConfig(max_tokens=max_tokens), learn=learn)
        if result.generation is None:
            raise KeyboardInterrupt
        d, gen = result.decision, result.generation
        chosen = next(c for c in d.candidates if c.pair == d.chosen)
        rows.append({"i": i, "pair": d.chosen, "cap": d.max_tokens, "predicted_s": chosen.predicted_latency_s,
                     "measured_s": gen.stats.latency_s, "tokens": gen.stats.output_tokens,
                     "hit": gen.stats.latency_s <= budget})
        print(f"  [{tag}] #{i:<2} {d.chosen:<22} cap={d.max_tokens} predicted {chosen.predicted_latency_s:.2f}s "
              f"measured {gen.stats.latency_s:.2f}s {'hit' if rows[-1]['hit'] else 'MISS'}", flush=True)
    router.close()
    return rows


def recovered_after(hits: list[bool], target: float = 0.8) -> int | None:
    """N: the fewest leading prompts after which the hit rate of the rest reaches `target`."""
    for n in range(len(hits) - 2):
        if hits[n] and sum(hits[n:]) / len(hits[n:]) >= target:
            return n
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", nargs="+", default=["smollm2-135m", "smollm2-135m+ngram"])
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--quick-calibration", action="store_true", help="QUICK plan (default: FULL)")
    ap.add_argument("--wrong", type=float, default=0.3, help="profile costs x this in the recovery test")
    ap.add_argument("--runs", type=int, default=12, help="prompts in the recovery test")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "latency_error.json")
    args = ap.parse_args()

    out = Console()
    reg = subset(load_registry(None, include_user=False), args.pairs)
    machine = current_machine(args.threads)
    load_before = os.getloadavg()
    with ModelPool(reg, n_threads=args.threads) as pool:
        t0 = time.perf_counter()
        profile = calibrate(pool, list(reg.models), machine, quick=args.quick_calibration)
        cal_s = time.perf_counter() - t0
        print(f"calibrated {', '.join(reg.models)} in {cal_s:.1f}s", flush=True)
        scorer = PriorScorer(reg, default_length=args.max_tokens)
        rows = measure_error(pool, reg, profile, scorer, args.max_tokens)

        # Budget for the recovery test: 60% of what a full-length answer takes right now (the
        # machine is shared, so its speed drifts), so only a capped answer can hit it.
        # Re-measure first: on a shared machine the speed of ten minutes ago is not today's.
        now = calibrate(pool, list(reg.models), machine, quick=True)
        full = [run_prompt(pool, reg.pair(args.pairs[0]), user_messages(p), GenerationConfig(max_tokens=args.max_tokens))
                .stats.latency_s for p in LONG_PROMPTS[:3]]
        budget = 0.6 * statistics.median(full)
        learn = recovery(pool, reg, now, wrong=args.wrong, budget=budget, max_tokens=args.max_tokens,
                         runs=args.runs, learn=True)
        control = recovery(pool, reg, now, wrong=args.wrong, budget=budget, max_tokens=args.max_tokens,
                           runs=max(4, args.runs // 2), learn=False)

    pred = [r["predicted_s"] for r in rows]
    obs = [r["measured_s"] for r in rows]
    half = len(PROMPTS) // 2
    by_pair = {}
    for pair in reg.pairs:
        rs = [r for r in rows if r["pair"] == pair]
        later = [r for r in rs if r["i"] >= half]
        by_pair[pair] = {
            "mape": mape([r["predicted_s"] for r in rs], [r["measured_s"] for r in rs]),
            "mape_second_half": mape([r["predicted_s"] for r in later], [r["measured_s"] for r in later]),
            "mape_given_length": mape([r["given_length_s"] for r in rs], [r["measured_s"] for r in rs]),
            "prefill_mape": mape([r["predicted_prefill_s"] for r in rs], [r["measured_ttft_s"] for r in rs]),
            "per_token_mape": mape([r["predicted_per_token_s"] for r in rs], [r["measured_per_token_s"] for r in rs]),
            "length_mape": mape([r["predicted_tokens"] for r in rs], [max(r["tokens"], 1) for r in rs]),
        }
    overheads = [r["overhead_ms"] for r in rows]
    share = statistics.median(r["overhead_ms"] / 1000 / r["measured_s"] for r in rows)
    hits = [r["hit"] for r in learn]
    command = " ".join(["python -m bench.latency_error", *sys.argv[1:]])
    result = {
        "provenance": provenance.record(command=command, threads=args.threads),
        "machine": machine.key, "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "pairs": args.pairs, "max_tokens": args.max_tokens, "calibration_s": cal_s,
        "calibration": "quick" if args.quick_calibration else "full",
        "mape": mape(pred, obs), "mape_given_length": mape([r["given_length_s"] for r in rows], obs),
        "by_pair": by_pair,
        "overhead_ms_p50": statistics.median(overheads), "overhead_share_p50": share,
        "recovery": {
            "wrong_factor": args.wrong, "budget_s": budget,
            "hit_rate_learning": sum(hits) / len(hits), "recovered_after_n": recovered_after(hits),
            "hit_rate_control": sum(r["hit"] for r in control) / len(control),
            "learning": learn, "control": control,
        },
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))

    table = Table(title=f"Latency model error ({machine.key})", title_justify="left")
    for col in ("pair", "MAPE", "2nd half", "given length", "prefill", "per token", "length"):
        table.add_column(col, justify="left" if col == "pair" else "right")
    for pair, b in by_pair.items():
        table.add_row(pair, *(f"{b[k]:.0%}" for k in ("mape", "mape_second_half", "mape_given_length",
                                                       "prefill_mape", "per_token_mape", "length_mape")))
    out.print(table)
    out.print(f"MAPE all: {result['mape']:.1%} (given true length: {result['mape_given_length']:.1%}); "
              f"routing overhead p50 {result['overhead_ms_p50']:.2f} ms = {share:.3%} of end-to-end latency")
    rec = result["recovery"]
    out.print(f"Recovery (profile x{args.wrong}, budget {budget:.2f}s): hit rate {rec['hit_rate_learning']:.0%} "
              f"with learning, recovered after N = {rec['recovered_after_n']} prompts; "
              f"control without learning {rec['hit_rate_control']:.0%}")
    out.print(f"[dim]load average before/after: {load_before} / {result['load_average_after']}; wrote {args.out}[/]")


if __name__ == "__main__":
    main()
