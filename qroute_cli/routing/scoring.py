"""Scorers predict, per prompt, each verifier's quality, each drafter's acceptance and the
answer length. The router only sees this protocol.

`PriorScorer` uses the per-model `quality_prior` of models.toml; the trained ONNX predictor
(qroute_cli/routing/predict.py) replaces it when its file is present.
"""

from __future__ import annotations

from typing import Protocol, Sequence

from qroute_cli.config import Registry
from qroute_cli.types import Message, Prediction


class Scorer(Protocol):
    name: str
    # Task types (routing.task_type) the length predictions were trained on; None: no claim.
    # For other task types the router does not trust the predicted length (see routing.py).
    tasks: frozenset[str] | None

    def predict(self, prompt: str) -> Prediction:
        """Predictions for one prompt (the last user turn, with context if any)."""


class PriorScorer:
    """Per-model constants: same answer for every prompt, never crashes."""

    name = "prior"
    tasks = None  # one fixed length for every prompt, set by whoever builds the scorer

    def __init__(self, registry: Registry, default_length: float = 200.0) -> None:
        self.registry = registry
        self.default_length = default_length

    def predict(self, prompt: str) -> Prediction:
        quality = {m.name: m.quality_prior for m in self.registry.models.values()}
        length = {m.name: self.default_length for m in self.registry.models.values()}
        return Prediction(quality=quality, acceptance={}, length=length, scorer=self.name)


def prompt_text(messages: Sequence[Message]) -> str:
    """The text a scorer sees: the conversation's user turns, latest last."""
    return "\n".join(m.content for m in messages if m.role == "user")
