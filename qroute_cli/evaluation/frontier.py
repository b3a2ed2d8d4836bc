"""Quality-latency plane: Pareto frontier, hypervolume, quality at matched latency, APGR."""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass
from typing import Sequence

import numpy as np

Point = tuple[float, float]  # (mean latency in s, mean quality)


def pareto(points: Sequence[Point]) -> list[Point]:
    """Non-dominated points (lower latency, higher quality), by latency ascending."""
    best: list[Point] = []
    for lat, q in sorted(points, key=lambda p: (p[0], -p[1])):
        if not best or q > best[-1][1] + 1e-12:
            best.append((lat, q))
    return best


def hypervolume(points: Sequence[Point], ref_latency: float, ref_quality: float = 0.0) -> float:
    """Area dominated by the frontier inside the box [0, ref_latency] x [ref_quality, 1]."""
    area, prev_q = 0.0, ref_quality
    for lat, q in pareto(points):
        if lat >= ref_latency or q <= prev_q:
            continue
        area += (ref_latency - lat) * (q - prev_q)
        prev_q = q
    return area


def quality_at(points: Sequence[Point], latency: float) -> float | None:
    """Best quality reachable at mean latency <= `latency` (a step function; None if none)."""
    fit = [q for lat, q in points if lat <= latency + 1e-12]
    return max(fit) if fit else None


def apgr(points: Sequence[Point], weak: Point, strong: Point, steps: int = 100) -> float | None:
    """Average performance gap recovered (RouteLLM): mean over latencies between the weak
    (fast) and strong (best) pair of (q(latency) - q_weak) / (q_strong - q_weak), clipped."""
    (l_w, q_w), (l_s, q_s) = weak, strong
    if q_s <= q_w or l_s <= l_w:
        return None
    total = 0.0
    steps_of = _Steps(points)  # quality_at, in log time: the bootstrap calls this thousands of times
    for i in range(steps):
        lat = l_w + (l_s - l_w) * (i + 0.5) / steps
        q = steps_of.at(lat)
        gain = 0.0 if q is None else (q - q_w) / (q_s - q_w)
        total += min(max(gain, 0.0), 1.0)
    return total / steps


@dataclass(frozen=True)
class MatchedGain:
    """A curve's quality over a baseline curve's at matched latency, averaged over a latency range."""

    absolute: float  # mean of curve quality - baseline quality over the grid
    relative: float | None  # absolute / baseline_quality; None when the baseline reaches 0 there
    curve_quality: float  # the curve's mean quality over the grid
    baseline_quality: float  # the baseline's mean quality over the grid
    latency_range: tuple[float, float]


def gain_at_matched_latency(curve: Sequence[Point], baseline: Sequence[Point],
                            steps: int = 200) -> MatchedGain | None:
    """How much better `curve` does than `baseline` at the same latency, over their common range.

    Each set of points is read as the step function quality_at(points, L): the best quality
    reachable at mean latency <= L. The grid is `steps` latencies at the midpoints of equal
    slices of [lo, hi], where lo is the larger and hi the smaller of the two sets' fastest and
    slowest points' latencies (the overlap of both ranges; below a set's fastest point it
    reaches nothing, past its slowest it adds nothing). absolute is the mean over the grid of
    quality_at(curve, L) - quality_at(baseline, L); relative divides it by the baseline's mean
    quality over the same grid (a ratio of areas, so a baseline at 0 somewhere is no division
    by zero). None when either set is empty or the ranges do not overlap.
    """
    if not curve or not baseline:
        return None
    lo = max(min(lat for lat, _ in curve), min(lat for lat, _ in baseline))
    hi = min(max(lat for lat, _ in curve), max(lat for lat, _ in baseline))
    if hi < lo:
        return None
    grid = lo + (hi - lo) * (np.arange(steps) + 0.5) / steps
    q_c, q_b = _Steps(curve).mean_over(grid), _Steps(baseline).mean_over(grid)
    return MatchedGain(q_c - q_b, (q_c - q_b) / q_b if q_b > 0 else None, q_c, q_b, (lo, hi))


class _Steps:
    """quality_at as a lookup on the Pareto frontier (the same values, in log time)."""

    def __init__(self, points: Sequence[Point]):
        front = pareto(points)
        self.latencies = [lat for lat, _ in front]
        self.qualities = [q for _, q in front]

    def at(self, latency: float) -> float | None:
        """Best quality at mean latency <= `latency`; None where nothing is reachable."""
        i = bisect_right(self.latencies, latency + 1e-12) - 1
        return self.qualities[i] if i >= 0 else None

    def mean_over(self, grid: np.ndarray) -> float:
        """Mean best quality over a latency grid (which starts past the fastest point)."""
        i = np.searchsorted(self.latencies, grid + 1e-12, side="right") - 1
        return math.fsum(np.asarray(self.qualities)[np.maximum(i, 0)].tolist()) / len(grid)  # exact sum
