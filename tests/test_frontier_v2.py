"""The bench against the static frontier: matched-latency gain and hypervolume on hand-made
points, bootstrap intervals over prompts, paired differences, and drafter divergence counts."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pytest

from qroute_cli.evaluation import bootstrap, frontier
from qroute_cli.evaluation.bench import Plane, headline
from qroute_cli.evaluation.divergence import divergence
from qroute_cli.evaluation.matrix import Cell, Matrix
from qroute_cli.evaluation.strategies import Outcome
from qroute_cli.evaluation.tasks import Item

STATICS = [(1.0, 0.2), (2.0, 0.5), (3.0, 0.4), (4.0, 0.9)]  # (3.0, 0.4) is dominated


def test_curve_equal_to_the_static_frontier_gains_nothing():
    curve = frontier.pareto(STATICS)
    gain = frontier.gain_at_matched_latency(curve, STATICS)
    assert gain.absolute == 0.0 and gain.relative == 0.0
    assert gain.latency_range == (1.0, 4.0)
    assert frontier.hypervolume(curve, 5.0) / frontier.hypervolume(STATICS, 5.0) == 1.0


def test_dominating_curve_gains_and_its_gain_is_the_mean_step_difference():
    curve = [(1.0, 0.3), (2.0, 0.6), (4.0, 0.9)]
    gain = frontier.gain_at_matched_latency(curve, STATICS, steps=300)
    # 0.1 better on [1, 2) and [2, 4), equal at 4: 0.1 on the whole range.
    assert gain.absolute == pytest.approx(0.1)
    # Static frontier over [1, 4]: 0.2 on a third, 0.5 on two thirds.
    assert gain.baseline_quality == pytest.approx((0.2 + 2 * 0.5) / 3)
    assert gain.relative == pytest.approx(0.1 / gain.baseline_quality)
    assert frontier.hypervolume(curve, 5.0) > frontier.hypervolume(STATICS, 5.0)


def test_gain_is_read_only_where_both_curves_reach():
    # A router curve that starts later: the range is the overlap, [2, 4].
    gain = frontier.gain_at_matched_latency([(2.0, 0.5), (6.0, 1.0)], STATICS)
    assert gain.latency_range == (2.0, 4.0)
    assert frontier.gain_at_matched_latency([(5.0, 1.0)], STATICS) is None
    assert frontier.gain_at_matched_latency([], STATICS) is None


def _outcome(strategy: str, setting: str, quality: list[float], latency: list[float], **kw) -> Outcome:
    return Outcome(strategy, setting, ["p"] * len(quality), quality, latency, **kw)


def _outcomes(rng: np.random.Generator, n: int) -> list[Outcome]:
    """Two static pairs, cost-only, an oracle and a QualityRoute sweep on `n` random prompts."""
    fast_q, slow_q = rng.random(n) * 0.4, rng.random(n)
    fast_l, slow_l = 1.0 + rng.random(n), 3.0 + rng.random(n)
    out = [_outcome("static", "fast", fast_q.tolist(), fast_l.tolist()),
           _outcome("static", "slow", slow_q.tolist(), slow_l.tolist()),
           _outcome("cost", "fastest predicted", fast_q.tolist(), fast_l.tolist()),
           _outcome("oracle", "no budget", np.maximum(fast_q, slow_q).tolist(), slow_l.tolist())]
    for share in (0.0, 0.5, 1.0):  # the first `share` of prompts go to the slow pair
        k = int(n * share)
        q = np.concatenate([slow_q[:k], fast_q[k:]]).tolist()
        lat = np.concatenate([slow_l[:k], fast_l[k:]]).tolist()
        out.append(_outcome("quality", f"{share}", q, lat, budget_s=1.0 + 3 * share))
    return out


def test_headline_against_statics_of_a_router_that_only_picks_static_pairs():
    outs = _outcomes(np.random.default_rng(1), 40)
    items = [Item("gsm8k", f"i{i}", "q", "1") for i in range(40)]
    h = headline(outs, items)
    # The sweep's ends are the two static pairs; its middle point lies between them.
    assert h["static_frontier_pairs"][0] == "fast"
    assert h["hypervolume_ratio_vs_static_frontier"] >= 1.0
    assert h["quality_at_cost_latency"] == pytest.approx(h["cost_point"][1], abs=1e-4)
    assert h["quality_gain_vs_cost_at_matched_latency_abs"] == 0.0
    # The figures the bootstrap recomputes agree with the headline's own.
    fig = Plane(outs).figures([o.mean_latency for o in outs], [o.mean_quality for o in outs])["headline"]
    assert round(fig["hypervolume_ratio_vs_best_static"], 4) == h["hypervolume_ratio_vs_best_static"]
    assert round(fig["apgr"], 4) == h["apgr"]


def _mean_interval(values: np.ndarray, resamples: int = 500) -> dict:
    counts = bootstrap.resample_counts([range(len(values))], len(values), resamples, seed=3)
    samples = bootstrap.resampled_means(values[None, :], counts)[:, 0]
    return bootstrap.interval(samples.tolist(), float(values.mean()))


def test_bootstrap_interval_holds_the_estimate_and_shrinks_with_more_prompts():
    rng = np.random.default_rng(0)
    small, large = _mean_interval(rng.random(20)), _mean_interval(rng.random(500))
    for iv in (small, large):
        assert iv["low"] <= iv["estimate"] <= iv["high"]
    assert large["high"] - large["low"] < (small["high"] - small["low"]) / 2


def test_resamples_stay_within_each_task():
    counts = bootstrap.resample_counts([[0, 1, 2], [3, 4]], 5, resamples=50, seed=0)
    assert (counts[:, :3].sum(axis=1) == 3).all() and (counts[:, 3:].sum(axis=1) == 2).all()


def test_interval_marks_a_difference_real_only_when_it_excludes_the_null():
    assert bootstrap.interval([0.1, 0.2, 0.3], 0.2, 0.0)["real"] is True
    assert bootstrap.interval([-0.1, 0.2, 0.3], 0.2, 0.0)["real"] is False
    assert bootstrap.interval([None, 0.2], 0.2)["undefined"] == 1


def test_an_interval_is_shown_with_its_estimate_bounds_and_verdict_in_one_format():
    real = bootstrap.interval([0.1, 0.2, 0.3], 0.2, 0.0)
    assert bootstrap.shown(real, "{:+.2f}") == f"+0.20 [{real['low']:+.2f}, {real['high']:+.2f}] *"
    assert bootstrap.shown(bootstrap.interval([], 1.5), "{:.1f}") == "1.5"  # no resamples: no bounds
    assert bootstrap.shown({"estimate": None}) is None and bootstrap.shown(None) is None


def test_paired_difference_of_identical_strategies_is_exactly_zero():
    rng = np.random.default_rng(2)
    outs = _outcomes(rng, 30)
    # The same sweep again, labelled as an ablation: every resample's difference is 0.
    outs += [replace(o, online=True) for o in outs if o.is_plain_quality]
    plane = Plane(outs)
    point = plane.figures([o.mean_latency for o in outs], [o.mean_quality for o in outs])
    counts = bootstrap.resample_counts([range(30)], 30, resamples=200, seed=0)
    lat = np.array([o.latency for o in outs])
    qual = np.array([o.quality for o in outs])
    iv = bootstrap.figure_intervals(plane, lat, qual, point, counts)
    diffs = iv["ablation"]["quality+online"]["vs_shipped"]
    assert diffs and all(d["estimate"] == d["low"] == d["high"] == 0.0 for d in diffs.values())
    assert not any(d["real"] for d in diffs.values())


@dataclass(frozen=True)
class _Pair:
    verifier: str
    drafter: str


class _Registry:
    pairs = {"big": _Pair("big", "none"), "big+ngram": _Pair("big", "ngram"),
             "small+ngram": _Pair("small", "ngram")}  # no plain "small": not compared

    def pair(self, name: str) -> _Pair:
        return self.pairs[name]


def _cell(text: str, quality: float) -> Cell:
    return Cell(quality=quality, scores={}, latency_s=1.0, ttft_s=0.1, tokens=3, prompt_tokens=5,
                drafted=0, accepted=0, text=text)


def test_divergence_counts_differing_texts_and_the_quality_difference():
    items = [Item("gsm8k", "a", "q", "1"), Item("gsm8k", "b", "q", "2"), Item("nq", "c", "q", ["x"])]
    m = Matrix(items, ["big", "big+ngram", "small+ngram"])
    plain = {"a": ("one", 1.0), "b": ("two", 1.0), "c": ("x", 1.0)}
    drafted = {"a": ("one", 1.0), "b": ("too", 0.0), "c": ("x.", 1.0)}
    for it in items:
        m.cells[(it.id, "big")] = _cell(*plain[it.id])
        m.cells[(it.id, "big+ngram")] = _cell(*drafted[it.id])
        m.cells[(it.id, "small+ngram")] = _cell("s", 0.0)
    counts = bootstrap.resample_counts([[0, 1], [2]], 3, resamples=100, seed=0)
    (row,) = divergence(m, items, _Registry(), counts)
    assert (row["pair"], row["plain_pair"]) == ("big+ngram", "big")
    assert (row["texts_differ"], row["n_prompts"]) == (2, 3)
    assert row["quality_difference"]["estimate"] == pytest.approx(-1 / 3, abs=1e-4)
    assert row["by_task"]["gsm8k"]["texts_differ"] == 1 and row["by_task"]["nq"]["texts_differ"] == 1
    assert row["by_task"]["nq"]["quality_difference"] == {"estimate": 0.0, "low": 0.0, "high": 0.0, "real": False}
    assert divergence(m, items, _Registry())[0]["quality_difference"] == {"estimate": pytest.approx(-1 / 3, abs=1e-4)}


def test_simulated_answers_are_counted_and_the_replay_says_so():
    """A routed answer the matrix lacked with the router's cap is simulated: counted per
    answer and per point (outcome), and the replay's report prints the counts."""
    from bench.replay import simulated_sentence
    from qroute_cli.evaluation.strategies import simulated_counts

    measured = _outcome("quality", "5s", [1.0, 0.0], [1.0, 1.0], extra={"simulated": [False, False]})
    partly = _outcome("quality", "1s", [1.0, 0.0], [1.0, 1.0], extra={"simulated": [True, False]})
    static = _outcome("static", "p", [1.0, 0.0], [1.0, 1.0])  # read off the matrix: never simulated
    counts = simulated_counts([measured, partly, static])
    assert counts == {"answers": 1, "answers_routed": 4, "points": 1, "points_routed": 2}
    report = {"all": {"simulated": counts}, "by_task": {"nq": {"simulated": counts}}}
    said = simulated_sentence(report)
    assert "1 of the 2 routed points" in said and "1 of 4 routed answers" in said and "nq 1" in said
    clean = {"answers": 0, "answers_routed": 4, "points": 0, "points_routed": 2}
    assert "Every routed answer is a measured run" in simulated_sentence({"all": {"simulated": clean}, "by_task": {}})


