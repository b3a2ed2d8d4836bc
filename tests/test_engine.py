"""The draft/verify loop on the deterministic fake backend: exactness, adaptivity, streaming."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from qroute_cli.generation.backends.fake import FakeBackend
from qroute_cli.generation.drafters import ModelDrafter, NgramDrafter, ngram_lookup
from qroute_cli.generation.engine import (DraftController, TextStream, generate, ngram_acceptance, ngram_stats,
                                         verify_draft)
from qroute_cli.tuning import DRAFTING
from qroute_cli.types import GenerationConfig

PROMPT = list(b"<user>tell me a story about the sea\n<assistant>")


def plain(max_tokens=80, **kw):
    return generate(FakeBackend(seed=1), PROMPT, GenerationConfig(max_tokens=max_tokens, **kw))


def test_plain_is_deterministic_and_respects_max_tokens():
    a, b = plain(), plain()
    assert a.tokens == b.tokens
    assert 0 < len(a.tokens) <= 80
    assert a.stats.output_tokens == len(a.tokens)
    assert a.stats.drafted == 0 and a.stats.acceptance is None


@pytest.mark.parametrize("noise", [0.0, 0.8, 3.0])
def test_model_draft_greedy_equals_plain(noise):
    ref = plain(120)
    drafter = ModelDrafter(FakeBackend(seed=1, noise=noise), min_prob=0.0)
    ctl = DraftController(k_max=6, adaptive=False)
    out = generate(FakeBackend(seed=1), PROMPT, GenerationConfig(max_tokens=120, draft_max=6, adaptive=False),
                   drafter, controller=ctl)
    assert out.tokens == ref.tokens
    assert out.stats.drafted > 0
    if noise == 0.0:
        assert out.stats.acceptance == 1.0  # an identical drafter is always right
    else:
        assert out.stats.accepted < out.stats.drafted


def test_ngram_draft_greedy_equals_plain():
    ref = plain(200)
    out = generate(FakeBackend(seed=1), PROMPT, GenerationConfig(max_tokens=200, adaptive=False), NgramDrafter())
    assert out.tokens == ref.tokens
    assert out.stats.drafted > 0  # the fake's order-2 chain repeats, so n-grams match


def test_drafter_kv_cache_is_reused_not_rebuilt():
    draft_backend = FakeBackend(seed=1, noise=0.8)
    drafter = ModelDrafter(draft_backend, min_prob=0.0)
    out = generate(FakeBackend(seed=1), PROMPT, GenerationConfig(max_tokens=100, adaptive=False), drafter)
    # Without reuse every step would re-evaluate the whole history.
    assert draft_backend.evaluated < len(PROMPT) + 3 * len(out.tokens) + out.stats.draft_steps * 8
    assert draft_backend.tokens == (PROMPT + list(out.tokens))[: len(draft_backend.tokens)]


def test_verifier_cache_matches_sequence_after_rejections():
    verifier = FakeBackend(seed=1)
    drafter = ModelDrafter(FakeBackend(seed=1, noise=2.0), min_prob=0.0)
    out = generate(verifier, PROMPT, GenerationConfig(max_tokens=60, adaptive=False), drafter)
    seq = PROMPT + list(out.tokens)
    # The cache holds everything except at most the newest (pending) token, and no rejected draft.
    assert verifier.tokens == seq[: len(verifier.tokens)]
    assert len(verifier.tokens) >= len(seq) - 1


def test_prompt_prefix_is_reused_from_the_cache():
    verifier = FakeBackend(seed=1)
    generate(verifier, PROMPT, GenerationConfig(max_tokens=5))
    second = generate(verifier, PROMPT + list(b"more"), GenerationConfig(max_tokens=5))
    assert second.stats.prompt_cached == len(PROMPT)


def _first_tokens(drafter_factory, n_runs, temperature=1.0):
    counts = Counter()
    for seed in range(n_runs):
        d = drafter_factory(seed) if drafter_factory else None
        out = generate(FakeBackend(seed=3, sharpness=1.0), PROMPT,
                       GenerationConfig(max_tokens=3, temperature=temperature, seed=seed, adaptive=False), d)
        counts[tuple(out.tokens[:3])[1:3]] += 1
    return counts


def test_speculative_sampling_matches_verifier_distribution():
    """Tokens 2-3 come out of the draft/verify path; their joint law must be the verifier's."""
    n = 1500
    ref = _first_tokens(None, n)
    spec = _first_tokens(lambda s: ModelDrafter(FakeBackend(seed=3, sharpness=1.0, noise=1.0), min_prob=0.0,
                                               temperature=1.0, rng=np.random.default_rng(10_000 + s)), n)
    keys = [k for k, v in ref.most_common(8)]
    for k in keys:
        p_ref, p_spec = ref[k] / n, spec[k] / n
        assert abs(p_ref - p_spec) < 4 * np.sqrt(p_ref * (1 - p_ref) / n) + 0.01, (k, p_ref, p_spec)


