"""`qroute bench`: run the result matrix, evaluate every strategy on it, report.

Flow: tasks -> items -> matrix (every prompt x pair, cached) -> strategies (static pairs,
cost, random, bandit sweep, QualityRoute budget sweep, oracle, ensemble) -> frontiers and
headline figures -> tables, JSON/CSV, PNG plots, summary.json.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from qroute_cli.evaluation import bootstrap, frontier, strategies
from qroute_cli.evaluation.divergence import divergence
from qroute_cli.evaluation.matrix import Matrix, QuietWait, cell_counts, run_matrix
from qroute_cli.evaluation.provenance import SOURCE_ROOT, profile_identity
from qroute_cli.evaluation.strategies import Outcome
from qroute_cli.evaluation.tasks import TASKS, Item, load
from qroute_cli.tuning import SWEEP

# The results a checkout commits (`qroute bench --out bench/results`): their cells seed the
# cache where the regime matches, so a bench extends the committed matrix. An installed copy
# has no such folder and seeds nothing.
COMMITTED_RESULTS = SOURCE_ROOT / "bench" / "results"


@dataclass(frozen=True)
class BenchConfig:
    tasks: tuple[str, ...] = tuple(TASKS)
    limit: int = 4  # prompts per task
    pairs: tuple[str, ...] = ()  # empty: every pair whose models are present
    seed: int = 0
    data_dir: Path | None = None
    budgets: tuple[float, ...] = ()  # empty: derived from the measured latencies
    lambdas: tuple[float, ...] = (0.0, 0.01, 0.03, 0.1, 0.3)
    random_seeds: int = 5
    live: bool = True  # also run the online-learning loop for real over the prompt stream
    bootstrap: int = bootstrap.RESAMPLES  # resamples behind every figure's 95% interval; 0: none
    seed_dir: Path | None = COMMITTED_RESULTS  # earlier results whose cells of this regime are reused
    rerun_busy: float | None = None  # cached cells timed while others kept more cores busy run again
    wait_quiet: float | None = None  # before each cell, wait until others keep at most this many cores busy


@dataclass
class BenchResult:
    config: BenchConfig
    items: list[Item]
    matrix: Matrix
    outcomes: list[Outcome] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    by_task: dict = field(default_factory=dict)


def select_items(cfg: BenchConfig) -> list[Item]:
    items: list[Item] = []
    for task in cfg.tasks:
        rows = load(task, cfg.data_dir)
        items.extend(rows[: cfg.limit])
    return items


def default_budgets(m: Matrix, items: Sequence[Item]) -> tuple[float, ...]:
    """A sweep from the fastest pair's typical latency to past the slowest's."""
    lats = sorted(m.cell(it, p).latency_s for it in items for p in m.pairs)
    lo, hi = max(lats[0], SWEEP.shortest_s), lats[-1] * SWEEP.past_slowest
    n = SWEEP.budgets
    return tuple(round(lo * (hi / lo) ** (i / (n - 1)), 3) for i in range(n))


def evaluate(m: Matrix, items: Sequence[Item], cfg: BenchConfig, registry, router=None,
             scorers: dict | None = None, budgets: Sequence[float] = ()) -> list[Outcome]:
    """Every strategy on the same matrix (`budgets`: the QualityRoute sweep; default derived)."""
    out: list[Outcome] = [strategies.static(m, items, p) for p in m.pairs]
    budgets = budgets or cfg.budgets or default_budgets(m, items)
    out += [strategies.oracle(m, items, b) for b in budgets] + [strategies.oracle(m, items, None)]
    rnd = [strategies.random_choice(m, items, cfg.seed + s) for s in range(cfg.random_seeds)]
    out.append(Outcome("random", f"mean of {cfg.random_seeds} seeds", rnd[0].choices,
                       [statistics.mean(q) for q in zip(*(r.quality for r in rnd))],
                       [statistics.mean(lat) for lat in zip(*(r.latency for r in rnd))]))
    out += [strategies.bandit(m, items, lam, seed=cfg.seed) for lam in cfg.lambdas]
    plain = [p for p in m.pairs if registry.pair(p).drafter == "none"]
    if len(plain) > 1:
        out.append(strategies.ensemble(m, items, plain))
    if router is not None:
        out += _routed_sweep(m, items, router, budgets, None)  # first: it loads the profile
        for name, scorer in (scorers or {}).items():
            with strategies.fresh_router(registry, scorer=scorer, profile=router.profile, pool=router.pool,
                                         console=router.console, seed=cfg.seed) as other:
                out += _routed_sweep(m, items, other, budgets, name)
        out += online_learning(m, items, cfg, registry, router, budgets)
    return out


def _routed_sweep(m: Matrix, items: Sequence[Item], router, budgets: Sequence[float],
                  scorer: str | None) -> list[Outcome]:
    """Cost-only routing and QualityRoute at every budget, with this router's scorer (named
    `scorer` for an ablation; None for the router's own)."""
    outs = [strategies.routed(m, items, router, "cost", None, "fastest predicted")]
    outs += [strategies.routed(m, items, router, "quality", b) for b in budgets]
    return [replace(o, scorer=scorer) for o in outs]


