"""Run one prompt on one pair: render, tokenize, check the context, draft/verify, stream.

This is the public entry point the CLI, the bench and the predictor's data generation use.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np

from qroute_cli.generation.backends.base import Backend
from qroute_cli.generation.drafters import Drafter, ModelDrafter, NgramDrafter
from qroute_cli.generation.engine import DraftController, OnText, generate
from qroute_cli.errors import ConfigError, PromptTooLongError
from qroute_cli.generation.pool import ModelPool
from qroute_cli.types import (
    DRAFTER_NGRAM,
    DRAFTER_NONE,
    Generation,
    GenerationConfig,
    Message,
    ModelSpec,
    Pair,
)
from qroute_cli.speculation import CostCurve
from qroute_cli.tuning import DRAFTING

# Room kept free at the end of the context for one verify batch.
CTX_MARGIN = 16


def render_prompt(backend: Backend, spec: ModelSpec, messages: Sequence[Message]) -> tuple[str, tuple[str, ...]]:
    """Messages -> prompt text and stop strings, in the model's own format."""
    if spec.prompt_format == "completion":
        system = " ".join(m.content for m in messages if m.role == "system")
        turns = [m for m in messages if m.role != "system"]
        history = ""
        for m in turns[:-1]:
            history += (f"Question: {m.content}\n" if m.role == "user" else f"Answer: {m.content}\n\n")
        last = turns[-1].content if turns else ""
        text = spec.template.format(prompt=last, system=(system + "\n\n") if system else "")
        return history + text, spec.stop
    text, stops = backend.render(messages)
    return text, tuple(stops) + spec.stop


def prompt_tokens(backend: Backend, spec: ModelSpec, messages: Sequence[Message]) -> tuple[list[int], tuple[str, ...]]:
    text, stops = render_prompt(backend, spec, messages)
    return backend.tokenize(text, add_bos=True, special=True), stops


def make_drafter(pool: ModelPool, pair: Pair, config: GenerationConfig, verifier: Backend) -> Drafter | None:
    if pair.drafter == DRAFTER_NONE:
        return None
    if pair.drafter == DRAFTER_NGRAM:
        return NgramDrafter()
    draft_backend = pool.get(pair.drafter, draft=True)
    if draft_backend.n_vocab != verifier.n_vocab:
        raise ConfigError(
            f"Pair '{pair.name}': drafter '{pair.drafter}' has {draft_backend.n_vocab} tokens, "
            f"verifier '{pair.verifier}' has {verifier.n_vocab}.",
            "Model drafting needs the same vocabulary; use drafter = \"ngram\".",
        )
    rng = np.random.default_rng(None if config.seed is None else config.seed + 1)
    return ModelDrafter(draft_backend, min_prob=config.draft_min_prob, temperature=config.temperature, rng=rng)


def run_prompt(
    pool: ModelPool,
    pair: Pair,
    messages: Sequence[Message],
    config: GenerationConfig,
    on_text: OnText | None = None,
    *,
    costs: CostCurve | None = None,
    acceptance: float | None = None,
) -> Generation:
    """Answer `messages` with `pair`, streaming text through `on_text`.

    `costs` (the pair's cost curve from the calibration profile) and `acceptance` (the
    predicted acceptance, else the drafter kind's prior) set the draft lengths, as the latency
    estimate assumed them; without a curve the draft length follows acceptance alone.
    """
    spec = pool.registry.model(pair.verifier)
    verifier = pool.get(pair.verifier)
    tokens, stops = prompt_tokens(verifier, spec, messages)
    room = verifier.n_ctx - len(tokens) - CTX_MARGIN - config.draft_max
    if room < 1:
        raise PromptTooLongError(
            f"The prompt has {len(tokens)} tokens; '{spec.name}' has a context of {verifier.n_ctx}.",
            "Shorten the prompt, or raise n_ctx for this model in models.toml.",
        )
    if config.max_tokens > room:
        config = replace(config, max_tokens=room)
    drafter = make_drafter(pool, pair, config, verifier)
    pool.fit_threads([verifier, drafter.backend if drafter is not None else None])
    prior = acceptance if acceptance is not None else (
        DRAFTING.prior_ngram if pair.drafter == DRAFTER_NGRAM else DRAFTING.prior_model)
    controller = DraftController(k_max=config.draft_max, adaptive=config.adaptive, memory=pool.speed_memory(pair.name),
                                 curve=costs if drafter is not None else None, prior=prior)
    if drafter is not None and drafter.free:
        controller.k = config.draft_max  # free drafts: start long, acceptance shortens them
    gen = generate(verifier, tokens, config, drafter, on_text, stops, controller)
    return replace(gen, pair=pair.name)


def user_messages(prompt: str, system: str | None = None) -> list[Message]:
    msgs = [Message("system", system)] if system else []
    return msgs + [Message("user", prompt)]
