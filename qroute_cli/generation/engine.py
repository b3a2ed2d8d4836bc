"""The draft/verify loop: plain decoding and speculative decoding with any Drafter.

Invariant: the verifier's KV cache holds every token of the sequence except the newest
one (`pending`), whose logits are not computed yet. A plain step evaluates `pending`; a
speculative step evaluates `pending` plus the draft in one batch, keeps the longest
accepted prefix and trims the rest.

Greedy (temperature 0) output equals the verifier's own greedy output. With sampling,
drafts are accepted by speculative sampling (accept with min(1, p/q), resample from
max(0, p - q) on rejection), so the output distribution is the verifier's.

Drafting adapts. Given the pair's cost curve (what each verify batch and each drafted token
costs here, from the calibration profile), each step drafts the length that maximises expected
tokens per second at the acceptance seen so far (qroute_cli/speculation.py, the rule the
latency model predicts with); 0 when no length beats a plain step. Without a curve the length
follows recent acceptance. And when speculative steps, everything they cost counted (drafting,
the drafter catching up after a pause, the verify batch), deliver fewer tokens per second than
plain steps, the loop stops drafting for a while (with a growing back-off), so a drafter that
does not pay on this machine costs little.

With a seed the schedule follows the curve and acceptance counts alone (without a curve, a
back-off after drafts that all fail), never the clock: the verify batches, and so llama.cpp's
float sums, are the same on every rerun, and a seeded command on the same machine and thread
count repeats its text exactly.
"""

from __future__ import annotations

import codecs
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from qroute_cli.generation.backends.base import Backend
from qroute_cli.generation.drafters import Drafter
from qroute_cli.numeric import softmax
from qroute_cli.speculation import CostCurve, best_draft_len, optimistic_acceptance
from qroute_cli.tuning import BACKOFF, DEADLINE, DRAFTING
from qroute_cli.types import Generation, GenerationConfig, SpecStats

OnText = Callable[[str], None]


@dataclass
class SpeedMemory:
    """Measured throughput of plain and speculative steps, kept across generations of a pair."""

    plain_tps: float | None = None  # tokens per second of plain steps (EMA)
    spec_tps: float | None = None  # tokens per second of speculative steps, drafting included
    plain_n: int = 0
    spec_n: int = 0
    backoff: int = BACKOFF.first  # plain tokens to run after speculation lost, doubles each time

    def observe_plain(self, tokens: int, seconds: float, alpha: float = BACKOFF.plain_alpha) -> None:
        rate = tokens / max(seconds, 1e-9)
        self.plain_tps = rate if self.plain_tps is None else (1 - alpha) * self.plain_tps + alpha * rate
        self.plain_n += 1

    def observe_spec(self, tokens: int, seconds: float, alpha: float = BACKOFF.spec_alpha) -> None:
        rate = tokens / max(seconds, 1e-9)
        self.spec_tps = rate if self.spec_tps is None else (1 - alpha) * self.spec_tps + alpha * rate
        self.spec_n += 1


def checked_tokens(drafted: int, accepted: int) -> int:
    """Draft tokens the verifier judged: the accepted ones, plus the rejected one when the draft
    was cut short (or was empty: an unsure drafter's step counts as one miss)."""
    return accepted + (1 if accepted < drafted or drafted == 0 else 0)