def test_verify_draft_residual_math_for_point_mass():
    rng = np.random.default_rng(0)
    rows = np.log(np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]], dtype=np.float64))
    outcomes = Counter()
    for _ in range(20000):
        n_ok, nxt = verify_draft(rows, [0], 1.0, rng)
        outcomes[(n_ok, nxt if n_ok == 0 else None)] += 1
    # Token 0 is accepted with p(0) = 0.5; on rejection the next token follows p without 0.
    assert abs(outcomes[(1, None)] / 20000 - 0.5) < 0.02
    assert abs(outcomes[(0, 1)] / 20000 - 0.3) < 0.02
    assert abs(outcomes[(0, 2)] / 20000 - 0.2) < 0.02


def _scan_lookup(history, k, n_max=DRAFTING.ngram_max, n_min=DRAFTING.ngram_min):
    """The n-gram lookup as a scan of the whole history, for reference: the latest earlier
    occurrence of the last n tokens (longest n first) that has a continuation."""
    arr = np.asarray(history, dtype=np.int64)
    size = len(arr)
    for n in range(min(n_max, size - 1), n_min - 1, -1):
        windows = np.lib.stride_tricks.sliding_window_view(arr[: size - 1], n)
        hits = np.nonzero((windows == arr[size - n:]).all(axis=1))[0]
        hits = hits[hits + n < size]
        if len(hits):
            start = int(hits[-1]) + n
            return arr[start: min(start + k, size)].tolist()
    return []


