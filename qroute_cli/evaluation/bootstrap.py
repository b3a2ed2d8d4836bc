"""95% intervals for every bench figure: a bootstrap over prompts, as lm-evaluation-harness
gives a bootstrap error next to each metric.

A resample draws each task's prompts with replacement, as many as the task has (stratified:
the bench picks the same number of prompts per task, so a resample keeps that mix). Every
strategy's mean quality and latency is recomputed from its per-prompt outcomes with the
drawn prompts' weights, and every headline figure and ablation row from those means
(`bench.Plane.figures`). That is exact for the strategies whose choice for a prompt depends
on that prompt alone (static pairs, cost-only, QualityRoute at each budget, the oracle,
random, the ensemble). The bandit and online learning (replayed and live) choose from what
they saw earlier in the prompt stream; their per-prompt results are resampled as they were,
not re-learned over the resampled stream. The sweep's budgets and the stream order stay
fixed. The interval is the 2.5th to 97.5th percentile of the resampled figure.

A difference is called real when its interval excludes the value of no difference: 0 for a
difference or gain, 1 for a ratio. Ablations are compared with the shipped predictor on the
same resamples (paired), so the prompts' own difficulty cancels out of the difference.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

RESAMPLES = 1000
SEED = 0
LEVEL = 0.95


def resample_counts(groups: Sequence[Sequence[int]], n_items: int, resamples: int = RESAMPLES,
                    seed: int = SEED) -> np.ndarray:
    """[resamples, n_items]: how often each prompt is drawn; each group (a task's prompt
    indices) is resampled with replacement within itself, to its own size."""
    rng = np.random.default_rng(seed)
    counts = np.zeros((resamples, n_items))
    rows = np.arange(resamples)[:, None]
    for group in groups:
        g = np.asarray(group, dtype=int)
        if len(g):
            np.add.at(counts, (rows, g[rng.integers(0, len(g), size=(resamples, len(g)))]), 1.0)
    return counts


def resampled_means(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per resample, the weighted mean of each row of `values` ([rows, n_items]) -> [resamples, rows]."""
    return counts @ values.T / counts.sum(axis=1, keepdims=True)


def interval(samples: Sequence[float | None], estimate: float | None, null: float | None = None,
             digits: int = 4) -> dict:
    """The point estimate and its percentile interval; `undefined` counts resamples where the
    figure could not be computed; with `null` (the no-difference value), whether the
    interval excludes it."""
    vals = np.array([v for v in samples if v is not None], dtype=float)
    out: dict = {"estimate": None if estimate is None else round(estimate, digits)}
    if len(vals):
        tail = (1 - LEVEL) / 2 * 100
        lo, hi = np.percentile(vals, [tail, 100 - tail])
        out.update(low=round(float(lo), digits), high=round(float(hi), digits))
    else:
        out.update(low=None, high=None)
    if len(vals) < len(samples):
        out["undefined"] = len(samples) - len(vals)
    if null is not None and out["low"] is not None:
        out["real"] = bool(out["low"] > null or out["high"] < null)
    return out


def shown(fig: dict | None, fmt: str = "{:.3f}") -> str | None:
    """An `interval` figure as text, '0.123 [0.045, 0.201] *' (* when the interval excludes no
    difference), each number through `fmt`; None when there is no estimate."""
    if not fig or fig.get("estimate") is None:
        return None
    text = fmt.format(fig["estimate"])
    if fig.get("low") is not None:
        text += f" [{fmt.format(fig['low'])}, {fmt.format(fig['high'])}]"
    return text + (" *" if fig.get("real") else "")


def null_of(name: str) -> float | None:
    """The no-difference value of a figure: 1 for a ratio, 0 for a gain; None for a level."""
    if name.startswith("hypervolume_ratio"):
        return 1.0
    if name.startswith("quality_gain"):
        return 0.0
    return None


def figure_intervals(plane, latency: np.ndarray, quality: np.ndarray, point: dict,
                     counts: np.ndarray) -> dict:
    """Intervals for every figure of `plane` (see bench.Plane) on one set of prompts.

    latency, quality: [outcomes, prompts] per-prompt values; point: the figures at the
    observed prompts; counts: the resamples' prompt weights. Ablation rows also get their
    paired difference to the shipped predictor's figure (`vs_shipped`).
    """
    lat_b = resampled_means(latency, counts).tolist()
    q_b = resampled_means(quality, counts).tolist()
    draws = [plane.figures(lat, q) for lat, q in zip(lat_b, q_b)]
    head = {name: interval([d["headline"][name] for d in draws], value, null_of(name))
            for name, value in point["headline"].items()}
    ablation = {}
    for variant, row in point["ablation"].items():
        rows = {name: interval([d["ablation"][variant][name] for d in draws], value, null_of(name))
                for name, value in row.items()}
        diffs = {}
        for name, value in row.items():
            if name.endswith("_over_range"):
                continue
            shipped = point["headline"].get(name)
            samples = [_minus(d["ablation"][variant][name], d["headline"].get(name)) for d in draws]
            diffs[name] = interval(samples, _minus(value, shipped), 0.0)
        ablation[variant] = {"figures": rows, "vs_shipped": diffs}
    return {"headline": head, "ablation": ablation}


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b