def test_the_replay_streams_the_prompts_in_the_bench_order(tmp_path):
    """bench.replay reads the matrix in the order the bench ran its tasks, not alphabetically:
    online learning shuffles that order, so another order would learn along another path and
    ask for capped answers the bench never ran."""
    import json

    from bench.replay import load_matrix
    from qroute_cli.evaluation.matrix import CELL_FIELDS
    from qroute_cli.evaluation.tasks import load

    rows = []
    for task in ("wp", "gsm8k"):
        for it in load(task)[:2]:
            cell = {k: 0 for k in CELL_FIELDS} | {"text": "x", "scores": {}, "quality": 0.5, "latency_s": 1.0}
            rows.append({"task": task, "item": it.id, "pair": "p", **cell})
    path = tmp_path / "matrix.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    m = load_matrix(path)
    assert [it.task for it in m.items] == ["wp", "wp", "gsm8k", "gsm8k"]
    assert [it.id for it in m.items] == [r["item"] for r in rows]


def test_a_replay_records_the_predictor_it_routed_with(tmp_path):
    """bench.replay --predictor FILE routes with that file; the results file names it with its
    SHA-256, and without the option names the packaged one."""
    import argparse
    import hashlib

    from bench.replay import provenance
    from qroute_cli.routing.predict import default_path

    matrix, profile, other = tmp_path / "matrix.json", tmp_path / "profile.json", tmp_path / "other.onnx"
    matrix.write_text("[]")
    profile.write_text("{}")
    other.write_bytes(b"not the packaged predictor")
    args = argparse.Namespace(matrix=matrix, profile=profile, bootstrap=0, predictor=other)
    got = provenance(args, ["--predictor", str(other)])["predictor"]
    assert got == {"file": str(other), "sha256": hashlib.sha256(other.read_bytes()).hexdigest()}
    args.predictor = None
    got = provenance(args, [])["predictor"]
    assert got["sha256"] == hashlib.sha256(default_path().read_bytes()).hexdigest()
    assert got["sha256"] != hashlib.sha256(other.read_bytes()).hexdigest()