def online_learning(m: Matrix, items: Sequence[Item], cfg: BenchConfig, registry, router,
                    budgets: Sequence[float]) -> list[Outcome]:
    """QualityRoute with every chosen run fed back into a fresh learning store, over a
    shuffled prompt stream (as a user would send them), at each budget."""
    order = strategies.stream_order(len(items), cfg.seed)
    stream = [items[i] for i in order]
    results = []
    for b in budgets:
        with strategies.fresh_router(registry, strategy="quality", budget_s=b, scorer=router.scorer,
                                     profile=router.profile, pool=router.pool, console=router.console,
                                     seed=cfg.seed) as learner:
            o = strategies.routed(m, stream, learner, "quality", b, learn=True)
        choices, quality, latency = (strategies.in_item_order(order, v) for v in (o.choices, o.quality, o.latency))
        results.append(Outcome("quality", o.setting, choices, quality, latency, b,
                               {"overhead_ms": strategies.in_item_order(order, o.extra["overhead_ms"]),
                                "simulated": strategies.in_item_order(order, o.extra["simulated"]),
                                "stream_hits": [lat <= b for lat in o.latency]}, online=True))
    return results


def points(outcomes: Sequence[Outcome]) -> list[frontier.Point]:
    return [(o.mean_latency, o.mean_quality) for o in outcomes]


class Plane:
    """Which outcomes make up each curve of the headline (the static pairs, QualityRoute's
    sweep, cost-only, the oracle, every ablation), found once, so every figure can be
    recomputed from new per-outcome means: the bootstrap does it once per resample."""

    def __init__(self, outcomes: Sequence[Outcome]):
        self.statics = [i for i, o in enumerate(outcomes) if o.strategy == "static"]
        self.quality = [i for i, o in enumerate(outcomes) if o.is_plain_quality]
        # The hypervolume reference, as in `headline`: from the matrix alone, never a live run.
        self.reference = [i for i, o in enumerate(outcomes) if o.strategy != "ensemble" and not o.live]
        self.cost = next((i for i, o in enumerate(outcomes) if o.strategy == "cost" and o.scorer is None), None)
        self.oracle = next((i for i, o in enumerate(outcomes) if o.strategy == "oracle" and o.budget_s is None), None)
        labels = sorted({o.label for o in outcomes if o.strategy == "quality" and (o.scorer is not None or o.online)})
        self.variants = {v: [i for i, o in enumerate(outcomes) if o.label == v] for v in labels}

    def figures(self, latency: Sequence[float], quality: Sequence[float]) -> dict:
        """Every headline figure from each outcome's mean latency and quality (same order as
        the outcomes): {"headline": {name: value}, "ablation": {variant: {name: value}}}.
        A figure that cannot be computed (no cost point, a zero baseline) is None."""
        pts = list(zip(latency, quality))
        ref = max(latency[i] for i in self.reference) * SWEEP.reference if self.reference else 1.0
        statics = [pts[i] for i in self.statics]
        hv_best = max(frontier.hypervolume([p], ref) for p in statics)
        hv_front = frontier.hypervolume(statics, ref)
        weak = min(statics, key=lambda p: p[0])
        strong = max(statics, key=lambda p: (p[1], -p[0]))

        def curve(idx: list[int]) -> dict:
            own = [pts[i] for i in idx]
            hv = frontier.hypervolume(own, ref)
            gain = frontier.gain_at_matched_latency(own, statics)
            return {
                "hypervolume_ratio_vs_static_frontier": hv / hv_front if hv_front > 0 else None,
                "quality_gain_vs_static_frontier_abs": None if gain is None else gain.absolute,
                "quality_gain_vs_static_frontier_rel": None if gain is None else gain.relative,
                "quality_route_quality_over_range": None if gain is None else gain.curve_quality,
                "static_frontier_quality_over_range": None if gain is None else gain.baseline_quality,
                "hypervolume_ratio_vs_best_static": hv / hv_best if hv_best > 0 else None,
                "apgr": frontier.apgr(own, weak, strong),
            }

        head = curve(self.quality) if self.quality else {}
        q_cost = gain_abs = gain_rel = None
        if self.cost is not None and self.quality:
            c_lat, c_q = pts[self.cost]
            q_cost = frontier.quality_at([pts[i] for i in self.quality], c_lat)
            if q_cost is not None:
                gain_abs = q_cost - c_q
                gain_rel = gain_abs / c_q if c_q > 0 else None
        head.update({
            "cost_quality": None if self.cost is None else pts[self.cost][1],
            "cost_latency_s": None if self.cost is None else pts[self.cost][0],
            "quality_at_cost_latency": q_cost,
            "quality_gain_vs_cost_at_matched_latency_abs": gain_abs,
            "quality_gain_vs_cost_at_matched_latency": gain_rel,
            "best_static_quality": max(statics, key=lambda p: frontier.hypervolume([p], ref))[1],
            "oracle_quality": None if self.oracle is None else pts[self.oracle][1],
        })
        return {"headline": head, "ablation": {v: curve(idx) for v, idx in self.variants.items()}}


