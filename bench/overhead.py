"""Routing overhead: the router's decide() per prompt with the shipped ONNX predictor.

For every prompt of the committed result matrix (the bench prompts), QualityRoute decides at
the middle budget of the bench's sweep (the live loop's budget) with the predictor qroute
ships: features, ONNX inference, the latency model for every pair and the policy. After one
warm-up pass, each prompt is decided `--repeats` times; a prompt's time is the median of its
repeats, and the figures are the p50/p95 over prompts. The predictor's share (features and
ONNX alone) is timed the same way.

The share of end-to-end latency divides a prompt's decide() time by that time plus the
measured latency of the pair it chose, from the matrix (the capped answer where the router
capped one; the matrix's measured answer cut to the cap where it has no capped run, counted).

Not in decide()'s figure above: reading the machine's load to pick the thread count (no
pool here, as in `bench.replay`). That read is timed on its own: a /proc/stat read when the
last one is recent, a short sample when it is stale (the first answer, or after a pause).

    .venv/bin/python -m bench.overhead                 # writes bench/results/overhead.json
    .venv/bin/python -m bench.overhead --limit 2 --repeats 3 --out /tmp/overhead.json
"""

from __future__ import annotations

import argparse
import hashlib
import io
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
os.environ.setdefault("QROUTE_MODELS", str(paths.cache_dir()))  # the real model cache, if any
os.environ["QROUTE_HOME"] = tempfile.mkdtemp(prefix="qroute-bench-")  # never touch the user's store

from rich.console import Console  # noqa: E402

from bench.replay import load_matrix  # noqa: E402
from qroute_cli.config import load_registry  # noqa: E402
from qroute_cli.evaluation import provenance, strategies  # noqa: E402
from qroute_cli.evaluation.bench import default_budgets  # noqa: E402
from qroute_cli.evaluation.tasks import TASKS  # noqa: E402
from qroute_cli.generation.runner import user_messages  # noqa: E402
from qroute_cli.numeric import percentile  # noqa: E402
from qroute_cli.routing.latency import Profile  # noqa: E402
from qroute_cli.routing.scoring import prompt_text  # noqa: E402


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def spread(values: list[float], digits: int = 4) -> dict:
    """p50, p95 (nearest rank), mean and max of `values`."""
    return {"p50": round(percentile(values, 50), digits), "p95": round(percentile(values, 95), digits),
            "mean": round(statistics.fmean(values), digits), "max": round(max(values), digits)}


