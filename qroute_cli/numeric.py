"""Numeric helpers with one definition each: softmax (decoding, calibration), percentile
(bench and report figures) and quantile (the router's latency margin)."""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Probabilities from logits at `temperature`, computed in float64; the temperature is
    floored at 1e-6 (greedy decoding, temperature 0, takes the argmax before it gets here)."""
    z = logits.astype(np.float64) / max(temperature, 1e-6)
    z -= z.max()
    p = np.exp(z)
    return p / p.sum()


def percentile(values: Iterable[float], p: float) -> float:
    """The nearest-rank p-th percentile (0 < p <= 100): the smallest value with at least p% of
    the values at or below it. Always one of the values, never an interpolation, so a p95 of
    latencies is a latency some run had. ValueError when there are none."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    rank = math.ceil(p * len(ordered) / 100)
    return ordered[min(len(ordered) - 1, max(0, rank - 1))]


def quantile(values: Iterable[float], q: float) -> float:
    """The q-quantile (0 <= q <= 1) by linear interpolation between the two nearest ranks,
    numpy's default: the router's margin reads it once per decision, and numpy's first
    quantile call costs a one-shot `qroute run` about 10 ms. ValueError when there are none."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("quantile of no values")
    h = (len(ordered) - 1) * q
    low = math.floor(h)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (h - low) * (ordered[high] - ordered[low])
