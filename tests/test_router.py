"""The pure routing decision: numbers in, pair and reason out. No models, no clock."""

from __future__ import annotations

import pytest

from qroute_cli.errors import UsageError
from qroute_cli.routing import policy
from qroute_cli.routing.policy import Context, Option, decide, parse_strategy
from qroute_cli.types import Estimate


def opt(pair: str, quality: float, latency: float, tokens: float = 100.0, prefill: float = 0.0) -> Option:
    """An option whose predicted latency is `latency` for `tokens` output tokens."""
    per_token = (latency - prefill) / tokens
    return Option(pair, quality, Estimate(pair, prefill, per_token, tokens))


OPTIONS = [
    opt("big", 0.80, 8.0),
    opt("big+draft", 0.80, 6.0),
    opt("mid", 0.60, 3.0),
    opt("small", 0.30, 1.0),
]


def ctx(budget: float | None, **kw) -> Context:
    return Context(budget_s=budget, max_tokens=kw.pop("max_tokens", 256), **kw)


def test_quality_picks_best_that_fits_and_faster_among_equal():
    d = decide("quality", OPTIONS, ctx(10.0))
    assert d.chosen == "big+draft"  # same quality as "big", faster
    assert all(c.fits for c in d.candidates)
    d = decide("quality", OPTIONS, ctx(5.0))
    assert d.chosen == "mid"
    assert [c.fits for c in d.candidates] == [False, False, True, True]
    assert "big" in d.reason and "needs" in d.reason  # says what it gave up
    assert d.max_tokens is None and d.budget_s == 5.0


def test_near_equal_quality_prefers_faster_within_epsilon():
    options = [opt("a", 0.700, 4.0), opt("b", 0.690, 2.0), opt("c", 0.600, 1.0)]
    assert decide("quality", options, ctx(10.0, epsilon=0.02)).chosen == "b"
    assert decide("quality", options, ctx(10.0, epsilon=0.001)).chosen == "a"
    assert "within" in decide("quality", options, ctx(10.0, epsilon=0.02)).reason


def test_margin_makes_fitting_stricter():
    assert decide("quality", OPTIONS, ctx(6.5, margin=1.0)).chosen == "big+draft"
    assert decide("quality", OPTIONS, ctx(6.5, margin=1.2)).chosen == "mid"  # 6.0 * 1.2 > 6.5


def test_nothing_fits_caps_tokens_for_best_attainable_quality():
    # 0.5 s budget: no pair finishes 100 tokens; "big" makes 0.08 s/token -> 6 tokens (too few),
    # "mid" 0.03 s/token -> 16 tokens, "small" 0.01 s/token -> 50 tokens.
    d = decide("quality", OPTIONS, ctx(0.5, min_tokens=16))
    assert d.chosen == "mid"
    assert d.max_tokens == 16
    assert "capped at 16 tokens" in d.reason
    assert not any(c.fits for c in d.candidates)
    d = decide("quality", OPTIONS, ctx(0.5, min_tokens=20))
    assert d.chosen == "small" and d.max_tokens == 50


def test_nothing_attainable_runs_fastest_with_warning_reason():
    d = decide("quality", OPTIONS, ctx(0.05))
    assert d.chosen == "small" and d.max_tokens is None
    assert d.reason.startswith("Nothing fits")


def test_cap_never_exceeds_user_max_tokens():
    d = decide("quality", OPTIONS, ctx(0.5, max_tokens=20))
    assert d.max_tokens is not None and d.max_tokens <= 20


def test_cost_is_fastest_regardless_of_quality():
    d = decide("cost", OPTIONS, ctx(10.0))
    assert d.chosen == "small" and d.strategy == "cost"
    d = decide("cost", OPTIONS, ctx(0.5))  # nothing fits: fastest, capped
    assert d.chosen == "small" and d.max_tokens == 50


def test_static_and_forced():
    d = decide("static", OPTIONS, ctx(0.1, static_pair="big"))
    assert d.chosen == "big" and d.strategy == "static:big" and d.max_tokens is None
    d = decide("quality", OPTIONS, ctx(10.0), forced="mid")
    assert d.chosen == "mid" and d.strategy == "forced" and len(d.candidates) == 4


def test_random_is_seeded_and_covers_pairs():
    picks = {decide("random", OPTIONS, ctx(5.0, seed=s)).chosen for s in range(40)}
    assert picks == {o.pair for o in OPTIONS}
    assert decide("random", OPTIONS, ctx(5.0, seed=3)).chosen == decide("random", OPTIONS, ctx(5.0, seed=3)).chosen


def test_no_budget_means_everything_fits():
    d = decide("quality", OPTIONS, ctx(None))
    assert d.chosen == "big+draft" and all(c.fits for c in d.candidates)


def test_no_options_is_a_clear_error():
    with pytest.raises(UsageError, match="models pull|installed"):
        decide("quality", [], ctx(1.0))


def test_parse_strategy():
    pairs = ["big", "mid"]
    assert parse_strategy("quality", pairs) == ("quality", None)
    assert parse_strategy("static:mid", pairs) == ("static", "mid")
    with pytest.raises(UsageError) as exc:
        parse_strategy("qualty", pairs)
    assert "quality" in (exc.value.hint or "")
    with pytest.raises(UsageError) as exc:
        parse_strategy("static:bigg", pairs)
    assert "big" in (exc.value.hint or "")
    with pytest.raises(UsageError):
        parse_strategy("static", pairs)


def test_strategies_are_extensible(monkeypatch):
    monkeypatch.setitem(policy.STRATEGIES, "slowest", lambda options, c: (max(options, key=lambda o: o.latency_s).pair, "why", None))
    assert parse_strategy("slowest", ["big"]) == ("slowest", None)
    assert decide("slowest", OPTIONS, ctx(1.0)).chosen == "big"


def test_decision_json_shape():
    out = decide("quality", OPTIONS, ctx(5.0)).to_json()
    assert set(out) >= {"strategy", "budget_s", "chosen", "reason", "candidates"}
    assert set(out["candidates"][0]) == {"pair", "predicted_quality", "predicted_latency_s", "fits"}
    assert out["candidates"][2]["predicted_latency_s"] == pytest.approx(3.0)


@pytest.mark.parametrize("text,seconds", [("5s", 5.0), ("800ms", 0.8), ("2.5", 2.5), (" 3 s ", 3.0), ("1e3ms", 1.0), ("20seconds", 20.0)])
def test_parse_budget(text, seconds):
    from qroute_cli.routing.router import parse_budget

    assert parse_budget(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["0", "0ms", "-1s", "-5", "abc", "5 parsecs", "", "inf", "nan", "5s5"])
def test_parse_budget_rejects(text):
    from qroute_cli.routing.router import parse_budget

    with pytest.raises(UsageError) as exc:
        parse_budget(text)
    assert "budget" in exc.value.message.lower() and exc.value.hint
