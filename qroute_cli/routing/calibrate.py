"""Measure what each model costs on this machine, through the Backend protocol only.

Per model: prefill (two prompt sizes -> fixed cost + tokens/s), one plain decode step, the
verify batch for k = 1..8 draft tokens (tuning.DRAFTING.max_len; all logits, as the engine asks), and for models that
draft in some pair, one drafted token (decode + the softmax the drafter's confidence check
runs). Every figure is a median of repeats after a warm-up call, so one hiccup on a busy
2-core machine does not become the profile.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from qroute_cli.generation.backends.base import Backend
from qroute_cli.config import Registry
from qroute_cli.numeric import softmax
from qroute_cli.routing.latency import Machine, ModelProfile, Profile, now_iso
from qroute_cli.tuning import DRAFTING
from qroute_cli.types import draft_copy

Advance = Callable[[int], None]

_TEXT = (
    "The quick brown fox jumps over the lazy dog. def add(a, b):\n    return a + b\n"
    "Question: how many apples are left if Tom eats 3 of 12? Answer: 9 apples remain.\n"
)


@dataclass(frozen=True)
class Plan:
    """How much to measure: --quick keeps the small models under a minute in total."""

    prefill_sizes: tuple[int, int]
    reps: int
    decode_steps: int

    @property
    def steps(self) -> int:
        """Progress units per model: prefill reps, decode steps, verify reps, draft steps."""
        return 2 * self.reps + self.decode_steps + DRAFTING.max_len * self.reps + self.decode_steps


QUICK = Plan(prefill_sizes=(16, 128), reps=3, decode_steps=8)
FULL = Plan(prefill_sizes=(32, 384), reps=5, decode_steps=32)


def _tokens(backend: Backend, n: int) -> list[int]:
    toks = backend.tokenize(_TEXT, add_bos=False, special=False)
    out = (toks * (n // max(len(toks), 1) + 1))[:n]
    return [t % backend.n_vocab for t in out]


def _timed(fn: Callable[[], object], clock: Callable[[], float] = time.perf_counter) -> float:
    t0 = clock()
    fn()
    return clock() - t0


def _softmax_pick(row: np.ndarray) -> int:
    return int(softmax(row).argmax())


def measure_model(backend: Backend, model: str, identity: str, plan: Plan, *,
                  drafter: bool, advance: Advance = lambda n: None) -> ModelProfile:
    """Time prefill, decode, verify batches (and drafting) of one loaded model."""
    small, large = plan.prefill_sizes
    large = min(large, max(small + 1, backend.n_ctx - plan.decode_steps * 2 - DRAFTING.max_len - 8))
    toks = _tokens(backend, large + plan.decode_steps * 2 + DRAFTING.max_len + 2)
    clock = getattr(backend, "clock", time.perf_counter)  # fakes keep simulated time
    backend.truncate(0)
    backend.eval(toks[:small], logits="last")  # warm-up: buffers, caches, thread pool

    def prefill(n: int) -> float:
        times = []
        for _ in range(plan.reps):
            backend.truncate(0)
            times.append(_timed(lambda: backend.eval(toks[:n], logits="last"), clock))
            advance(1)
        return statistics.median(times)

    t_small, t_large = prefill(small), prefill(large)
    slope = (t_large - t_small) / (large - small)
    if slope <= 0:  # noise swamped the difference: fall back to the plain average
        slope, base = t_large / large, 0.0
    else:
        base = max(t_small - slope * small, 0.0)

    # Decode and verify run after a `small`-token context, like a short real prompt. They are
    # timed in rounds, each round some plain steps and then every verify batch size once: the
    # draft-length rule reads the ratios of these costs, and a busy spell then slows the sizes
    # it hits alike instead of bending the curve at one of them.
    # Each round's first plain steps follow a batch (the last round's verify batches, the
    # prefill before the first): they tell what settling after a batch costs (settle_s).
    backend.truncate(small)
    pos = small
    decode: list[float] = []
    settling: list[list[float]] = []  # per round: its first DRAFTING.settle_steps plain steps
    batches: list[list[float]] = [[] for _ in range(DRAFTING.max_len)]
    rounds = max(plan.reps, 1)
    for r in range(rounds):
        settling.append([])
        for i in range(plan.decode_steps // rounds + (1 if r < plan.decode_steps % rounds else 0)):
            t = _timed(lambda: int(backend.eval([toks[pos]], logits="last")[-1].argmax()), clock)
            (settling[-1] if i < DRAFTING.settle_steps else decode).append(t)
            pos += 1
            advance(1)
        for k in range(1, DRAFTING.max_len + 1):  # every draft length the engine may use
            start = len(backend.tokens)
            batches[k - 1].append(
                _timed(lambda: backend.eval(toks[pos: pos + k + 1], logits="all").argmax(axis=1), clock))
            backend.truncate(start)
            advance(1)
    if len(decode) < 3:  # too few steady steps (a quick plan): every plain step is a sample
        decode += [t for steps in settling for t in steps]
    decode_s = statistics.median(decode)
    # A batch costs at least one token's step; a median below that is noise.
    verify = [max(statistics.median(times), decode_s) for times in batches]
    # What a round's first steps cost beyond steady ones; below zero is noise.
    settle_s = max(statistics.median(sum(steps) - len(steps) * decode_s for steps in settling if steps), 0.0) \
        if any(settling) else 0.0

    draft = None
    if drafter:
        steps = []
        for _ in range(plan.decode_steps):
            steps.append(_timed(lambda: _softmax_pick(backend.eval([toks[pos]], logits="last")[-1]), clock))
            pos += 1
            advance(1)
        draft = statistics.median(steps)
    else:
        advance(plan.decode_steps)
    backend.truncate(0)
    return ModelProfile(
        model=model, identity=identity, prefill_base_s=base, prefill_tps=1.0 / slope,
        decode_s=decode_s, verify_s=tuple(verify), draft_token_s=draft, settle_s=settle_s,
        quick=plan is QUICK, measured_at=now_iso(),
    )


def measure_ngram(reps: int = 50, clock: Callable[[], float] = time.perf_counter) -> float:
    """One step of the n-gram drafter at a 512-token history: index the token the last step
    added, then look up (what the drafter costs per step)."""
    from qroute_cli.generation.drafters import NgramDrafter

    tokens = [int(t) for t in np.random.default_rng(0).integers(0, 500, 512 + reps)]
    history = tokens[:512]
    drafter = NgramDrafter()
    drafter.propose(history, DRAFTING.max_len)  # the prompt's index, built once per answer
    times = []
    for tok in tokens[512:]:
        history.append(tok)
        times.append(_timed(lambda: drafter.propose(history, DRAFTING.max_len), clock))
    return statistics.median(times)


def drafter_models(registry: Registry) -> set[str]:
    return {p.drafter for p in registry.pairs.values() if p.drafter_kind == "model"}


def measured_copies(registry: Registry, names: Sequence[str], machine: Machine) -> list[tuple[str, bool]]:
    """(model, as a drafter?) for each copy calibration measures: every model, and a drafter's
    own copy again where drafters are placed apart (Machine.draft_gpu_layers)."""
    drafters = drafter_models(registry) if machine.draft_gpu_layers is not None else set()
    return [(name, draft) for name in names for draft in ((False, True) if name in drafters else (False,))]


def calibration_steps(registry: Registry, names: Sequence[str], machine: Machine, plan: Plan) -> int:
    """The progress bar's total for calibrate(registry's pool, names, machine)."""
    return len(measured_copies(registry, names, machine)) * plan.steps


def calibrate(pool, names: Sequence[str], machine: Machine, *, quick: bool,
              base: Profile | None = None, advance: Advance = lambda n: None,
              on_model: Callable[[str], None] = lambda name: None) -> Profile:
    """Measure `names` (loading them through the pool) into `base` or a fresh profile.

    Models of `base` that the registry no longer has are dropped (removed or renamed models).
    A drafter placed apart from the verifiers is measured twice: the model, and its drafting
    copy (loaded with the pool's draft_gpu_layers) under draft_copy(NAME).
    """
    registry: Registry = pool.registry
    plan = QUICK if quick else FULL
    profile = base.only(registry.models) if base is not None and base.machine == machine else Profile(machine)
    drafters = drafter_models(registry)
    clock = time.perf_counter
    for name, draft in measured_copies(registry, names, machine):
        key = draft_copy(name) if draft else name
        on_model(key)
        spec = registry.model(name)
        backend = pool.get(name, draft=draft)
        clock = getattr(backend, "clock", clock)
        profile.models[key] = measure_model(
            backend, name, spec.identity, plan, drafter=name in drafters, advance=advance
        )
    # On fakes (simulated time) a lookup costs nothing measurable; the floor keeps it positive.
    profile.ngram_s = max(measure_ngram(clock=clock), 1e-6)
    return profile
