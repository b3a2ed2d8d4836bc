"""A deterministic fake backend: a tiny order-2 Markov 'language model' over bytes.

It drives the real engine, router and CLI in unit tests and demos without any model file.
Two fakes with the same seed agree exactly; a drafter made with `noise > 0` agrees often but
not always, which exercises acceptance and rejection paths.

Time is simulated too: every eval() advances one shared clock by a fixed cost per batch and per
token, and the engine and calibration time fakes with `backend.clock`. So every latency, speed
and routing decision on fakes is the same on any machine, under any load.
"""

from __future__ import annotations

import zlib
from typing import Sequence

import numpy as np

from qroute_cli.tuning import DRAFTING
from qroute_cli.types import Message

EOS = 256


class SimulatedClock:
    """Seconds of simulated work, advanced by fake models only.

    It counts whole 2**-20 s steps, so every reading and every difference of readings is an
    exact float: a duration comes out the same however long the process has run.
    """

    _STEP = 2.0**-20

    def __init__(self) -> None:
        self._steps = 0

    def __call__(self) -> float:
        return self._steps * self._STEP

    def advance(self, seconds: float) -> None:
        self._steps += max(1, round(seconds / self._STEP))


# One clock for every fake model: a drafter's work delays its verifier, as on one real CPU.
CLOCK = SimulatedClock()


class FakeBackend:
    """Byte-level vocabulary (0-255) plus an end-of-sequence token."""

    def __init__(
        self,
        name: str = "fake",
        seed: int = 0,
        noise: float = 0.0,
        n_ctx: int = 2048,
        eos_bias: float = -4.0,
        sharpness: float = 3.0,
        alphabet: bytes = b"abcdefghij klmnop\n",
        step_ms: float = 1.0,  # simulated cost of one eval() batch
        token_ms: float = 0.2,  # and of each token in it
        # and of each of the first DRAFTING.settle_steps single-token evals after a batch of
        # several (a GPU re-capturing its decode graph; 0: a CPU)
        settle_ms: float = 0.0,
    ) -> None:
        self.name = name
        self.n_vocab = 257
        self.n_ctx = n_ctx
        self.seed = seed
        self.noise = noise
        self.eos_bias = eos_bias
        self.sharpness = sharpness
        self._allowed = np.full(self.n_vocab, -30.0, dtype=np.float32)
        self._allowed[list(alphabet)] = 0.0
        self._allowed[EOS] = eos_bias
        self._tokens: list[int] = []
        self.eval_calls = 0  # how many eval() batches ran (tests check cache reuse)
        self.evaluated = 0  # how many tokens were evaluated in total
        self.closed = False
        self.clock = CLOCK
        self.threads: int | None = None  # no threads: the pool leaves the count alone
        self.step_s, self.token_s = step_ms / 1000, token_ms / 1000
        self.settle_s = settle_ms / 1000
        self._unsettled = 0  # single-token evals left that pay settle_s

    @property
    def tokens(self) -> list[int]:
        return list(self._tokens)

    def tokenize(self, text: str, *, add_bos: bool = True, special: bool = True) -> list[int]:
        return list(text.encode("utf-8"))

    def detokenize(self, tokens: Sequence[int]) -> bytes:
        return bytes(t for t in tokens if t < 256)

    def is_eog(self, token: int) -> bool:
        return token == EOS

    def render(self, messages: Sequence[Message]) -> tuple[str, tuple[str, ...]]:
        text = "".join(f"<{m.role}>{m.content}\n" for m in messages) + "<assistant>"
        return text, ()

    def _key(self, context: Sequence[int]) -> tuple:
        """What the next token depends on: the last two tokens."""
        return (context[-2] if len(context) > 1 else 257, context[-1] if context else 258)

    def _row(self, context: Sequence[int]) -> np.ndarray:
        key = self._key(context)
        rng = np.random.default_rng(zlib.crc32(bytes(f"{self.seed}:{key}", "ascii")))
        row = rng.standard_normal(self.n_vocab).astype(np.float32) * self.sharpness
        if self.noise:
            # The drafter's own view: extra noise keyed by position so it is deterministic.
            nrng = np.random.default_rng(zlib.crc32(bytes(f"n{len(context)}:{key}", "ascii")))
            row += nrng.standard_normal(self.n_vocab).astype(np.float32) * self.noise
        return row + self._allowed

    def eval(self, tokens: Sequence[int], logits: str = "last") -> np.ndarray:
        if len(self._tokens) + len(tokens) > self.n_ctx:
            raise ValueError("context window exceeded")
        rows = []
        for tok in tokens:
            self._tokens.append(int(tok))
            if logits == "all":
                rows.append(self._row(self._tokens))
        self.eval_calls += 1
        self.evaluated += len(tokens)
        extra = 0.0
        if len(tokens) > 1:
            self._unsettled = DRAFTING.settle_steps
        elif self._unsettled > 0:
            extra, self._unsettled = self.settle_s, self._unsettled - 1
        self.clock.advance(self.step_s + self.token_s * len(tokens) + extra)
        if logits == "last":
            return self._row(self._tokens)[None, :]
        if logits == "none":
            return np.empty((0, self.n_vocab), dtype=np.float32)
        return np.stack(rows)

    def truncate(self, n: int) -> None:
        del self._tokens[n:]

    def set_threads(self, n: int) -> None:
        pass  # simulated time does not depend on threads

    def close(self) -> None:
        self.closed = True