def _round(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(x, digits)


def static_frontier(outcomes: Sequence[Outcome]) -> dict:
    """The Pareto frontier of the static pairs and QualityRoute's sweep, point by point: the
    two curves the headline compares (a plot draws the first as a line)."""
    statics = [o for o in outcomes if o.strategy == "static"]
    front = set(frontier.pareto(points(statics)))
    return {
        "static": [{"pair": o.setting, "latency_s": round(o.mean_latency, 3), "quality": round(o.mean_quality, 4)}
                   for o in sorted(statics, key=lambda o: o.mean_latency)
                   if (o.mean_latency, o.mean_quality) in front],
        "quality_route": [{"budget_s": o.budget_s, "latency_s": round(o.mean_latency, 3),
                           "quality": round(o.mean_quality, 4)}
                          for o in outcomes if o.is_plain_quality],
    }


def headline(outcomes: Sequence[Outcome], items: Sequence[Item]) -> dict:
    """The three headline figures plus context, on one set of outcomes."""
    statics = [o for o in outcomes if o.strategy == "static"]
    qr = points([o for o in outcomes if o.is_plain_quality])
    # The reference comes from the matrix alone: a live run (or --no-live) must not move it.
    all_lat = [o.mean_latency for o in outcomes if o.strategy != "ensemble" and not o.live]
    ref = max(all_lat) * SWEEP.reference if all_lat else 1.0
    best_static = max(statics, key=lambda o: frontier.hypervolume([(o.mean_latency, o.mean_quality)], ref))
    hv_static = frontier.hypervolume([(best_static.mean_latency, best_static.mean_quality)], ref)
    hv_qr = frontier.hypervolume(qr, ref) if qr else None
    cost = next((o for o in outcomes if o.strategy == "cost" and o.scorer is None), None)
    gain = None
    if cost is not None and qr:
        q_match = frontier.quality_at(qr, cost.mean_latency)
        if q_match is not None and cost.mean_quality > 0:
            gain = (q_match - cost.mean_quality) / cost.mean_quality
    weak = min(statics, key=lambda o: o.mean_latency)
    strong = max(statics, key=lambda o: (o.mean_quality, -o.mean_latency))
    ap = frontier.apgr(qr, (weak.mean_latency, weak.mean_quality), (strong.mean_latency, strong.mean_quality)) if qr else None
    oracle_free = next((o for o in outcomes if o.strategy == "oracle" and o.budget_s is None), None)
    ablation = {}
    # Every QualityRoute variant: another scorer, or learning online (replayed and live).
    variants = sorted({o.label for o in outcomes if o.strategy == "quality" and (o.scorer is not None or o.online)})
    for variant in variants:
        pts = points([o for o in outcomes if o.label == variant])
        if pts and hv_static > 0:
            ablation[variant] = {
                "hypervolume_ratio_vs_best_static": round(frontier.hypervolume(pts, ref) / hv_static, 4),
                "apgr": frontier.apgr(pts, (weak.mean_latency, weak.mean_quality),
                                      (strong.mean_latency, strong.mean_quality)),
            }
    # Against the fair baseline: at each budget a user could pick the best static pair for it,
    # so QualityRoute's curve is compared with the frontier of all static pairs.
    fig = Plane(outcomes).figures([o.mean_latency for o in outcomes], [o.mean_quality for o in outcomes])
    for variant, row in ablation.items():
        row["hypervolume_ratio_vs_static_frontier"] = _round(fig["ablation"][variant]["hypervolume_ratio_vs_static_frontier"])
        row["quality_gain_vs_static_frontier_abs"] = _round(fig["ablation"][variant]["quality_gain_vs_static_frontier_abs"])
    head = fig["headline"]
    matched = frontier.gain_at_matched_latency(qr, points(statics)) if qr else None
    return {
        "hypervolume_ratio_vs_static_frontier": _round(head.get("hypervolume_ratio_vs_static_frontier")),
        "quality_gain_vs_static_frontier_abs": _round(head.get("quality_gain_vs_static_frontier_abs")),
        "quality_gain_vs_static_frontier_rel": _round(head.get("quality_gain_vs_static_frontier_rel")),
        "quality_route_quality_over_range": _round(head.get("quality_route_quality_over_range")),
        "static_frontier_quality_over_range": _round(head.get("static_frontier_quality_over_range")),
        "matched_latency_range_s": None if matched is None else [round(x, 3) for x in matched.latency_range],
        "static_frontier_pairs": [p["pair"] for p in static_frontier(outcomes)["static"]],
        "best_static_point": [round(best_static.mean_latency, 3), round(best_static.mean_quality, 4)],
        "quality_at_cost_latency": _round(head["quality_at_cost_latency"]),
        "quality_gain_vs_cost_at_matched_latency_abs": _round(head["quality_gain_vs_cost_at_matched_latency_abs"]),
        "ablation": ablation,
        "n_prompts": len(items),
        "tasks": sorted({it.task for it in items}),
        "hypervolume_ratio_vs_best_static": None if hv_qr is None or hv_static <= 0 else round(hv_qr / hv_static, 4),
        "best_static_pair": best_static.setting,
        "quality_gain_vs_cost_at_matched_latency": None if gain is None else round(gain, 4),
        "cost_point": None if cost is None else [round(cost.mean_latency, 3), round(cost.mean_quality, 4)],
        "apgr": None if ap is None else round(ap, 4),
        "weak_pair": weak.setting,
        "strong_pair": strong.setting,
        "oracle_quality": None if oracle_free is None else round(oracle_free.mean_quality, 4),
        "hypervolume_reference_latency_s": round(ref, 3),
        # Routed answers the matrix lacked with the router's cap, cut and scaled instead of run.
        "simulated": strategies.simulated_counts(outcomes),
    }


def evidence(outcomes: Sequence[Outcome], items: Sequence[Item], m: Matrix, registry,
             resamples: int = bootstrap.RESAMPLES, seed: int = bootstrap.SEED) -> dict:
    """What backs the headline, overall and per task: the two curves it compares
    (`static_frontier`), every figure's bootstrap interval over prompts (`intervals`; see
    bootstrap.py), and how often a drafter changed the verifier's text (`divergence`).
    With resamples=0 the intervals are left out and the differences carry no interval."""
    tasks = sorted({it.task for it in items})
    scopes = {"all": list(range(len(items)))}
    scopes.update({t: [i for i, it in enumerate(items) if it.task == t] for t in tasks})
    counts = None
    if resamples > 0:
        counts = bootstrap.resample_counts([scopes[t] for t in tasks], len(items), resamples, seed)
    plane = Plane(outcomes)
    lat = np.array([o.latency for o in outcomes], dtype=float)
    qual = np.array([o.quality for o in outcomes], dtype=float)
    fronts, intervals = {}, {}
    for scope, idx in scopes.items():
        sub = [_subset(o, idx) for o in outcomes]
        fronts[scope] = static_frontier(sub)
        if counts is not None:
            point = plane.figures([o.mean_latency for o in sub], [o.mean_quality for o in sub])
            intervals[scope] = bootstrap.figure_intervals(plane, lat[:, idx], qual[:, idx], point, counts[:, idx])
    out = {
        "static_frontier": {"all": fronts.pop("all"), "by_task": fronts},
        "divergence": divergence(m, items, registry, counts),
    }
    if counts is not None:
        out["intervals"] = {
            "method": "bootstrap over prompts, resampled within each task; 2.5th-97.5th percentile",
            "resamples": resamples, "seed": seed, "level": bootstrap.LEVEL,
            "all": intervals.pop("all"), "by_task": intervals,
        }
    return out


def run_bench(pool, cfg: BenchConfig, cache_path: Path, router=None, scorers: dict | None = None,
              on_cell: Callable | None = None, items: list[Item] | None = None,
              on_live: Callable | None = None, on_capped: Callable | None = None,
              on_wait: Callable | None = None) -> BenchResult:
    """The matrix, every strategy on it, and (with a router and cfg.live) the live learning loop.
    `on_cell`, `on_capped` and `on_live` are told of each cell, each capped answer the strategies
    need (Matrix.on_capped) and each live run, for progress bars; `on_wait` of each busy reading
    while a cell waits for the machine to quiet down (cfg.wait_quiet)."""
    items = items if items is not None else select_items(cfg)
    pairs = list(cfg.pairs) or list(pool.registry.pairs)
    t0 = time.perf_counter()  # the whole bench: the matrix, every strategy and the live loop
    # A drafting pair's cells draft by the profile's cost curve, as a forced `qroute run --pair` does.
    profile = router.profile_for([pool.registry.pair(p) for p in pairs]) if router is not None else None
    quiet = None if cfg.wait_quiet is None else QuietWait(cfg.wait_quiet, on_wait=on_wait)
    matrix = run_matrix(pool, items, pairs, cache_path, on_cell=on_cell, seed_dir=cfg.seed_dir, profile=profile,
                        rerun_busy=cfg.rerun_busy, quiet=quiet)
    matrix.on_capped = on_capped
    budgets = cfg.budgets or default_budgets(matrix, items)
    outcomes = evaluate(matrix, items, cfg, pool.registry, router, scorers, budgets)
    if router is not None and cfg.live:
        from qroute_cli.evaluation.live import live_online

        # One budget, the middle of the sweep: where the choice matters most.
        outcomes.append(live_online(pool, items, router, budgets[len(budgets) // 2], seed=cfg.seed,
                                    on_run=on_live))
    res = BenchResult(cfg, items, matrix, outcomes)
    res.summary = headline(outcomes, items)
    res.summary["bench_seconds"] = round(time.perf_counter() - t0, 1)
    res.summary["matrix_cells"] = cell_counts(matrix)
    if quiet is not None:  # how long cells were held back for a quiet machine, in all
        res.summary["matrix_cells"]["waited_for_quiet"] = {"below_cores": quiet.below, "seconds": quiet.waited_s}
    if any(it.task == "code" for it in items):  # pass@1 depends on what the sandbox let the code do
        from qroute_cli.evaluation import sandbox

        res.summary.setdefault("provenance", {})["code_sandbox"] = sandbox.isolation().describe()
    if router is not None:  # the routes (and the caps they asked for) follow the profile's latencies
        res.summary.setdefault("provenance", {})["calibration_profile"] = profile_identity(router.profile)
    live = next((o for o in outcomes if o.live), None)
    if live is not None:
        replay = next((o for o in outcomes if o.strategy == "quality" and o.online and not o.live and o.scorer is None
                       and o.budget_s == live.budget_s), None)
        res.summary["live_online"] = {
            "budget_s": live.budget_s, "mean_quality": round(live.mean_quality, 4),
            "mean_latency_s": round(live.mean_latency, 3), "hit_rate": round(live.hit_rate, 4),
            "first_half": live.extra["first_half"], "second_half": live.extra["second_half"],
            "replay_at_same_budget": None if replay is None else {
                "mean_quality": round(replay.mean_quality, 4), "mean_latency_s": round(replay.mean_latency, 3),
                "hit_rate": round(replay.hit_rate, 4)},
        }
    for task in sorted({it.task for it in items}):
        idx = [i for i, it in enumerate(items) if it.task == task]
        sub = [_subset(o, idx) for o in outcomes]
        res.by_task[task] = {"summary": headline(sub, [items[i] for i in idx]), "outcomes": sub}
    res.summary.update(evidence(outcomes, items, matrix, pool.registry, cfg.bootstrap, cfg.seed))
    return res


PER_PROMPT = ("overhead_ms", "why", "simulated")  # extra lists in item order, one value per prompt


def _subset(o: Outcome, idx: list[int]) -> Outcome:
    extra = dict(o.extra)
    for key in PER_PROMPT:
        if isinstance(extra.get(key), list) and len(extra[key]) == len(o.choices):
            extra[key] = [extra[key][i] for i in idx]
    return replace(o, choices=[o.choices[i] for i in idx], quality=[o.quality[i] for i in idx],
                   latency=[o.latency[i] for i in idx], extra=extra)
