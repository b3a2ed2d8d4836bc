"""Forced pairs through `qroute run`, side by side: does speculation ever run slower than plain?

What a user sees when they force a pair, on a short answer, prose, code and an edit (PROMPTS):
for each prompt, `qroute run --json --pair P` for the plain verifier and each of its
speculative pairs, alternating, N rounds, each a fresh process (start-up, load, prefill, the answer), in the user's own data dir, so the runs draft by this
machine's calibration profile as routed runs would (calibrate first: `qroute calibrate`).
It reports per pair the median decode speed (tokens after the first / time after the first),
the median end-to-end latency, the ratio of each to plain's (per round, the median with a
bootstrap 95% interval over rounds and the range), the acceptance, and whether the text equals
plain's. Each round also runs plain a second time ("plain again"): its ratio to the first plain
run is the measurement's own noise, the yardstick for telling a slower pair from a noisy run.

    .venv/bin/python -m bench.cli_speed                      # Qwen 1.5B: plain, n-gram, 0.5B draft
    .venv/bin/python -m bench.cli_speed --verifier smollm2-135m --pairs smollm2-135m+ngram --rounds 1 -n 8

Writes bench/results/cli_speed.json with the commit, date, machine, threads and command.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from qroute_cli.evaluation import provenance

ROOT = Path(__file__).resolve().parent.parent

PROMPTS = {
    "capital": "What is the capital of Australia? Answer in one sentence.",  # a short answer
    "lighthouse": "Write a short story, about 150 words, about a lighthouse keeper who finds a message in a bottle.",
    "palindrome": "Write a Python function `is_palindrome(s)` that ignores case, spaces and punctuation. "
                  "Include a docstring and three doctest examples.",
    "type-hints": (
        "Add type hints to this code and keep everything else exactly the same:\n\n"
        "def merge(a, b):\n"
        "    out = []\n"
        "    i = j = 0\n"
        "    while i < len(a) and j < len(b):\n"
        "        if a[i] <= b[j]:\n"
        "            out.append(a[i])\n"
        "            i += 1\n"
        "        else:\n"
        "            out.append(b[j])\n"
        "            j += 1\n"
        "    out.extend(a[i:])\n"
        "    out.extend(b[j:])\n"
        "    return out\n"
    ),
}


def qroute_cmd() -> list[str]:
    exe = shutil.which("qroute", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "qroute_cli"]


def run_once(pair: str, prompt: str, max_tokens: int, threads: int | None, gpu_layers: int = 0) -> dict:
    cmd = qroute_cmd() + ["run", "--json", "--pair", pair, "-n", str(max_tokens), prompt]
    if threads:
        cmd += ["--threads", str(threads)]
    if gpu_layers:
        cmd += ["--gpu-layers", str(gpu_layers)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"qroute run --pair {pair} failed ({done.returncode}): {done.stderr.strip()[-400:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def decode_tps(row: dict) -> float:
    """Tokens after the first over the time after the first: the decode loop's own speed."""
    return (row["tokens"] - 1) / max(row["latency_s"] - row["ttft_s"], 1e-9)


AGAIN = "plain again"  # the verifier's plain pair run a second time each round: the noise floor


def median_interval(ratios: list[float], resamples: int = 2000) -> tuple[float, float]:
    """95% bootstrap interval of the median of per-round ratios (rounds resampled)."""
    rng = random.Random(0)
    meds = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(resamples))
    return meds[int(0.025 * resamples)], meds[int(0.975 * resamples) - 1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--verifier", default="qwen2.5-coder-1.5b")
    ap.add_argument("--pairs", default="qwen2.5-coder-1.5b+ngram,qwen2.5-coder-1.5b+0.5b",
                    help="the speculative pairs of VERIFIER to compare with its plain pair")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("-n", "--max-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=None, help="--threads for qroute run (default: its own)")
    ap.add_argument("--gpu-layers", type=int, default=0,
                    help="--gpu-layers for qroute run, every pair alike (a GPU build; -1: all layers)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cli_speed.json")
    args = ap.parse_args(argv)

    pairs = [args.verifier] + [p.strip() for p in args.pairs.split(",") if p.strip()] + [AGAIN]
    runs: dict[str, dict[str, list[dict]]] = {p: {q: [] for q in pairs} for p in PROMPTS}
    for rnd in range(args.rounds):
        for name, prompt in PROMPTS.items():
            order = pairs if rnd % 2 == 0 else pairs[::-1]  # alternate, so drift hits every pair alike
            for pair in order:
                row = run_once(args.verifier if pair == AGAIN else pair, prompt, args.max_tokens, args.threads,
                               args.gpu_layers)
                runs[name][pair].append(row)
                print(f"round {rnd + 1} {name:10s} {pair:28s} {row['tokens']:4d} tok  "
                      f"{decode_tps(row):6.1f} tok/s  {row['latency_s']:6.2f} s", file=sys.stderr, flush=True)

    rows = []
    for name, by_pair in runs.items():
        plain = by_pair[args.verifier]
        for pair, rs in by_pair.items():
            ratios = [decode_tps(r) / decode_tps(p) for r, p in zip(rs, plain)]
            lo, hi = median_interval(ratios)
            rows.append({
                "prompt": name, "pair": pair,
                "decode_tokens_per_s": round(statistics.median(decode_tps(r) for r in rs), 2),
                "latency_s": round(statistics.median(r["latency_s"] for r in rs), 3),
                "x_plain_decode": round(statistics.median(ratios), 3),
                "x_plain_decode_range": [round(min(ratios), 3), round(max(ratios), 3)],
                "x_plain_decode_95": [round(lo, 3), round(hi, 3)],
                "x_plain_latency": round(statistics.median(p["latency_s"] / r["latency_s"] for r, p in zip(rs, plain)), 3),
                "acceptance": None if rs[0]["acceptance"] is None else round(statistics.median(
                    r["acceptance"] for r in rs if r["acceptance"] is not None), 3),
                "same_text_as_plain": sum(r["text"] == plain[0]["text"] for r in rs) / len(rs),
                "tokens": statistics.median(r["tokens"] for r in rs),
                "threads": sorted({r["threads"] for r in rs if r.get("threads")}),
                "runs": [{k: r[k] for k in ("tokens", "latency_s", "ttft_s", "drafted", "accepted", "threads")}
                         for r in rs],
            })
    args.out.parent.mkdir(parents=True, exist_ok=True)
    threads = sorted({t for r in rows for t in r["threads"]})
    args.out.write_text(json.dumps({
        "provenance": provenance.record(command=" ".join(["python -m bench.cli_speed", *(argv or sys.argv[1:])]),
                                        threads=threads[0] if len(threads) == 1 else threads),
        "verifier": args.verifier, "max_tokens": args.max_tokens, "rounds": args.rounds,
        "gpu_layers": args.gpu_layers,
        "prompts": PROMPTS, "rows": rows,
    }, indent=1) + "\n")
    for r in rows:
        print(f"{r['prompt']:10s} {r['pair']:28s} {r['decode_tokens_per_s']:6.1f} tok/s  x plain {r['x_plain_decode']:.2f} "
              f"(95% {r['x_plain_decode_95'][0]:.2f}-{r['x_plain_decode_95'][1]:.2f}, "
              f"range {r['x_plain_decode_range'][0]:.2f}-{r['x_plain_decode_range'][1]:.2f})  latency x {r['x_plain_latency']:.2f}  "
              f"acc {r['acceptance']}  same text {r['same_text_as_plain']:.0%}")
    print(f"raw results: {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
