"""Scorers predict, per prompt, each verifier's quality, each drafter's acceptance and the
answer length. The router only sees this protocol.

`PriorScorer` uses the per-model `quality_prior` of models.toml and each drafting pair's mean
acceptance per task type (data/predictor/acceptance.json, predictor/priors.py); the trained ONNX
predictor (qroute_cli/routing/predict.py) replaces it when its file is present.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Callable, Protocol, Sequence

from qroute_cli.config import Registry
from qroute_cli.errors import QrouteError
from qroute_cli.tuning import ANSWER
from qroute_cli.types import Message, Prediction


class Scorer(Protocol):
    name: str
    # Task types (routing.task_type) the length predictions were trained on; None: no claim.
    # For other task types the router does not trust the predicted length (see routing.py).
    tasks: frozenset[str] | None

    def predict(self, prompt: str) -> Prediction:
        """Predictions for one prompt (the last user turn, with context if any)."""


class PriorScorer:
    """Per-model constants, and per task type for acceptance: never crashes."""

    name = "prior"
    tasks = None  # one fixed length for every prompt, set by whoever builds the scorer

    def __init__(self, registry: Registry, default_length: float = ANSWER.default_length) -> None:
        self.registry = registry
        self.default_length = default_length

    def predict(self, prompt: str) -> Prediction:
        from qroute_cli.routing.features import task_type

        quality = {m.name: m.quality_prior for m in self.registry.models.values()}
        length = {m.name: self.default_length for m in self.registry.models.values()}
        task, table = task_type(prompt), acceptance_priors()
        acceptance = {}
        for p in self.registry.pairs.values():
            rates = table.get(p.acceptance_key)
            if rates:
                acceptance[p.name] = float(rates.get(task, rates["*"]))
        return Prediction(quality=quality, acceptance=acceptance, length=length, scorer=self.name)


@lru_cache(maxsize=1)
def acceptance_priors() -> dict[str, dict[str, float]]:
    """{"verifier+drafter": {task type or "*": mean acceptance}} of the packaged table; empty
    where it is missing or unreadable (the drafter kinds' priors then stand)."""
    from qroute_cli.routing.features import PREDICTOR_DIR

    try:
        table = json.loads((PREDICTOR_DIR / "acceptance.json").read_text())["acceptance"]
        return {str(k): {str(t): float(v) for t, v in rates.items()} for k, rates in table.items() if "*" in rates}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def default_scorer(registry: Registry, warn: Callable[[str], None], path: Path | None = None) -> Scorer:
    """The trained predictor (at `path`, default: the shipped one) when it is installed and
    loads, else the models.toml priors, with a warning that says why."""
    try:
        from qroute_cli.routing import predict
    except ModuleNotFoundError as exc:
        if exc.name == "qroute_cli.routing.predict":
            return PriorScorer(registry)  # no predictor in this install: the priors are the design
        warn(f"The quality predictor is unavailable ({exc}); using the per-model priors of models.toml.")
        return PriorScorer(registry)
    try:
        return predict.load_default(registry, path)
    except (QrouteError, ImportError, AttributeError) as exc:
        message = getattr(exc, "message", str(exc))
        warn(f"The quality predictor is unavailable ({message}); using the per-model priors of models.toml.")
        return PriorScorer(registry)


def prompt_text(messages: Sequence[Message]) -> str:
    """The text a scorer sees: the conversation's user turns, latest last."""
    return "\n".join(m.content for m in messages if m.role == "user")