@dataclass
class DraftController:
    """Chooses the next draft length: 0 (plain step) or 1..k_max.

    With a cost curve: the length that maximises expected tokens per second at this answer's
    recent acceptance (starting from `prior`); where that is 0, a probe at the length that
    would pay at an optimistic acceptance, until the evidence rules it out. Without a curve:
    one longer after a fully accepted draft, else one past the accepted prefix.
    """

    k_max: int = DRAFTING.max_len
    k: int = DRAFTING.start_len
    adaptive: bool = True
    memory: SpeedMemory = field(default_factory=SpeedMemory)
    cooldown: int = 0  # plain tokens left before drafting is tried again
    warmup_plain: int = BACKOFF.warmup_plain  # plain steps to measure before the first draft
    # False: back off on acceptance alone, so the schedule (and with it every verify batch)
    # is the same on every rerun; the clock and the speeds in `memory` are not consulted.
    follow_speed: bool = True
    misses: int = 0  # draft steps in a row that kept no draft token
    miss_backoff: int = BACKOFF.first  # plain tokens after BACKOFF.misses misses, doubles each time
    curve: CostCurve | None = None  # what steps cost on this machine; None: follow acceptance alone
    prior: float = DRAFTING.prior_model  # acceptance expected before this answer's drafts are checked
    # Draft tokens checked in this answer and those the verifier kept, starting from the prior
    # (worth DRAFTING.prior_weight tokens), each step's weight fading by
    # DRAFTING.acceptance_memory: the acceptance of the passage being written.
    drafted: float = field(init=False, default=0.0)
    accepted: float = field(init=False, default=0.0)
    # The answer's own checked draft tokens (the prior's excluded), fading alike: what the
    # probe's bet narrows with (DRAFTING.probe_prior_weight).
    judged: float = field(init=False, default=0.0)
    _best_for: tuple | None = field(init=False, default=None, repr=False)  # best_k's last counts
    _best: int = field(init=False, default=0, repr=False)
    # The last speculative step's [tokens, seconds], not yet judged: the plain steps that settle
    # after its batch (DRAFTING.settle_steps) are added to it first, as part of its cost.
    _pending: list | None = field(init=False, default=None, repr=False)
    _settle_left: int = field(init=False, default=0, repr=False)

    def __post_init__(self) -> None:
        self.start_answer()

    def start_answer(self) -> None:
        """Forget the acceptance of earlier answers: start again from the prior."""
        self._judge_spec()  # the last answer's last draft, with whatever steps followed it
        self.drafted = DRAFTING.prior_weight
        self.accepted = self.prior * DRAFTING.prior_weight
        self.judged = 0.0

    def next_k(self) -> int:
        if not self.adaptive:
            return self.k_max
        if self.cooldown > 0:
            return 0
        if self.follow_speed and self.memory.plain_n < self.warmup_plain:
            return 0
        return self.k if self.curve is None else self.best_k()

    def acceptance(self) -> float:
        """This answer's recent acceptance (the prior until drafts are checked)."""
        return self.accepted / self.drafted

    def best_k(self) -> int:
        """The draft length the cost curve favours (a function of the counts, never the clock).
        The counts change only when a draft is checked, so between drafts (an n-gram lookup that
        finds nothing, a plain step) the last answer stands: ~30 us less per step."""
        key = (self.drafted, self.accepted, self.judged, self.k_max, id(self.curve))
        if key == self._best_for:
            return self._best
        k, _ = best_draft_len(self.curve, self.acceptance(), self.k_max)
        if k == 0:
            evidence = self.judged + DRAFTING.probe_prior_weight
            optimistic = optimistic_acceptance(self.acceptance(), evidence, DRAFTING.probe_z)
            k, _ = best_draft_len(self.curve, optimistic, self.k_max)
        self._best_for, self._best = key, k
        return k

    def record_plain(self, seconds: float) -> None:
        self.cooldown = max(0, self.cooldown - 1)
        if self._pending is not None:  # still settling after a draft: part of that step's cost
            self._pending[0] += 1
            self._pending[1] += seconds
            self._settle_left -= 1
            if self._settle_left <= 0:
                self._judge_spec()
            return
        self.memory.observe_plain(1, seconds)

    def record_spec(self, drafted: int, accepted: int, produced: int, seconds: float) -> None:
        """One speculative step: `seconds` is everything it cost (drafting, the drafter's
        catch-up, the verify batch), so the back-off compares like with like. The plain steps
        that settle after its batch count with it: its speed is judged after them."""
        self._judge_spec()
        self._pending, self._settle_left = [produced, seconds], DRAFTING.settle_steps
        if drafted == 0 or self._settle_left <= 0:  # no batch ran: nothing to settle
            self._judge_spec()
        # The rate the cost curve's E(k, a) assumes is per judged token: the accepted ones and
        # the first rejected one. Tokens after a rejection were never in question; counting
        # them would read a good drafter's long drafts as a bad drafter (an n-gram drafter that
        # is right 65% of the time per token keeps only ~25% of its 8-token drafts).
        # A drafter too unsure to propose anything counts as one missed token: it cost its time,
        # and asked on every step it would cost it on every step.
        self.drafted = self.drafted * DRAFTING.acceptance_memory + checked_tokens(drafted, accepted)
        self.accepted = self.accepted * DRAFTING.acceptance_memory + accepted
        self.judged = self.judged * DRAFTING.acceptance_memory + checked_tokens(drafted, accepted)
        if not self.adaptive:
            return
        if drafted == 0:
            pass
        elif accepted == drafted:
            self.k = min(self.k + 1, self.k_max)
        else:
            self.k = max(1, accepted + 1)
        if not self.follow_speed:
            if self.curve is None:  # with a curve, low acceptance already turns drafting off
                self._back_off_on_misses(accepted)

    def _judge_spec(self) -> None:
        """Count the pending speculative step's speed and, following the clock, compare it with
        plain speed: losing pauses drafting."""
        if self._pending is None:
            return
        (tokens, seconds), self._pending = self._pending, None
        mem = self.memory
        mem.observe_spec(tokens, seconds)
        if not (self.adaptive and self.follow_speed):
            return
        # Two losing steps are evidence; one is enough once speculation has lost before on this pair.
        needed = 1 if mem.backoff > BACKOFF.first else 2
        if mem.spec_n >= needed and mem.plain_tps and mem.spec_tps is not None:
            if mem.spec_tps < BACKOFF.lose_ratio * mem.plain_tps:
                self.cooldown = mem.backoff
                mem.backoff = min(mem.backoff * 2, BACKOFF.cap)
                mem.spec_tps = None  # judge afresh after the cool-down
                mem.spec_n = 0
            elif mem.spec_tps > BACKOFF.win_ratio * mem.plain_tps:
                mem.backoff = BACKOFF.first

    def _back_off_on_misses(self, accepted: int) -> None:
        """The clock-free rule: BACKOFF.misses draft steps in a row that keep nothing pause drafting."""
        if accepted > 0:
            self.misses = 0
            self.miss_backoff = BACKOFF.first
            return
        self.misses += 1
        if self.misses >= BACKOFF.misses:
            self.cooldown = self.miss_backoff
            self.miss_backoff = min(self.miss_backoff * 2, BACKOFF.cap)
            self.misses = 0