def test_the_ngram_drafter_proposes_what_the_lookup_finds_as_the_history_grows():
    """The drafter's growing index and a scan of the whole history agree at every step:
    small vocabularies (many repeats, ties between starts), long and short drafts, and a new
    history (another answer) indexed afresh."""
    import random

    rng = random.Random(7)
    for _ in range(200):
        vocab = rng.choice([2, 3, 5, 50])
        drafter = NgramDrafter()
        history = [rng.randrange(vocab) for _ in range(rng.randrange(0, 30))]
        for _ in range(rng.randrange(1, 80)):
            k = rng.randrange(1, 9)
            assert drafter.propose(history, k)[0] == _scan_lookup(history, k)
            history.extend(rng.randrange(vocab) for _ in range(rng.randrange(1, 4)))
        other = history[: len(history) // 2]  # another answer's history: not an extension
        assert drafter.propose(other, 8)[0] == _scan_lookup(other, 8)


def test_ngram_lookup_pure():
    assert ngram_lookup([1, 2, 3, 4, 5, 1, 2, 3], 3) == [4, 5, 1]
    assert ngram_lookup([1, 2, 3, 9, 9, 1, 2], 2) == [3, 9]
    assert ngram_lookup([1, 2, 3, 4], 3) == []
    # The latest earlier occurrence wins.
    assert ngram_lookup([7, 8, 1, 7, 8, 2, 7, 8], 1) == [2]


def test_ngram_acceptance_counts_judged_tokens():
    prompt = [1, 2, 3, 4, 5, 6]
    # After "1 2" repeats, the lookup drafts "3 4 5 6 1 2": the answer ends after four of them,
    # all right; the two past the end were never judged.
    assert ngram_acceptance(prompt, [1, 2, 3, 4, 5, 6]) == pytest.approx(1.0)
    assert ngram_acceptance(prompt, [9, 9, 9]) is None  # nothing to draft from
    # "3 4" stand and "5" is rejected: 2 of 3 judged tokens, whatever the draft's length.
    assert ngram_acceptance(prompt, [1, 2, 3, 4, 0, 0]) == pytest.approx(2 / 3)
    acceptance, coverage = ngram_stats(prompt, [1, 2, 3, 4, 0, 0])
    assert acceptance == pytest.approx(2 / 3)
    assert 0 < coverage < 1  # one of the steps carried a draft, the others found none


def test_controller_reads_acceptance_per_judged_token():
    """Long drafts that are right for a few tokens and then wrong are the same drafter as short
    ones that are right: both are judged per token, as E(k, a) assumes."""
    long_, short = DraftController(k_max=8, prior=0.5), DraftController(k_max=8, prior=0.5)
    for _ in range(30):
        long_.record_spec(8, 3, 4, 0.1)  # 3 kept, the 4th rejected: 4 judged
        short.record_spec(4, 3, 4, 0.1)
    assert long_.acceptance() == pytest.approx(short.acceptance())
    assert long_.acceptance() == pytest.approx(0.75, abs=0.02)
    unsure = DraftController(k_max=8, prior=0.5)
    for _ in range(30):
        unsure.record_spec(0, 0, 1, 0.1)  # a model drafter that proposed nothing: one miss
    assert unsure.acceptance() < 0.05


def _settle(ctl, seconds: float = 0.01) -> None:
    """The plain steps after a draft step, which count with it (DRAFTING.settle_steps)."""
    for _ in range(DRAFTING.settle_steps):
        ctl.record_plain(seconds)


def test_the_steps_that_settle_after_a_draft_count_as_its_cost():
    """A GPU runs the plain steps right after a verify batch slower: those steps are part of
    what the draft cost, so they are judged with it and never lower plain's speed."""
    ctl = DraftController(k_max=4)
    for _ in range(3):
        ctl.record_plain(0.01)  # 100 tok/s plain
    ctl.record_spec(4, 4, 5, 0.02)
    assert ctl.memory.spec_n == 0  # not judged yet
    _settle(ctl, 0.05)
    assert ctl.memory.spec_n == 1 and ctl.memory.plain_n == 3 and ctl.memory.plain_tps == pytest.approx(100)
    settled = 5 + DRAFTING.settle_steps
    assert ctl.memory.spec_tps == pytest.approx(settled / (0.02 + 0.05 * DRAFTING.settle_steps))
    ctl.record_plain(0.01)
    assert ctl.memory.plain_n == 4  # the steps after those are plain again


def test_controller_backs_off_when_speculation_is_slower():
    ctl = DraftController(k_max=4)
    for _ in range(3):
        ctl.record_plain(0.01)  # 100 tok/s plain
    assert ctl.next_k() > 0
    ctl.record_spec(4, 0, 1, 0.05)  # 20 tok/s speculative: one losing step is not yet evidence
    _settle(ctl)
    assert ctl.next_k() > 0
    ctl.record_spec(4, 0, 1, 0.05)  # two are, judged with the steps that settle after them
    _settle(ctl)
    assert ctl.next_k() == 0 and ctl.cooldown == 16
    first = ctl.memory.backoff
    for _ in range(ctl.cooldown):
        ctl.record_plain(0.01)
    assert ctl.next_k() > 0  # probes again after the cool-down
    ctl.record_spec(4, 0, 1, 0.05)  # it has lost before: one losing probe pauses drafting again
    _settle(ctl)
    assert ctl.next_k() == 0 and ctl.cooldown == first == 32  # the pause grew: 16, then 32 tokens
    assert ctl.memory.backoff == 2 * first  # and the next one will be longer still


def test_seeded_schedule_backs_off_on_misses_not_on_the_clock():
    ctl = DraftController(k_max=4, follow_speed=False)
    assert ctl.next_k() > 0  # no plain warm-up to time
    ctl.record_spec(4, 0, 1, 10.0)
    assert ctl.next_k() > 0  # one miss is not a pattern
    ctl.record_spec(4, 0, 1, 10.0)
    assert ctl.next_k() == 0 and ctl.cooldown == 16
    for _ in range(16):
        ctl.record_plain(0.001)
    ctl.record_spec(4, 0, 1, 0.0)
    ctl.record_spec(4, 0, 1, 0.0)
    assert ctl.cooldown == 32  # the pause grows
    ctl.cooldown = 0
    for _ in range(5):
        ctl.record_spec(4, 4, 5, 1e6)  # slow by the clock, but every draft token stood
    assert ctl.next_k() == 4 and ctl.cooldown == 0 and ctl.miss_backoff == 16


@pytest.mark.parametrize("drafter", ["ngram", "model"])
@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_a_seeded_run_does_not_depend_on_speed(drafter, temperature):
    """The same seeded generation on a machine where verify batches are cheap and on one where
    they are 100x dearer: the same drafting schedule and the same tokens."""
    def run(token_ms):
        draft = NgramDrafter() if drafter == "ngram" else ModelDrafter(
            FakeBackend(seed=1, noise=1.5), min_prob=0.0, temperature=temperature, rng=np.random.default_rng(4))
        cfg = GenerationConfig(max_tokens=150, temperature=temperature, seed=3, draft_max=4)
        return generate(FakeBackend(seed=1, token_ms=token_ms), PROMPT, cfg, draft)

    cheap, dear = run(0.001), run(100.0)
    assert cheap.tokens == dear.tokens
    assert (cheap.stats.draft_steps, cheap.stats.drafted, cheap.stats.accepted) == \
        (dear.stats.draft_steps, dear.stats.drafted, dear.stats.accepted)
    assert cheap.stats.draft_steps > 0


def test_an_unseeded_run_still_backs_off_when_drafting_is_slower():
    """Without a seed the clock still rules: dear verify batches stop the drafting."""
    def run(token_ms):
        return generate(FakeBackend(seed=1, token_ms=token_ms), PROMPT, GenerationConfig(max_tokens=150, draft_max=4),
                        NgramDrafter())

    assert run(100.0).stats.draft_steps < run(0.001).stats.draft_steps


def test_seeded_runs_repeat_through_the_service(fake_pool):
    """Two seeded runs in one process, where the pool keeps speed memory between them."""
    from qroute_cli.generation.runner import run_prompt, user_messages

    for pair in ("fake-big+ngram", "fake-big+small"):
        cfg = GenerationConfig(max_tokens=120, temperature=0.9, seed=11)
        a, b = (run_prompt(fake_pool, fake_pool.registry.pair(pair), user_messages("tell me a story"), cfg)
                for _ in range(2))
        assert a.tokens == b.tokens, pair
        assert (a.stats.draft_steps, a.stats.drafted) == (b.stats.draft_steps, b.stats.drafted), pair


def test_fake_timings_are_simulated_and_exact():
    out = generate(FakeBackend(seed=1, eos_bias=-30.0, step_ms=2.0, token_ms=0.5), PROMPT, GenerationConfig(max_tokens=10))
    # Prefill: one batch of the prompt; then one single-token step per further token.
    prefill = 0.002 + 0.0005 * len(PROMPT)
    assert out.stats.ttft_s == pytest.approx(prefill, abs=1e-6)
    assert out.stats.latency_s == pytest.approx(prefill + (len(out.tokens) - 1) * 0.0025, abs=1e-5)


def test_controller_keeps_drafting_when_it_pays():
    ctl = DraftController(k_max=6)
    for _ in range(3):
        ctl.record_plain(0.01)
    for _ in range(10):
        ctl.record_spec(4, 4, 5, 0.02)  # 250 tok/s
    assert ctl.next_k() == 6 and ctl.cooldown == 0


def test_text_stream_holds_back_and_cuts_stop_strings():
    pieces = []
    stream = TextStream(FakeBackend(), ["STOP"], pieces.append)
    stopped = False
    for b in b"hello STOP world":
        if stream.push(b):
            stopped = True
            break
    assert stopped
    assert stream.finish() == "hello "
    assert "".join(pieces) == "hello "


def test_text_stream_handles_split_utf8():
    pieces = []
    stream = TextStream(FakeBackend(), [], pieces.append)
    for b in "héllo ✓".encode():
        stream.push(b)
    assert stream.finish() == "héllo ✓"
    assert "".join(pieces) == "héllo ✓"


def test_eos_ends_generation_with_stop():
    out = generate(FakeBackend(seed=1, eos_bias=8.0), PROMPT, GenerationConfig(max_tokens=50))
    assert out.finish_reason == "stop"
    assert len(out.tokens) < 50


def test_the_service_drafts_by_the_cost_curve_it_is_handed(fake_pool):
    """run_prompt passes the curve to the controller: a curve where verify batches are dear keeps
    a seeded run plain (a probe or two at most); a cheap one drafts."""
    from qroute_cli.generation.runner import run_prompt, user_messages
    from qroute_cli.speculation import CostCurve

    pair = fake_pool.registry.pair("fake-big+ngram")
    cfg = GenerationConfig(max_tokens=120, seed=5)
    msgs = user_messages("tell me a story")
    dear = run_prompt(fake_pool, pair, msgs, cfg, costs=CostCurve((0.01,) + (0.05,) * 8), acceptance=0.5)
    cheap = run_prompt(fake_pool, pair, msgs, cfg, costs=CostCurve((0.01,) * 9), acceptance=0.9)
    assert dear.tokens == cheap.tokens
    assert dear.stats.drafted <= 4 < cheap.stats.drafted


def test_one_early_miss_does_not_end_drafting_for_the_answer():
    """Where the prior says drafting does not pay, a probe bets on the acceptance the answer's
    own checked drafts still allow: the first draft missing (one judged token) does not end
    drafting for the answer, on a curve where a two-token verify costs 1.7 plain steps; misses
    that keep coming do."""
    from qroute_cli.speculation import CostCurve, best_draft_len

    curve = CostCurve((0.032, 0.055, 0.073, 0.094, 0.113, 0.133, 0.152, 0.210, 0.223), draft_s=3e-6,
                      settle_s=0.002)  # as calibrated on a 2-core EPYC (bench/engine.py)
    assert best_draft_len(curve, DRAFTING.prior_ngram)[0] == 0
    ctl = DraftController(k_max=8, curve=curve, prior=DRAFTING.prior_ngram, follow_speed=False)
    k = ctl.next_k()
    assert k > 0  # a probe
    ctl.record_spec(k, 0, 1, curve.verify_s[k])
    assert ctl.next_k() > 0  # one judged token rules nothing out
    misses = 1
    while ctl.next_k() > 0 and misses < 10:
        ctl.record_spec(ctl.next_k(), 0, 1, 0.06)
        misses += 1
    assert 2 <= misses <= 4  # the bet narrows with each miss until probing stops
