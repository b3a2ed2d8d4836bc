"""The Backend protocol: one loaded model with one KV cache, driven token by token.

The engine (draft/verify loop) only speaks this protocol, so the same loop runs on
llama.cpp and on the deterministic fake used by tests.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np

from qroute_cli.types import Message


class Backend(Protocol):
    name: str
    n_vocab: int
    n_ctx: int
    threads: int | None  # CPU threads it decodes with; None for a backend without threads (the fake)

    @property
    def tokens(self) -> list[int]:
        """The tokens in the KV cache, in order."""

    def tokenize(self, text: str, *, add_bos: bool = True, special: bool = True) -> list[int]:
        """Text -> token ids."""

    def detokenize(self, tokens: Sequence[int]) -> bytes:
        """Token ids -> raw bytes (may end inside a UTF-8 sequence)."""

    def is_eog(self, token: int) -> bool:
        """True for end-of-generation tokens (EOS, end-of-turn)."""

    def render(self, messages: Sequence[Message]) -> tuple[str, tuple[str, ...]]:
        """Messages -> prompt text in the model's format, and its stop strings."""

    def eval(self, tokens: Sequence[int], logits: str = "last") -> np.ndarray:
        """Append `tokens` to the KV cache; return logits rows (float32, shape (rows, n_vocab)).

        logits="last" returns one row (after the last token); "all" one row per token;
        "none" returns an empty array (prefill of a prefix whose logits nobody needs).
        """

    def truncate(self, n: int) -> None:
        """Keep only the first `n` tokens in the KV cache."""

    def set_threads(self, n: int) -> None:
        """Decode with `n` CPU threads from the next eval on (ignored without threads)."""

    def close(self) -> None:
        """Free the model."""