class TextStream:
    """Turns tokens into text as they are accepted, holding back what could start a stop string."""

    def __init__(self, backend: Backend, stops: Sequence[str], on_text: OnText | None) -> None:
        self.backend = backend
        self.stops = [s for s in stops if s]
        self.on_text = on_text
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text = ""
        self.emitted = 0
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.stopped = False

    def push(self, token: int) -> bool:
        """Add one token; True when a stop string completed (the text is cut before it)."""
        self.text += self.decoder.decode(self.backend.detokenize([token]))
        for stop in self.stops:
            at = self.text.find(stop, max(0, self.emitted - len(stop)))
            if at != -1:
                self.text = self.text[:at]
                self.stopped = True
                self._emit(len(self.text))
                return True
        self._emit(len(self.text) - self.hold)
        return False

    def finish(self) -> str:
        if not self.stopped:
            self.text += self.decoder.decode(b"", final=True)
        self._emit(len(self.text))
        return self.text

    def _emit(self, upto: int) -> None:
        if upto > self.emitted:
            piece = self.text[self.emitted: upto]
            self.emitted = upto
            if self.on_text and piece:
                self.on_text(piece)


def _pick(logits: np.ndarray, temperature: float, rng: np.random.Generator) -> int:
    if temperature <= 0:
        return int(np.argmax(logits))
    p = softmax(logits, temperature)
    return int(rng.choice(len(p), p=p))


