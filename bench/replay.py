"""Re-evaluate every routing strategy on the committed result matrix, without generating.

The matrix (bench/results/matrix.json) holds every (prompt, pair) answer with its measured
latency and quality, and capped.json beside it (when there) the answers run with a router's
token cap; this replays the strategies over it (static pairs, cost-only, random,
bandit, ensemble, QualityRoute's budget sweep, online learning replayed, oracle) with one
given calibration profile, and prints the headline figures as JSON. A capped route whose
capped answer was never run is simulated (the answer cut, its time scaled) and counted in
each scope's `simulated`. The same matrix and
profile always give the same figures, so a refactor of the routing code can be checked to
change nothing:

    .venv/bin/python -m bench.replay --profile PROFILE.json > before.json
    ... change the code ...
    .venv/bin/python -m bench.replay --profile PROFILE.json > after.json && diff before.json after.json
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console

from qroute_cli.config import load_registry
from qroute_cli.evaluation.provenance import git_state
from qroute_cli.evaluation.bench import BenchConfig, _subset, evaluate, evidence, headline
from qroute_cli.evaluation.bootstrap import shown
from qroute_cli.evaluation.matrix import CAPPED_FILE, CELL_FIELDS, Cell, Matrix
from qroute_cli.evaluation.strategies import fresh_router
from qroute_cli.evaluation.tasks import load
from qroute_cli.routing.latency import Profile
from qroute_cli.routing.predict import OnnxScorer, default_path
from qroute_cli.routing.scoring import PriorScorer

ROOT = Path(__file__).resolve().parent.parent


def load_matrix(path: Path) -> Matrix:
    """The committed rows as a Matrix over the bench items they cover, in bench order, with
    the capped answers of capped.json beside it (when there) for the routes that cap."""
    rows = json.loads(path.read_text(encoding="utf-8"))
    wanted = {(r["task"], r["item"]) for r in rows}
    # The bench's task order, as the rows list them: online learning streams the prompts in a
    # shuffle of this order, so another order learns along another path.
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    items = [it for task in tasks for it in load(task) if (task, it.id) in wanted]
    pairs = sorted({r["pair"] for r in rows})
    m = Matrix(items, pairs)
    for r in rows:
        m.cells[(r["item"], r["pair"])] = Cell(**{k: r[k] for k in CELL_FIELDS})
    capped = path.parent / CAPPED_FILE
    if capped.is_file():
        for r in json.loads(capped.read_text(encoding="utf-8")):
            m.capped[(r["item"], r["pair"], r["max_tokens"])] = Cell(**{k: r[k] for k in CELL_FIELDS})
    return m


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--matrix", type=Path, default=ROOT / "bench" / "results" / "matrix.json")
    ap.add_argument("--profile", type=Path, required=True, help="a calibration profile JSON (qroute calibrate)")
    ap.add_argument("--bootstrap", type=int, default=1000, help="resamples behind each 95%% interval (0: none)")
    ap.add_argument("--out", type=Path, help="also write the JSON, with what made it (commit, date, machine, inputs), here")
    ap.add_argument("--markdown", action="store_true", help="print markdown tables instead of JSON")
    ap.add_argument("--predictor", type=Path, default=None,
                    help="route with this predictor file (.onnx) instead of the packaged one")
    args = ap.parse_args(argv)
    registry = load_registry(None)
    m = load_matrix(args.matrix)
    profile = Profile.from_json(json.loads(args.profile.read_text(encoding="utf-8")))
    cfg = BenchConfig(live=False)
    quiet = Console(file=io.StringIO())  # the router's "nothing fits" warnings are expected in a sweep
    scorer = {} if args.predictor is None else {"scorer": OnnxScorer(args.predictor, registry)}
    with fresh_router(registry, strategy="quality", profile=profile, seed=cfg.seed, console=quiet, **scorer) as router:
        # Ablation, as `qroute bench` runs it: the same router with per-model constant qualities.
        outcomes = evaluate(m, m.items, cfg, registry, router, scorers={"prior": PriorScorer(registry)})
    summary = headline(outcomes, m.items)
    by_task = {}
    for task in sorted({it.task for it in m.items}):
        idx = [i for i, it in enumerate(m.items) if it.task == task]
        by_task[task] = headline([_subset(o, idx) for o in outcomes], [m.items[i] for i in idx])
    report = {"all": summary, "by_task": by_task}
    report.update(evidence(outcomes, m.items, m, registry, args.bootstrap, cfg.seed))
    if args.out is not None:
        # The file says what made it; stdout stays byte-for-byte reproducible (no date).
        saved = dict(report, provenance=provenance(args, argv))
        args.out.write_text(json.dumps(saved, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    if args.markdown:
        sys.stdout.write(markdown(report, provenance(args, argv)))
    elif args.out is None:
        json.dump(report, sys.stdout, indent=1, sort_keys=True)
        sys.stdout.write("\n")
    return 0


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def provenance(args, argv: list[str] | None) -> dict:
    """What made a results file: the code, the inputs (with their hashes), the machine, the command."""
    head, dirty = git_state()
    predictor = args.predictor or default_path()
    return {
        "commit": head,
        "uncommitted_changes": dirty,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.machine(), "cpus": os.cpu_count(),
                    "python": platform.python_version()},
        "command": " ".join(["python -m bench.replay", *(sys.argv[1:] if argv is None else argv)]),
        "matrix": {"file": _relative(args.matrix), "sha256": _sha256(args.matrix)},
        "profile": {"file": str(args.profile), "sha256": _sha256(args.profile)},
        "bootstrap_resamples": args.bootstrap,
        "predictor": {"file": _relative(predictor), "sha256": _sha256(predictor)},
        "threads": 1,  # the predictor scores on one thread (OnnxScorer's default); nothing is generated or timed
    }


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _ci(fig: dict | None, digits: int = 3) -> str:
    """'0.123 [0.045, 0.201]' (with * when the interval excludes no difference)."""
    return shown(fig, f"{{:.{digits}f}}") or "n/a"


def simulated_sentence(report: dict) -> str:
    """How many routed points rest on simulated answers, overall and per task: where the router
    capped an answer (no pair fit the budget) and the matrix lacks that capped run, the measured
    uncapped answer is cut by character share and its latency scaled."""
    sim = report["all"].get("simulated")
    if not sim:
        return ""
    if not sim["answers"]:
        return (f"Every routed answer is a measured run ({sim['answers_routed']} answers over "
                f"{sim['points_routed']} routed points), the capped ones included.")
    per_task = ", ".join(f"{task} {s['simulated']['points']}" for task, s in sorted(report["by_task"].items()))
    return (f"**Simulated, not measured**: {sim['points']} of the {sim['points_routed']} routed points "
            f"({per_task} of the per-task ones) include answers the router capped (no pair fit the budget) "
            f"and the matrix never ran with that cap: {sim['answers']} of {sim['answers_routed']} routed "
            "answers are the measured uncapped answer cut by character share, its latency scaled.")


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


def markdown(report: dict, prov: dict) -> str:
    """The replayed figures as markdown tables, each figure with its 95% interval."""
    scopes = [("all", report["all"])] + sorted(report["by_task"].items())
    iv = report.get("intervals")

    def ivs(scope: str) -> dict:
        if iv is None:
            return {"headline": {}, "ablation": {}}
        return iv["all"] if scope == "all" else iv["by_task"][scope]

    def head(scope: str, summary: dict, name: str, digits: int = 3) -> str:
        got = ivs(scope)["headline"].get(name)
        return _ci(got, digits) if got else ("n/a" if summary.get(name) is None else f"{summary[name]:.{digits}f}")

    out = ["# Routing figures against the static frontier, with 95% intervals\n",
           f"Replayed on the committed result matrix (`{prov['matrix']['file']}`, sha256 "
           f"`{prov['matrix']['sha256'][:16]}`) with the calibration profile `{prov['profile']['file']}` (sha256 "
           f"`{prov['profile']['sha256'][:16]}`) and the predictor `{prov['predictor']['file']}` (sha256 "
           f"`{prov['predictor']['sha256'][:16]}`), commit `{(prov['commit'] or 'unknown')[:12]}`"
           f"{' with uncommitted changes' if prov['uncommitted_changes'] else ''}: `{prov['command']}`.",
           "Nothing was generated: every point is read off the matrix. " + simulated_sentence(report) + "\n"]
    if iv is not None:
        out.append(f"Intervals: {iv['method']}, {iv['resamples']} resamples (seed {iv['seed']}). "
                   "A `*` marks an interval that excludes no difference (1 for a ratio, 0 for a gain or "
                   "a difference): only those differences are real at this sample size. The bandit and "
                   "online learning are resampled with their per-prompt results as they were, not re-learned.\n")
    out.append("## QualityRoute against the Pareto frontier of all static pairs\n")
    out.append("Gain at matched latency: the mean, over 200 latencies spread over the overlap of both curves' "
               "latency ranges, of QualityRoute's best quality at mean latency <= L minus the static "
               "frontier's; relative: divided by the static frontier's mean quality over the same range.\n")
    rows = []
    for scope, s in scopes:
        rng = s.get("matched_latency_range_s")
        rows.append([scope, str(s["n_prompts"]), head(scope, s, "hypervolume_ratio_vs_static_frontier"),
                     head(scope, s, "quality_route_quality_over_range"), head(scope, s, "static_frontier_quality_over_range"),
                     head(scope, s, "quality_gain_vs_static_frontier_abs"), head(scope, s, "quality_gain_vs_static_frontier_rel"),
                     "n/a" if rng is None else f"{rng[0]:.2f}-{rng[1]:.2f}", ", ".join(s["static_frontier_pairs"])])
    out.append(_table(["scope", "prompts", "hypervolume ratio vs static frontier", "QualityRoute quality",
                       "static frontier quality", "gain (abs)", "gain (rel)", "latency range (s)",
                       "static frontier"], rows))
    out.append("## Secondary: the single best static pair, and cost-only routing at matched latency\n")
    rows = []
    for scope, s in scopes:
        bl, bq = s["best_static_point"]
        cost = s.get("cost_point")
        rows.append([scope, f"{s['best_static_pair']} ({bl:.2f} s, {bq:.3f})",
                     head(scope, s, "hypervolume_ratio_vs_best_static"),
                     "n/a" if cost is None else f"{cost[0]:.2f} s, {head(scope, s, 'cost_quality')}",
                     head(scope, s, "quality_at_cost_latency"),
                     head(scope, s, "quality_gain_vs_cost_at_matched_latency_abs"),
                     head(scope, s, "quality_gain_vs_cost_at_matched_latency"),
                     head(scope, s, "apgr"), head(scope, s, "oracle_quality")])
    out.append(_table(["scope", "best static pair (latency, quality)", "hypervolume ratio vs it",
                       "cost-only (latency, quality)", "QualityRoute quality there", "gain (abs)", "gain (rel)",
                       "APGR", "oracle quality"], rows))
    out.append("## Ablations, and their paired difference to the shipped predictor\n")
    rows = []
    for scope, s in scopes:
        for variant in sorted(s["ablation"]):
            a = ivs(scope)["ablation"].get(variant, {"figures": {}, "vs_shipped": {}})
            f, d = a["figures"], a["vs_shipped"]
            rows.append([scope, variant, _ci(f.get("hypervolume_ratio_vs_static_frontier")),
                         _ci(d.get("hypervolume_ratio_vs_static_frontier")),
                         _ci(f.get("quality_gain_vs_static_frontier_abs")), _ci(d.get("quality_gain_vs_static_frontier_abs")),
                         _ci(f.get("apgr")), _ci(d.get("apgr"))])
    out.append(_table(["scope", "variant", "hypervolume ratio vs static frontier", "minus shipped",
                       "gain vs static frontier (abs)", "minus shipped", "APGR", "minus shipped"], rows))
    out.append("## Does the drafter change the answer? (temperature 0, same verifier without a drafter)\n")
    tasks = sorted(report["by_task"])
    rows = []
    for r in report["divergence"]:
        rows.append([r["pair"], r["plain_pair"], f"{r['texts_differ']}/{r['n_prompts']}",
                     *(f"{r['by_task'][t]['texts_differ']}/{r['by_task'][t]['n_prompts']}" for t in tasks),
                     f"{r['quality']:.3f}", f"{r['plain_quality']:.3f}", _ci(r["quality_difference"]),
                     *(_ci(r["by_task"][t]["quality_difference"]) for t in tasks)])
    out.append(_table(["pair", "plain verifier", "texts differ", *(f"differ: {t}" for t in tasks), "quality",
                       "plain quality", "difference", *(f"difference: {t}" for t in tasks)], rows))
    return "\n".join(out)


if __name__ == "__main__":
    raise SystemExit(main())
