"""Quality-latency plane: Pareto frontier, hypervolume, quality at matched latency, APGR."""

from __future__ import annotations

from typing import Sequence

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
    for i in range(steps):
        lat = l_w + (l_s - l_w) * (i + 0.5) / steps
        q = quality_at(points, lat)
        gain = 0.0 if q is None else (q - q_w) / (q_s - q_w)
        total += min(max(gain, 0.0), 1.0)
    return total / steps
