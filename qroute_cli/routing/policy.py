"""The routing decision as a pure function: options + budget -> RouteDecision with a reason.

No models, no clock, no I/O: every strategy is a function of the per-pair predictions, so it
is tested on plain numbers. `STRATEGIES` maps a name to its function; the bench adds `oracle`.
"""

from __future__ import annotations

import random as _random
from dataclasses import dataclass
from typing import Callable, Sequence

from qroute_cli.errors import UsageError, did_you_mean
from qroute_cli.types import Candidate, Estimate, RouteDecision


@dataclass(frozen=True)
class Option:
    """One candidate pair: predicted quality and predicted cost."""

    pair: str
    quality: float
    estimate: Estimate

    @property
    def latency_s(self) -> float:
        return self.estimate.latency_s


@dataclass(frozen=True)
class Context:
    """What every strategy may look at besides the options."""

    budget_s: float | None
    max_tokens: int
    margin: float = 1.0  # learned slack: a pair fits when latency x margin <= budget
    epsilon: float = 0.02  # qualities this close count as equal: prefer the faster pair
    min_tokens: int = 16  # a capped answer shorter than this is not worth giving
    static_pair: str | None = None
    seed: int | None = None

    def fits(self, o: Option) -> bool:
        return self.budget_s is None or o.latency_s * self.margin <= self.budget_s

    def tokens_in_budget(self, o: Option) -> int:
        return o.estimate.tokens_within((self.budget_s or 0.0) / self.margin)


# A strategy returns (chosen pair, reason, max_tokens cap or None).
Strategy = Callable[[Sequence[Option], Context], tuple[str, str, int | None]]


def _s(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def _best_then_fastest(options: Sequence[Option], eps: float) -> Option:
    best = max(o.quality for o in options)
    return min((o for o in options if o.quality >= best - eps), key=lambda o: o.latency_s)


def _fallback(options: Sequence[Option], ctx: Context, prefer_quality: bool) -> tuple[str, str, int | None]:
    """Nothing fits: cap the answer at what the budget allows, or run the fastest pair."""
    budget = _s(ctx.budget_s or 0.0)
    longest = max(o.estimate.tokens for o in options)
    room = [o for o in options if ctx.tokens_in_budget(o) >= ctx.min_tokens]
    if room:
        pick = _best_then_fastest(room, ctx.epsilon) if prefer_quality else min(room, key=lambda o: o.latency_s)
        cap = min(ctx.tokens_in_budget(pick), ctx.max_tokens)
        why = (f"has the best predicted quality attainable ({pick.quality:.2f})" if prefer_quality
               else "is the fastest pair")
        return pick.pair, (
            f"No pair can finish the expected ~{longest:.0f}-token answer within {budget}; {pick.pair} "
            f"{why}, so the answer is capped at {cap} tokens."
        ), cap
    pick = min(options, key=lambda o: o.latency_s)
    return pick.pair, (
        f"Nothing fits the {budget} budget, not even a {ctx.min_tokens}-token answer; running the "
        f"fastest pair, {pick.pair} (predicted {_s(pick.latency_s)})."
    ), None


def quality(options: Sequence[Option], ctx: Context) -> tuple[str, str, int | None]:
    """Highest predicted quality that fits the budget; among near-equal quality the faster."""
    fitting = [o for o in options if ctx.fits(o)]
    if not fitting:
        return _fallback(options, ctx, prefer_quality=True)
    pick = _best_then_fastest(fitting, ctx.epsilon)
    top = max(fitting, key=lambda o: (o.quality, -o.latency_s))
    budget = f"the {_s(ctx.budget_s)} budget" if ctx.budget_s is not None else "no budget"
    better = [o for o in options if not ctx.fits(o) and o.quality > pick.quality + ctx.epsilon]
    if top.pair != pick.pair and top.quality > pick.quality:
        why = (f"{pick.pair} is within {ctx.epsilon:g} of the best predicted quality that fits "
               f"({top.pair}, {top.quality:.2f}) and faster ({_s(pick.latency_s)} vs {_s(top.latency_s)})")
    else:
        why = f"{pick.pair} has the highest predicted quality ({pick.quality:.2f}) that fits {budget}"
        if ctx.budget_s is not None:
            why += f" (predicted {_s(pick.latency_s)})"
    if better:
        b = max(better, key=lambda o: o.quality)
        why += f"; {b.pair} would score {b.quality:.2f} but needs {_s(b.latency_s)}"
    return pick.pair, why + ".", None


def cost(options: Sequence[Option], ctx: Context) -> tuple[str, str, int | None]:
    """The fastest pair, whatever its quality: the cost-only baseline."""
    if ctx.budget_s is not None and not any(ctx.fits(o) for o in options):
        return _fallback(options, ctx, prefer_quality=False)
    pick = min(options, key=lambda o: o.latency_s)
    return pick.pair, f"{pick.pair} is the fastest pair (predicted {_s(pick.latency_s)}).", None


def static(options: Sequence[Option], ctx: Context) -> tuple[str, str, int | None]:
    """Always the same pair."""
    assert ctx.static_pair is not None
    return ctx.static_pair, f"The static strategy always runs {ctx.static_pair}.", None


def random(options: Sequence[Option], ctx: Context) -> tuple[str, str, int | None]:
    """A uniformly random pair: the baseline any router must beat."""
    pick = _random.Random(ctx.seed).choice(list(options))
    return pick.pair, f"The random strategy drew {pick.pair}.", None


STRATEGIES: dict[str, Strategy] = {"quality": quality, "cost": cost, "random": random}


def parse_strategy(text: str, pairs: Sequence[str]) -> tuple[str, str | None]:
    """'quality' | 'cost' | 'random' | 'static:PAIR' -> (name, static pair)."""
    name, _, arg = text.strip().partition(":")
    if name == "static":
        if not arg:
            raise UsageError("The static strategy needs a pair: --strategy static:PAIR.",
                             "Valid pairs: " + ", ".join(pairs))
        if arg not in pairs:
            raise UsageError(f"Unknown pair '{arg}' in --strategy static:{arg}.", did_you_mean(arg, list(pairs)))
        return "static", arg
    if name not in STRATEGIES or arg:
        options = sorted(STRATEGIES) + ["static:PAIR"]
        raise UsageError(f"Unknown strategy '{text}'.", did_you_mean(name, options) or "Valid: " + ", ".join(options))
    return name, None


def decide(strategy: str, options: Sequence[Option], ctx: Context, *, forced: str | None = None) -> RouteDecision:
    """Apply one strategy (a name from parse_strategy; static reads ctx.static_pair) or a forced pair."""
    if not options and forced is None and strategy != "static":
        raise UsageError("No pair can run: none of their models is installed.",
                         "Fetch one with: qroute models pull smollm2-135m")
    if forced is not None:
        chosen, reason, cap, label = forced, f"--pair {forced} was given.", None, "forced"
    elif strategy == "static":
        chosen, reason, cap = static(options, ctx)
        label = f"static:{ctx.static_pair}"
    else:
        if strategy not in STRATEGIES:
            raise UsageError(f"Unknown strategy '{strategy}'.", did_you_mean(strategy, sorted(STRATEGIES)))
        chosen, reason, cap = STRATEGIES[strategy](options, ctx)
        label = strategy
    candidates = tuple(Candidate(o.pair, o.quality, o.latency_s, ctx.fits(o)) for o in options)
    return RouteDecision(
        strategy=label, chosen=chosen, reason=reason, budget_s=ctx.budget_s,
        candidates=candidates, max_tokens=cap,
    )
