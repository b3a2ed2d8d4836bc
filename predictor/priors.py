"""Each drafting pair's mean acceptance per task type, from the predictor's training data.

    python -m predictor.priors          # writes qroute_cli/data/predictor/acceptance.json

`python -m predictor.train` writes the same file when it ships a predictor, so the two always
come from the same rows. A forced drafting pair (`qroute run --pair P+ngram`) drafts by this
table, moved towards what its own logged runs taught, instead of loading the trained predictor
for one prompt: per prompt the predictor tells acceptance no better than the mean per task
type does (predictor/REPORT.md, "Held-out acceptance": task-mean MAE within 0.006 of the
shipped architecture's on every pair), and loading it costs a one-shot run about 0.1 s.

A task type with fewer than MIN_PROMPTS measured prompts for a pair gets no entry: the router
then uses the pair's mean over all its prompts ("*").
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from predictor import datagen
from qroute_cli.evaluation import provenance
from qroute_cli.routing.features import PREDICTOR_DIR
from qroute_cli.routing.predict import DATASET_TASKS

OUT = PREDICTOR_DIR / "acceptance.json"
MIN_PROMPTS = 20


def acceptance_table(rows: list[dict], keys: set[str] | None = None) -> dict:
    """{pair: {task type: mean acceptance, "*": mean over every prompt}} and the prompt counts,
    from the bench-phrased rows (those the acceptance heads are trained on); with `keys`, only
    the prompts ("dataset:id") they name."""
    by: dict[str, dict[str, list[float]]] = {}
    for r in rows:
        if r.get("phrasing", "bench") != "bench":
            continue
        if keys is not None and f"{r['dataset']}:{r['id']}" not in keys:
            continue
        task = DATASET_TASKS.get(r["dataset"], r["dataset"])
        for pair, rate in (r.get("acceptance") or {}).items():
            if rate is not None:
                by.setdefault(pair, {}).setdefault(task, []).append(float(rate))
    means: dict[str, dict[str, float]] = {}
    counts: dict[str, dict[str, int]] = {}
    for pair, tasks in sorted(by.items()):
        every = [v for vals in tasks.values() for v in vals]
        means[pair] = {"*": round(statistics.fmean(every), 4)}
        counts[pair] = {"*": len(every)}
        for task, vals in sorted(tasks.items()):
            counts[pair][task] = len(vals)
            if len(vals) >= MIN_PROMPTS:
                means[pair][task] = round(statistics.fmean(vals), 4)
    return {"acceptance": means, "prompts": counts}


def write(data: Path, out: Path, command: str, keys: set[str] | None = None) -> dict:
    table = acceptance_table(datagen.read_rows(data), keys)
    doc = {
        "about": "Mean per-token acceptance of each drafting pair per task type (routing.task_type), "
                 "over the predictor's training rows; made by predictor/priors.py.",
        **table,
        "data": str(data.name),
        "provenance": provenance.record(command, threads=None),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")
    tmp.replace(out)
    return doc


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(prog="python -m predictor.priors", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=datagen.DEFAULT_OUT, help="training rows (.jsonl.gz)")
    ap.add_argument("--out", type=Path, default=OUT, help="the packaged table")
    args = ap.parse_args(argv)
    doc = write(args.data, args.out, " ".join(["python", "-m", "predictor.priors", *argv]))
    for pair, tasks in doc["acceptance"].items():
        print(pair, " ".join(f"{t} {v:.2f}" for t, v in tasks.items()))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
