"""Re-evaluate every routing strategy on the committed result matrix, without generating.

The matrix (bench/results/matrix.json) holds every (prompt, pair) answer with its measured
latency and quality; this replays the strategies over it (static pairs, cost-only, random,
bandit, ensemble, QualityRoute's budget sweep, online learning replayed, oracle) with one
given calibration profile, and prints the headline figures as JSON. The same matrix and
profile always give the same figures, so a refactor of the routing code can be checked to
change nothing:

    .venv/bin/python -m bench.replay --profile PROFILE.json > before.json
    ... change the code ...
    .venv/bin/python -m bench.replay --profile PROFILE.json > after.json && diff before.json after.json
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

from rich.console import Console

from qroute_cli.config import load_registry
from qroute_cli.evaluation.bench import BenchConfig, _subset, evaluate, headline
from qroute_cli.evaluation.matrix import Cell, Matrix
from qroute_cli.evaluation.strategies import fresh_router
from qroute_cli.evaluation.tasks import load
from qroute_cli.routing.latency import Profile

ROOT = Path(__file__).resolve().parent.parent
CELL_FIELDS = ("quality", "scores", "latency_s", "ttft_s", "tokens", "prompt_tokens", "drafted", "accepted", "text")


def load_matrix(path: Path) -> Matrix:
    """The committed rows as a Matrix over the bench items they cover, in bench order."""
    rows = json.loads(path.read_text(encoding="utf-8"))
    wanted = {(r["task"], r["item"]) for r in rows}
    items = [it for task in sorted({t for t, _ in wanted}) for it in load(task) if (task, it.id) in wanted]
    pairs = sorted({r["pair"] for r in rows})
    m = Matrix(items, pairs)
    for r in rows:
        m.cells[(r["item"], r["pair"])] = Cell(**{k: r[k] for k in CELL_FIELDS})
    return m


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--matrix", type=Path, default=ROOT / "bench" / "results" / "matrix.json")
    ap.add_argument("--profile", type=Path, required=True, help="a calibration profile JSON (qroute calibrate)")
    args = ap.parse_args(argv)
    registry = load_registry(None)
    m = load_matrix(args.matrix)
    profile = Profile.from_json(json.loads(args.profile.read_text(encoding="utf-8")))
    cfg = BenchConfig(live=False)
    quiet = Console(file=io.StringIO())  # the router's "nothing fits" warnings are expected in a sweep
    with fresh_router(registry, strategy="quality", profile=profile, seed=cfg.seed, console=quiet) as router:
        outcomes = evaluate(m, m.items, cfg, registry, router)
    summary = headline(outcomes, m.items)
    by_task = {}
    for task in sorted({it.task for it in m.items}):
        idx = [i for i, it in enumerate(m.items) if it.task == task]
        by_task[task] = headline([_subset(o, idx) for o in outcomes], [m.items[i] for i in idx])
    json.dump({"all": summary, "by_task": by_task}, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