def _timed(fn, repeats: int) -> tuple[float, object]:
    """The median wall time of `repeats` calls of fn() in ms, and the last call's result."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), out


def load_read_ms(repeats: int) -> dict:
    """What reading the machine's load for the thread count costs: with a recent reading
    (a /proc/stat read) and with none (a sample of threads.CpuLoad's length)."""
    from qroute_cli.generation.threads import CpuLoad

    stale = []
    for _ in range(max(2, repeats // 2)):
        load = CpuLoad()
        t0 = time.perf_counter()
        load.others()  # no earlier reading: it samples
        stale.append((time.perf_counter() - t0) * 1000)
    load, recent = CpuLoad(), []
    load.others()
    for _ in range(repeats):
        time.sleep(load.sample_s * 1.5)  # older than a sample, well within a fresh reading's age
        t0 = time.perf_counter()
        load.others()
        recent.append((time.perf_counter() - t0) * 1000)
    return {"recent_reading_ms": round(statistics.median(recent), 4), "no_recent_reading_ms": round(statistics.median(stale), 2)}


def measure(matrix_path: Path, profile_path: Path, repeats: int, limit: int | None) -> dict:
    from qroute_cli.routing.scoring import default_scorer

    m = load_matrix(matrix_path)
    items = m.items
    if limit:
        items = [it for task in dict.fromkeys(it.task for it in m.items)
                 for it in [x for x in m.items if x.task == task][:limit]]
    registry = load_registry(None)
    registry = replace(registry, pairs={p: registry.pairs[p] for p in m.pairs})  # the matrix's pairs, as the bench
    warnings: list[str] = []
    scorer = default_scorer(registry, warnings.append)
    if type(scorer).__name__ != "OnnxScorer":
        raise SystemExit(f"the shipped ONNX predictor did not load ({'; '.join(warnings) or type(scorer).__name__}): "
                         "this measures routing with it, not with the priors")
    profile = Profile.from_json(json.loads(profile_path.read_text(encoding="utf-8")))
    budget = default_budgets(m, m.items)[len(default_budgets(m, m.items)) // 2]
    rows = []
    with strategies.fresh_router(registry, strategy="quality", budget_s=budget, scorer=scorer, profile=profile,
                                 seed=0, console=Console(file=io.StringIO())) as router:
        for it in items:  # warm-up: ONNX session, tokenizer and the router's first-use checks
            router.decide(user_messages(it.prompt), max_tokens=TASKS[it.task].max_tokens)
        for it in items:
            msgs = user_messages(it.prompt)
            decide_ms, d = _timed(lambda: router.decide(msgs, max_tokens=TASKS[it.task].max_tokens), repeats)
            predict_ms, _ = _timed(lambda: scorer.predict(prompt_text(msgs)), repeats)
            cell = m.cell(it, d.chosen)
            simulated = False
            if d.max_tokens is not None and d.max_tokens < TASKS[it.task].max_tokens:
                measured = m.capped_cell(it, d.chosen, d.max_tokens)
                simulated = measured is None
                cell = measured or strategies.capped(cell, d.max_tokens, it.task, it.reference)
            fastest = min(m.cell(it, p).latency_s for p in m.pairs)
            rows.append({
                "item": it.id, "task": it.task, "prompt_chars": len(it.prompt), "chosen": d.chosen,
                "capped_at": d.max_tokens, "simulated": simulated,
                "decide_ms": round(decide_ms, 4), "predict_ms": round(predict_ms, 4),
                "latency_s": round(cell.latency_s, 4), "fastest_pair_latency_s": round(fastest, 4),
                "share": decide_ms / 1000 / (decide_ms / 1000 + cell.latency_s),
                "share_if_fastest": decide_ms / 1000 / (decide_ms / 1000 + fastest),
            })

    def figures(rs: list[dict]) -> dict:
        total_ms = sum(r["decide_ms"] for r in rs)
        return {
            "n_prompts": len(rs),
            "decide_ms": spread([r["decide_ms"] for r in rs]),
            "predictor_ms": spread([r["predict_ms"] for r in rs]),
            "latency_model_and_policy_ms": spread([max(r["decide_ms"] - r["predict_ms"], 0.0) for r in rs]),
            "share_of_end_to_end": {**spread([r["share"] for r in rs], 6),
                                    "overall": round(total_ms / 1000 / (total_ms / 1000 + sum(r["latency_s"] for r in rs)), 6)},
            "share_if_fastest_pair": spread([r["share_if_fastest"] for r in rs], 6),
            "simulated_answers": sum(r["simulated"] for r in rs),
        }

    out = {"all": figures(rows),
           "by_task": {t: figures([r for r in rows if r["task"] == t]) for t in dict.fromkeys(r["task"] for r in rows)}}
    out.update({
        "budget_s": budget, "repeats": repeats, "pairs": m.pairs,
        "scorer": {"name": scorer.name, "file": _relative(scorer.path), "sha256": _sha256(scorer.path)},
        "load_read": load_read_ms(repeats),
        "rows": [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.items()} for r in rows],
    })
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--matrix", type=Path, default=ROOT / "bench" / "results" / "matrix.json")
    ap.add_argument("--profile", type=Path, default=ROOT / "bench" / "results" / "replay_profile.json",
                    help="the calibration profile the latency model predicts from")
    ap.add_argument("--repeats", type=int, default=20, help="timed decisions per prompt (the median is kept)")
    ap.add_argument("--limit", type=int, help="prompts per task (default: every prompt of the matrix)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "overhead.json")
    args = ap.parse_args(argv)
    load_before = os.getloadavg()
    result = measure(args.matrix, args.profile, max(1, args.repeats), args.limit)
    command = " ".join(["python -m bench.overhead", *(sys.argv[1:] if argv is None else argv)])
    result["provenance"] = {
        # No model runs here: the only threads are onnxruntime's for the predictor (qroute's setting).
        **provenance.record(command=command, threads="no llama.cpp threads (no model runs)"),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "matrix": {"file": _relative(args.matrix), "sha256": _sha256(args.matrix)},
        "profile": {"file": _relative(args.profile), "sha256": _sha256(args.profile)},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    a = result["all"]
    print(f"decide() p50 {a['decide_ms']['p50']:.3f} ms, p95 {a['decide_ms']['p95']:.3f} ms over {a['n_prompts']} "
          f"prompts; share of end-to-end p50 {a['share_of_end_to_end']['p50']:.3%}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
