"""Budget-hit rate of `qroute run` from a fresh data dir, without and with --hard-budget.

A new user's first prompts: an empty learning store, the built-in models from the shared
model cache, one mixed prompt set (code, maths, questions, writing; bench/data/
budget_prompts.jsonl) piped through `qroute run --json --budget B` as one process per mode.
The first mode calibrates the models on first use (as a new user's first run does); the
second starts from another empty data dir with a copy of that calibration only, so both
modes route with the same profile and neither learns from the other's runs.

Reported per mode: the share of prompts whose generation latency stayed within the budget
(with a Wilson 95% interval), mean and p95 latency, and the latency the route predicted
against the one observed. The machine's background load is whatever it is at the time (the
load average before and after is recorded): the figures are for this machine as it was.

    nice -n 10 .venv/bin/python -m bench.budget_hit                  # 10 s budget, all prompts
    .venv/bin/python -m bench.budget_hit --limit 2 --max-tokens 16   # a quick smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from qroute_cli.jsonl import parse_jsonl, read_jsonl
from qroute_cli.numeric import percentile

ROOT = Path(__file__).resolve().parent.parent

PROMPTS = ROOT / "bench" / "data" / "budget_prompts.jsonl"
OUT = ROOT / "bench" / "results" / "budget_hit.json"
MODES = {"soft": [], "hard": ["--hard-budget"]}


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a rate: sound at small n and at 0 or 100%."""
    if n == 0:
        return (0.0, 1.0)
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def run_mode(mode: str, items: list[dict], args, home: Path, env: dict) -> tuple[list[dict], dict]:
    """Pipe the prompts through one `qroute run --json` process; one row per prompt."""
    cmd = [sys.executable, "-m", "qroute_cli", "run", "--json", "--budget", args.budget] + MODES[mode]
    if args.max_tokens:
        cmd += ["--max-tokens", str(args.max_tokens)]
    stdin = "".join(json.dumps({"prompt": it["prompt"]}) + "\n" for it in items)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, cwd=ROOT,
                          env={**env, "QROUTE_HOME": str(home)})
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"{mode}: qroute run exited {proc.returncode}")
    records = parse_jsonl(proc.stdout)
    rows = []
    for it, rec in zip(items, records):
        route = rec["route"]
        rows.append({
            "task": it["task"], "prompt": it["prompt"], "pair": rec["pair"], "tokens": rec["tokens"],
            "finish_reason": rec["finish_reason"], "threads": rec["threads"],
            "latency_s": rec["latency_s"], "predicted_latency_s": route.get("predicted_latency_s"),
            "capped_at": route["max_tokens"], "conservative": "conservative" in route["reason"],
            "hit": rec["latency_s"] <= route["budget_s"], "reason": route["reason"],
        })
    command = " ".join(["QROUTE_HOME=<fresh dir>", "python -m qroute_cli"] + cmd[3:]) + " < " + \
        str(args.prompts.relative_to(ROOT) if args.prompts.is_relative_to(ROOT) else args.prompts)
    return rows, {"command": command, "wall_s": round(wall, 1), "stderr_tail": proc.stderr[-2000:]}