def verify_draft(
    rows: np.ndarray,
    draft: Sequence[int],
    temperature: float,
    rng: np.random.Generator,
    draft_dists: Sequence[np.ndarray] | None = None,
) -> tuple[int, int]:
    """Check a draft against the verifier's logits rows (len(draft) + 1 of them).

    Returns (accepted, next_token): how many draft tokens stand and the token that
    follows them (the verifier's correction, or a bonus token when all stood).
    """
    for i, tok in enumerate(draft):
        if temperature <= 0:
            best = int(np.argmax(rows[i]))
            if best != tok:
                return i, best
            continue
        p = softmax(rows[i], temperature)
        q_tok = float(draft_dists[i][tok]) if draft_dists is not None else 1.0
        if rng.random() < min(1.0, p[tok] / max(q_tok, 1e-12)):
            continue
        if draft_dists is not None:
            residual = np.maximum(p - draft_dists[i], 0.0)
        else:  # a deterministic draft is a point mass at `tok`
            residual = p.copy()
            residual[tok] = 0.0
        total = residual.sum()
        residual = residual / total if total > 0 else p
        return i, int(rng.choice(len(residual), p=residual))
    return len(draft), _pick(rows[len(draft)], temperature, rng)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def generate(
    verifier: Backend,
    prompt_tokens: Sequence[int],
    config: GenerationConfig,
    drafter: Drafter | None = None,
    on_text: OnText | None = None,
    stops: Sequence[str] = (),
    controller: DraftController | None = None,
) -> Generation:
    """Generate up to config.max_tokens tokens after `prompt_tokens`, streaming text."""
    if not prompt_tokens:
        raise ValueError("empty prompt")
    rng = np.random.default_rng(config.seed)
    ctl = controller or DraftController(k_max=config.draft_max, adaptive=config.adaptive)
    ctl.k_max = config.draft_max
    ctl.k = min(max(ctl.k, 1), ctl.k_max)
    ctl.adaptive = config.adaptive
    ctl.follow_speed = config.seed is None  # a seeded run must not depend on timing
    ctl.cooldown = 0
    ctl.start_answer()
    if drafter is not None:
        drafter.reset()
    stream = TextStream(verifier, tuple(stops) + tuple(config.stop), on_text)

    # Fake backends keep simulated time, so their timings do not depend on the machine.
    clock = getattr(verifier, "clock", time.perf_counter)
    t0 = clock()
    # Prefill, reusing whatever prefix of the prompt the KV cache already holds.
    cached = common_prefix(verifier.tokens, prompt_tokens)
    cached = min(cached, len(prompt_tokens) - 1)  # the last prompt token yields the logits
    verifier.truncate(cached)
    out: list[int] = []
    drafted = accepted = checked = draft_steps = plain_steps = 0
    finish = "length"
    ttft = 0.0
    history = list(prompt_tokens)

    def emit(tokens: Sequence[int]) -> bool:
        """Append accepted tokens; True when generation must end."""
        nonlocal finish
        for tok in tokens:
            if verifier.is_eog(tok):
                finish = "stop"
                return True
            out.append(tok)
            history.append(tok)
            if stream.push(tok):
                finish = "stop"
                return True
            if len(out) >= config.max_tokens:
                finish = "length"
                return True
        return False

    try:
        rows = verifier.eval(list(prompt_tokens[cached:]), logits="last")
        first = _pick(rows[-1], config.temperature, rng)
        ttft = clock() - t0
        done = config.max_tokens <= 0 or emit([first])
        began, step_s = None, 0.0  # when the last step began; the slowest recent step
        while not done:
            if config.deadline_s is not None:
                now = clock()
                step_s = step_s if began is None else max(now - began, DEADLINE.step_decay * step_s)
                began = now
                if now - t0 + step_s > config.deadline_s:  # the next step would end too late
                    finish = "deadline"
                    break
            pending = history[-1]
            k = ctl.next_k() if drafter is not None else 0
            k = min(k, config.max_tokens - len(out))
            step_t0 = clock()
            draft: list[int] = []
            dists = None
            if k > 0:
                draft, dists = drafter.propose(history, k)
            if not draft:
                rows = verifier.eval([pending], logits="last")
                tok = _pick(rows[-1], config.temperature, rng)
                plain_steps += 1
                done = emit([tok])
                if k > 0 and not drafter.free:
                    # The drafter ran but was unsure of its first token: its time counts
                    # against speculation, not against plain decoding.
                    ctl.record_spec(0, 0, 1, clock() - step_t0 - drafter.last_prefill_s)
                else:
                    ctl.record_plain(clock() - step_t0)
                continue
            base = len(verifier.tokens)
            rows = verifier.eval([pending] + draft, logits="all")
            n_ok, nxt = verify_draft(rows, draft, config.temperature, rng, dists)
            verifier.truncate(base + 1 + n_ok)
            drafted += len(draft)
            accepted += n_ok
            checked += checked_tokens(len(draft), n_ok)
            draft_steps += 1
            ctl.record_spec(len(draft), n_ok, n_ok + 1, clock() - step_t0 - drafter.last_prefill_s)
            done = emit(draft[:n_ok] + [nxt])
    except KeyboardInterrupt:
        finish = "interrupted"
    text = stream.finish()
    latency = clock() - t0
    stats = SpecStats(
        prompt_tokens=len(prompt_tokens),
        output_tokens=len(out),
        ttft_s=ttft or latency,
        latency_s=latency,
        drafted=drafted,
        accepted=accepted,
        checked=checked,
        draft_steps=draft_steps,
        plain_steps=plain_steps,
        prompt_cached=cached,
    )
    return Generation(text=text, tokens=tuple(out), stats=stats, finish_reason=finish)


