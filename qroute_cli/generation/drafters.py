"""Drafters propose tokens; the verifier decides. A drafter never changes the answer.

`propose(history, k)` returns up to k draft tokens and, for model drafters, the
drafter's probability distribution at each one (needed for exact speculative sampling).
"""

from __future__ import annotations

import time
from typing import Protocol, Sequence

import numpy as np

from qroute_cli.generation.backends.base import Backend
from qroute_cli.numeric import softmax
from qroute_cli.tuning import DRAFTING


class Drafter(Protocol):
    # The model the drafter runs on (it gets the verifier's thread count), or None.
    backend: Backend | None
    # Drafts cost (next to) nothing to make: the loop starts at the longest drafts, and a
    # step where the drafter had nothing to offer is an ordinary plain step.
    free: bool
    # Seconds the last propose() spent reading the prompt (its first call of a generation):
    # the drafter's prefill, paid once per answer whatever the drafting does next, so the speed
    # controller leaves it out of judging steps (the latency model counts it apart). Catching up
    # after a pause in drafting is a cost of drafting and is not in here. 0 for free drafters.
    last_prefill_s: float

    def propose(self, history: Sequence[int], k: int) -> tuple[list[int], list[np.ndarray] | None]:
        """Up to k tokens that are likely to follow `history` (may be empty)."""

    def reset(self) -> None:
        """Forget per-generation state."""


def ngram_lookup(history: Sequence[int], k: int, n_max: int = DRAFTING.ngram_max,
                 n_min: int = DRAFTING.ngram_min) -> list[int]:
    """Prompt-lookup drafting: find the latest earlier occurrence of the history's last
    n tokens (longest n first) and propose the up-to-k tokens that followed it.

    Pure function on plain sequences; returns [] when nothing matches. One lookup of a fresh
    `NgramDrafter`: a caller that grows the history step by step keeps the drafter instead.
    """
    return NgramDrafter(n_max, n_min).propose(history, k)[0]


class NgramDrafter:
    """Drafts from repeated n-grams in the prompt and the answer so far; free to run.

    It keeps an index of every n-gram's latest start that grows with the history: a step costs
    a few dictionary lookups instead of a scan of the whole history (100-270 us for 100-1,000
    tokens, about a tenth of a decode step of a small model on a GPU, paid on every step the
    controller asks for a draft)."""

    backend = None
    free = True
    last_prefill_s = 0.0  # a lookup reads nothing

    def __init__(self, n_max: int = DRAFTING.ngram_max, n_min: int = DRAFTING.ngram_min) -> None:
        self.n_max = n_max
        self.n_min = n_min
        self.reset()

    def propose(self, history: Sequence[int], k: int) -> tuple[list[int], None]:
        size = len(history)
        if history is not self._history or size < self._size:
            # Another sequence than the one indexed: the engine only appends to its history
            # within an answer, anything else is indexed afresh.
            self.reset()
            self._history = history
        self._extend(size)
        for n in range(min(self.n_max, size - 1), self.n_min - 1, -1):
            start = self._latest[n].get(tuple(history[size - n:]))
            if start is not None:
                return list(history[start + n: min(start + n + k, size)]), None
        return [], None

    def _extend(self, size: int) -> None:
        """Index the n-grams that now have a continuation (those starting at i <= size - 1 - n),
        the latest start of each kept: the tail itself never matches itself."""
        h = self._history
        for n in range(self.n_min, self.n_max + 1):
            table = self._latest[n]
            for i in range(max(self._size - n, 0), size - n):
                table[tuple(h[i: i + n])] = i
        self._size = size

    def reset(self) -> None:
        self._history: Sequence[int] | None = None
        self._size = 0
        self._latest: dict[int, dict[tuple[int, ...], int]] = {n: {} for n in range(self.n_min, self.n_max + 1)}


class ModelDrafter:
    """A smaller model with the same vocabulary drafts greedily (or by sampling).

    Its KV cache is kept in step with the verifier's accepted tokens and reused across
    steps: only tokens it has not seen are evaluated, rejected ones are trimmed. Drafting
    stops early at a token the drafter itself is unsure of (`min_prob`).
    """

    free = False

    def __init__(
        self,
        backend: Backend,
        min_prob: float = DRAFTING.min_prob,
        temperature: float = 0.0,
        rng: np.random.Generator | None = None,
    ) -> None:
        self.backend = backend
        self.min_prob = min_prob
        self.temperature = temperature
        self.rng = rng or np.random.default_rng()
        self.last_prefill_s = 0.0
        self._read_prompt = False  # whether this generation's first propose() has run

    def reset(self) -> None:
        self.last_prefill_s = 0.0
        self._read_prompt = False

    def _sync(self, history: Sequence[int]) -> np.ndarray:
        """Bring the KV cache to `history`; return the logits after its last token."""
        cached = self.backend.tokens
        common = 0
        limit = min(len(cached), len(history) - 1)  # re-evaluate at least one token
        while common < limit and cached[common] == history[common]:
            common += 1
        self.backend.truncate(common)
        return self.backend.eval(list(history[common:]), logits="last")[-1]

    def propose(
        self, history: Sequence[int], k: int
    ) -> tuple[list[int], list[np.ndarray] | None]:
        if k <= 0:
            return [], None
        clock = getattr(self.backend, "clock", time.perf_counter)  # the engine's time source
        t0 = clock()
        logits = self._sync(history)
        self.last_prefill_s = 0.0 if self._read_prompt else clock() - t0
        self._read_prompt = True
        draft: list[int] = []
        dists: list[np.ndarray] = []
        for i in range(k):
            if self.temperature > 0:
                q = softmax(logits, self.temperature)
                tok = int(self.rng.choice(len(q), p=q))
                dists.append(q)
                confident = q[tok] >= self.min_prob * DRAFTING.sampled_min_prob_share
            else:
                tok = int(np.argmax(logits))
                # p(top) = 1 / sum(exp(l - l_top)); float32 keeps this cheap on 150k-token vocabularies.
                confident = self.min_prob <= 0 or 1.0 / float(np.exp(logits - logits[tok]).sum()) >= self.min_prob
            if not confident:
                break  # an unsure guess costs verify time and is likely rejected
            draft.append(tok)
            if i + 1 < k:
                logits = self.backend.eval([tok], logits="last")[-1]
        return draft, (dists if self.temperature > 0 else None)