def summarize(rows: list[dict]) -> dict:
    hits = sum(r["hit"] for r in rows)
    lat = [r["latency_s"] for r in rows]
    pairs = [(r["predicted_latency_s"], r["latency_s"]) for r in rows if r["predicted_latency_s"]]
    low, high = wilson(hits, len(rows))
    out = {
        "prompts": len(rows), "hits": hits, "hit_rate": round(hits / len(rows), 4) if rows else None,
        "hit_rate_wilson95": [round(low, 4), round(high, 4)],
        "mean_latency_s": round(statistics.fmean(lat), 3) if lat else None,
        "p95_latency_s": round(percentile(lat, 95), 3) if lat else None,
        "mean_predicted_s": round(statistics.fmean(p for p, _ in pairs), 3) if pairs else None,
        "median_observed_over_predicted": round(statistics.median(o / p for p, o in pairs), 3) if pairs else None,
        "observed_within_predicted": round(sum(o <= p for p, o in pairs) / len(pairs), 4) if pairs else None,
        "first_prompt": {k: rows[0][k] for k in ("task", "pair", "latency_s", "predicted_latency_s", "hit")} if rows else None,
        "conservative_routes": sum(r["conservative"] for r in rows),
        "finish_reasons": dict(Counter(r["finish_reason"] for r in rows)),
        "pairs": dict(Counter(r["pair"] for r in rows)),
        "threads": dict(Counter(str(r["threads"]) for r in rows)),
        "per_task": {},
    }
    for task in sorted({r["task"] for r in rows}):
        sub = [r for r in rows if r["task"] == task]
        out["per_task"][task] = {
            "prompts": len(sub), "hits": sum(r["hit"] for r in sub),
            "mean_latency_s": round(statistics.fmean(r["latency_s"] for r in sub), 3),
            "mean_predicted_s": round(statistics.fmean(r["predicted_latency_s"] or 0 for r in sub), 3),
            "mean_tokens": round(statistics.fmean(r["tokens"] for r in sub), 1),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    from qroute_cli import paths
    from qroute_cli.evaluation import provenance

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget", default="10s")
    ap.add_argument("--max-tokens", type=int, default=None, help="default: the config's max_tokens (256)")
    ap.add_argument("--prompts", type=Path, default=PROMPTS)
    ap.add_argument("--limit", type=int, default=None, help="only the first N prompts (smoke runs)")
    ap.add_argument("--modes", default="soft,hard")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)

    items = read_jsonl(args.prompts)
    items = items[: args.limit] if args.limit else items
    env = {k: v for k, v in os.environ.items() if k not in ("QROUTE_CONFIG", "QROUTE_LOG_PROMPTS")}
    env["QROUTE_MODELS"] = os.environ.get("QROUTE_MODELS") or str(paths.cache_dir())
    load_before = os.getloadavg()
    command = " ".join(["python -m bench.budget_hit", *(sys.argv[1:] if argv is None else argv)])
    result: dict = {
        # threads: each answer picks its own (the rows, and threads_used below)
        **provenance.record(command=command, threads="per answer, see threads_used"),
        "budget": args.budget, "max_tokens": args.max_tokens,
        "prompt_file": str(args.prompts.relative_to(ROOT)) if args.prompts.is_relative_to(ROOT) else str(args.prompts),
        "load_average_before": [round(x, 2) for x in load_before], "modes": {}, "rows": {},
    }
    first: Path | None = None
    with tempfile.TemporaryDirectory(prefix="qroute-budget-") as tmp:
        for mode in args.modes.split(","):
            home = Path(tmp) / mode
            if first is None:
                home.mkdir()
                first = home
            else:  # the first mode's calibration, an empty learning store
                shutil.copytree(first, home, ignore=shutil.ignore_patterns("runs.db*", "*.corrupt*", "last-error.txt"))
            print(f"{mode}: {len(items)} prompts, budget {args.budget}...", flush=True)
            rows, meta = run_mode(mode, items, args, home, env)
            summary = summarize(rows)
            result["modes"][mode] = {**meta, **summary}
            result["rows"][mode] = rows
            lo, hi = summary["hit_rate_wilson95"]
            print(f"  hit rate {summary['hits']}/{summary['prompts']} ({summary['hit_rate']:.0%}, 95% CI "
                  f"{lo:.0%}-{hi:.0%}) · mean {summary['mean_latency_s']} s · p95 {summary['p95_latency_s']} s · "
                  f"observed/predicted median {summary['median_observed_over_predicted']} · "
                  f"threads {summary['threads']} · {meta['wall_s']} s", flush=True)
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    result["threads_used"] = sorted({r["threads"] for rows in result["rows"].values() for r in rows if r["threads"]})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