def teacher_forced_acceptance(
    drafter_backend: Backend, prompt_tokens: Sequence[int], output_tokens: Sequence[int]
) -> float | None:
    """Share of output tokens the drafter's greedy choice predicts, in one batched pass.

    Used to label training data: no second generation is needed to know how a drafter
    would have fared on the verifier's answer.
    """
    if not output_tokens:
        return None
    drafter_backend.truncate(0)
    if len(prompt_tokens) > 1:
        drafter_backend.eval(list(prompt_tokens[:-1]), logits="none")
    rows = drafter_backend.eval([prompt_tokens[-1]] + list(output_tokens[:-1]), logits="all")
    guesses = rows.argmax(axis=1)
    return float(np.mean(guesses == np.asarray(output_tokens)))


def ngram_acceptance(prompt_tokens: Sequence[int], output_tokens: Sequence[int],
                     k: int = DRAFTING.max_len) -> float | None:
    """Per-token acceptance (kept / judged, as the engine counts it) of the n-gram drafts a
    greedy verifier would check on this exact answer; None where no draft is ever found."""
    return ngram_stats(prompt_tokens, output_tokens, k)[0]


def ngram_stats(prompt_tokens: Sequence[int], output_tokens: Sequence[int],
                k: int = DRAFTING.max_len) -> tuple[float | None, float]:
    """(per-token acceptance, coverage) of n-gram drafting on this exact answer: coverage is
    the share of steps on which the lookup found a draft (the rest are plain steps)."""
    from qroute_cli.generation.drafters import NgramDrafter

    history = list(prompt_tokens)
    drafter = NgramDrafter()  # the engine's drafter, over the same growing history
    judged = ok = steps = draft_steps = 0
    i = 0
    out = list(output_tokens)
    while i < len(out):
        steps += 1
        draft, _ = drafter.propose(history, k)
        if not draft:
            history.append(out[i])
            i += 1
            continue
        draft_steps += 1
        n = 0
        while n < len(draft) and i + n < len(out) and draft[n] == out[i + n]:
            n += 1
        ok += n
        # A draft running past the end of the answer was not rejected there.
        judged += n + (1 if n < len(draft) and i + n < len(out) else 0)
        step = min(n + 1, len(out) - i)
        history.extend(out[i: i + step])
        i += step
    return (ok / judged if judged else None), (draft_steps / steps if steps else 0.0)
