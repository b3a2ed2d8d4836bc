"""qroute's tuning constants, each with the reason for its value.

One home per number: the engine, the latency model, calibration, the CLI options and the
bench read them from here, so a change moves all of them together. This module imports
nothing from qroute, so every layer can use it. The priors of the online estimators
(variances, forgetting) stay with their classes in routing/online.py, where the
filter they belong to is explained.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Drafting:
    """How long drafts get and when a drafter stops."""

    # The longest draft one verify step carries. Calibration times verify batches of
    # 1..max_len draft tokens, so the latency model knows costs only up to here; the engine
    # and --draft-max stop here too, so a prediction never assumes other drafts than the run
    # makes. Longer drafts pay little: at acceptance 0.6 a ninth token adds 0.6^9 (1%) to a
    # step's expected yield.
    max_len: int = 8
    # Draft length before acceptance is known: half the bound, so the length can follow the
    # acceptance up or down within a few steps.
    start_len: int = 4
    # A model drafter stops at a token it gives less than this probability: an unsure
    # guess costs verify time and is likely rejected.
    min_prob: float = 0.4
    # With sampling, the drawn token is often not the drafter's top choice, so it is held to
    # this share of min_prob.
    sampled_min_prob_share: float = 0.5
    # N-gram drafting looks for the last 4, then 3, then 2 tokens earlier in the text: a
    # longer match predicts better and is tried first; a single repeated token predicts
    # little.
    ngram_max: int = 4
    ngram_min: int = 2
    # Acceptance per judged draft token (the accepted ones and the first rejected one) before
    # anything is known. A same-family model drafter agrees often. N-gram drafts, when the
    # lookup finds one, are right 54-80% per token on the training answers
    # (predictor/data, per verifier and task). The latency model predicts with these, and the
    # engine starts from them when no predictor has an estimate for the prompt.
    prior_model: float = 0.6
    prior_ngram: float = 0.65
    # Share of steps on which the n-gram lookup finds a draft at all: 4% (short answers) to
    # 35% (code, maths) on the same answers. The others are plain steps, so the latency model
    # predicts n-gram pairs as that mix rather than as if every step carried a draft.
    ngram_coverage: float = 0.2
    # The engine starts an answer with the prior acceptance worth this many checked draft
    # tokens: two or three steps of the answer's own drafts outweigh it.
    prior_weight: float = 8.0
    # Acceptance comes in runs (an n-gram draft copying a passage is right to the end, then
    # wrong at the edit), so the engine's counts, the prior's included, keep this share of
    # their weight per draft step: about five steps of memory, long drafts through a passage,
    # short ones after it.
    acceptance_memory: float = 0.8
    # When the expected acceptance says drafting loses, a draft is still tried while it would
    # pay at the acceptance one standard deviation above the estimate: a prior that undersells
    # the drafter is corrected, and each miss narrows the bet until probing stops.
    probe_z: float = 1.0
    # What the prior is worth in that bet: a few tokens, not the prior_weight it has in the
    # estimate, so the bet narrows with the answer's own checked drafts. Worth prior_weight,
    # one early miss (one judged token) ended drafting for the rest of an answer whose later
    # lookups were right 90% of the time (bench/engine.py, edit-code, on a CPU where a
    # two-token verify costs 1.7 plain steps).
    probe_prior_weight: float = 2.0
    # Plain steps after a verify batch that can run slower than steady decoding: llama.cpp's
    # CUDA backend captures its decode graph again after a batch of another shape (its source:
    # the first step runs without the graph, the second captures it). Calibration measures what these steps cost
    # beyond plain ones (the profile's settle_s), the draft-length rule adds it to every draft
    # step, and the engine's back-off charges these steps to speculation.
    settle_steps: int = 2


@dataclass(frozen=True)
class BackOff:
    """When the engine stops drafting because drafting does not pay, and for how long."""

    # Plain steps timed before the first draft: the speed speculation is judged against.
    warmup_plain: int = 2
    # Plain tokens to run after speculation first loses; doubles each time it loses again.
    first: int = 16
    # The back-off stops doubling here: above the default answer cap (256 tokens), so a
    # drafter that keeps losing costs one probe per answer, and a long answer retries it.
    cap: int = 512
    # Speculation loses below 97% of plain tokens/s and wins (the back-off resets) above 105%:
    # a band, so timing noise around a tie neither pauses drafting nor resets the back-off.
    lose_ratio: float = 0.97
    win_ratio: float = 1.05
    # The clock-free rule of seeded runs: this many draft steps in a row that keep nothing
    # pause drafting (one miss is common even for a good drafter).
    misses: int = 2
    # Weights of the newest step in the moving averages of tokens/s. Speculative speed gets
    # more: it is judged afresh after each cool-down and must settle within a few steps.
    plain_alpha: float = 0.2
    spec_alpha: float = 0.3


@dataclass(frozen=True)
class Deadline:
    """How --hard-budget decides that the next step would end too late."""

    # The slowest recent step, forgotten by 20% per step: one slow step (a page fault, a
    # busy core) guards the deadline for a few steps, not for the rest of the answer.
    step_decay: float = 0.8


@dataclass(frozen=True)
class Answer:
    """What is assumed about an answer before anything is known of it."""

    # Answer tokens assumed without a trained predictor or logged runs: between a short
    # factual answer and a story, below the default cap of 256 tokens.
    default_length: float = 200.0


@dataclass(frozen=True)
class Routing:
    """How the router learns from the run log and how much slack it leaves on a budget."""

    # Past runs folded in at start-up: far more than the estimates remember (acceptance
    # forgets about 2% per run), few enough to fold in quickly.
    replay_runs: int = 2000
    # A budget is a promise: the margin aims to miss it in at most 1 run in 10.
    target_hit_rate: float = 0.9
    # The margin before there is evidence: a little slack.
    default_margin: float = 1.1
    # Runs needed before the margin is learned (fewer cannot place a 90% quantile at all),
    # and the recent runs it is learned from (old runs were timed under other load).
    margin_min_runs: int = 5
    margin_window: int = 30
    # The margin never exceeds 3x: past that the profile is wrong, which calibration fixes
    # and the online factors learn, not a wider margin.
    margin_max: float = 3.0


@dataclass(frozen=True)
class Sweep:
    """The budgets `qroute bench` sweeps QualityRoute over, and its hypervolume reference."""

    # Points per QualityRoute curve: enough to draw a frontier; each is one pass of the
    # router over the whole matrix.
    budgets: int = 12
    # The sweep starts at the fastest run (never below 50 ms, no budget a user gives) and
    # ends 20% past the slowest, where every pair fits and the curve is flat.
    shortest_s: float = 0.05
    past_slowest: float = 1.2
    # The hypervolume's reference latency: 10% past the slowest strategy's mean, so even the
    # slowest point adds some area.
    reference: float = 1.1


DRAFTING = Drafting()
BACKOFF = BackOff()
DEADLINE = Deadline()
ANSWER = Answer()
ROUTING = Routing()
SWEEP = Sweep()
