"""How long a draft should be: the one rule the engine drafts by and the latency model predicts with.

A speculative step with a draft of k tokens costs the verifier's batch of k + 1 tokens, k
drafted tokens, the slower plain steps that may follow a batch (settle_s) and, when every
draft token stood, the drafter's catch-up (it has read neither
its own last draft token nor the verifier's bonus token, so its next step starts with a batch
of two). At per-token acceptance a it yields E(k, a) = (1 - a^(k+1)) / (1 - a) tokens. k = 0 is
a plain step: one token for the verifier's batch of one. The best k maximises tokens per second,
E(k, a) / cost(k), over k = 0..k_max.

Batch costs on a CPU are not smooth in k (a batch of 8 can cost more than one of 12), so the
rule reads a measured curve instead of assuming a shape. Everything here is a pure function of
plain numbers: the engine calls it with the acceptance it observes (shrunk to a prior), the
latency model with the acceptance it predicts, so a prediction assumes the drafting the run
does, and a seeded run's schedule depends on counts, never on the clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Acceptance is kept below 1 so that E(k, a) stays finite and a perfect record still leaves
# room for doubt.
_MAX_ACCEPTANCE = 0.999


@dataclass(frozen=True)
class CostCurve:
    """What one step of a pair costs on this machine, in seconds (from the calibration profile)."""

    # [n - 1]: the verifier evaluating n tokens at once, n = 1 (a plain step) .. k_max + 1.
    verify_s: tuple[float, ...]
    # One drafted token (a model drafter's decode and pick; an n-gram lookup).
    draft_s: float = 0.0
    # The drafter's extra cost on the step after a fully accepted draft (0 for free drafters).
    catchup_s: float = 0.0
    # What the plain steps right after a verify batch cost beyond plain steps (a GPU
    # re-capturing its decode graph; ~0 on a CPU): paid once per draft step.
    settle_s: float = 0.0

    @property
    def k_max(self) -> int:
        """The longest draft the curve has a verify cost for."""
        return len(self.verify_s) - 1

    @property
    def plain_s(self) -> float:
        return self.verify_s[0]


def expected_tokens(acceptance: float, k: int) -> float:
    """Tokens one step with a k-token draft yields: the accepted prefix and the verifier's own token."""
    a = min(max(acceptance, 0.0), _MAX_ACCEPTANCE)
    return (1 - a ** (k + 1)) / (1 - a)


def step_seconds(curve: CostCurve, k: int, acceptance: float) -> float:
    """Expected seconds of one step with a k-token draft (k = 0: a plain step)."""
    if k <= 0:
        return curve.plain_s
    a = min(max(acceptance, 0.0), _MAX_ACCEPTANCE)
    return curve.verify_s[k] + k * curve.draft_s + a ** k * curve.catchup_s + curve.settle_s


def seconds_per_token(curve: CostCurve, k: int, acceptance: float, coverage: float = 1.0) -> float:
    """Expected seconds per output token with k-token drafts. `coverage` is the share of steps
    on which the drafter finds a draft at all (an n-gram lookup often finds none): the other
    steps are plain steps that still paid for the look."""
    if k <= 0:
        return curve.plain_s
    c = min(max(coverage, 0.0), 1.0)
    seconds = c * step_seconds(curve, k, acceptance) + (1 - c) * (curve.plain_s + curve.draft_s)
    return seconds / (c * expected_tokens(acceptance, k) + (1 - c))


def best_draft_len(curve: CostCurve, acceptance: float, k_max: int | None = None,
                   coverage: float = 1.0) -> tuple[int, float]:
    """(k, seconds per token) of the fastest draft length in 0..k_max; the shorter one on a tie."""
    top = curve.k_max if k_max is None else max(0, min(k_max, curve.k_max))
    best_k, best = 0, curve.plain_s
    for k in range(1, top + 1):
        t = seconds_per_token(curve, k, acceptance, coverage)
        if t < best:
            best_k, best = k, t
    return best_k, best


def speedup_limit(curve: CostCurve, acceptance: float, k_max: int | None = None) -> float:
    """How much faster than plain decoding the curve allows at this acceptance (>= 1)."""
    return curve.plain_s / best_draft_len(curve, acceptance, k_max)[1]


def optimistic_acceptance(acceptance: float, evidence: float, z: float) -> float:
    """`acceptance` plus z standard deviations of a Beta posterior worth `evidence` draft tokens:
    what a probe bets on. The bet narrows as drafts are checked, so probing stops by itself."""
    a = min(max(acceptance, 0.0), 1.0)
    return min(a + z * math.sqrt(a * (1 - a) / (evidence + 1)), _MAX_ACCEPTANCE)
