"""Routing value of a set of predictions: the bench's static-frontier gain, simulated on
training rows, so a predictor is chosen by how well it routes, not by a correlation.

For each prompt and each built-in pair the simulated matrix holds what the rows measured for
the pair's verifier (its greedy answer, hence its quality: speculative decoding keeps the
verifier's text) and a latency from the latency model at what the rows measured: the
profile's prefill for the measured prompt tokens, plus the measured answer length times the
pair's time per token at the measured acceptance (the draft length the engine would pick on
the profile's cost curve), plus a model drafter's prefill. Every pair is timed by the same
model, so no pair gains from the load the rows happened to be generated under.

QualityRoute then runs qroute's own Router over a budget sweep with the predictions under test
(strategies.routed, as the bench does); its curve is compared with the frontier of the static
pairs by `frontier.gain_at_matched_latency` (the bench's headline figure), overall and per task.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from qroute_cli.config import Registry
from qroute_cli.evaluation import frontier, strategies
from qroute_cli.evaluation.bench import default_budgets
from qroute_cli.evaluation.matrix import Cell, Matrix
from qroute_cli.evaluation.tasks import Item
from qroute_cli.routing.latency import Profile, base_per_token, base_prefill, draft_prefill
from qroute_cli.tuning import SWEEP
from qroute_cli.types import DRAFTER_NONE, Prediction

DEFAULT_PROFILE = Path(__file__).resolve().parent.parent / "bench" / "results" / "replay_profile.json"


class TableScorer:
    """Scorer protocol over predictions made in advance for known prompts (no ONNX needed)."""

    def __init__(self, name: str, registry: Registry, prompts: Sequence[str], outputs: dict[str, np.ndarray],
                 verifiers: Sequence[str], acc_keys: Sequence[str], tasks: frozenset[str] | None) -> None:
        self.name, self.tasks = name, tasks
        col = {v: j for j, v in enumerate(verifiers)}
        acol = {k: j for j, k in enumerate(acc_keys)}
        pairs = [(p.name, p.acceptance_key) for p in registry.pairs.values() if p.drafter != DRAFTER_NONE]
        self.by_prompt: dict[str, Prediction] = {}
        for i, prompt in enumerate(prompts):
            self.by_prompt[prompt] = Prediction(
                quality={v: float(outputs["quality"][i, j]) for v, j in col.items()},
                acceptance={name: float(outputs["acceptance"][i, acol[k]]) for name, k in pairs if k in acol},
                length={v: float(outputs["length"][i, j]) for v, j in col.items()},
                scorer=name,
            )

    def predict(self, prompt: str) -> Prediction:
        return self.by_prompt[prompt]


@dataclass
class SimRow:
    """What the simulation needs of one training prompt."""

    item: Item
    quality: dict[str, float]  # per verifier
    text: dict[str, str]
    tokens: dict[str, float]  # answer length at today's cap (censored rows: the imputed length)
    prompt_tokens: dict[str, int]
    acceptance: dict[str, float | None]  # per "VERIFIER+DRAFTER"


def simulated_matrix(rows: Sequence[SimRow], registry: Registry, profile: Profile) -> Matrix:
    """Every (prompt, pair) cell from the rows and the latency model (module docstring)."""
    pairs = [p for p in registry.pairs.values()
             if p.verifier in rows[0].quality and all(m in profile.models for m in p.model_names)]
    m = Matrix([r.item for r in rows], [p.name for p in pairs])
    for r in rows:
        for p in pairs:
            v = p.verifier
            n_prompt = float(r.prompt_tokens[v])
            acc = None if p.drafter == DRAFTER_NONE else r.acceptance.get(f"{v}+{p.drafter}")
            per_token, _ = base_per_token(profile, p, acc)
            ttft = base_prefill(profile, registry, p, n_prompt)
            tokens = max(r.tokens[v], 1.0)
            latency = ttft + draft_prefill(profile, p, n_prompt) + (tokens - 1) * per_token
            drafted = int(tokens) if acc is not None else 0
            m.cells[(r.item.id, p.name)] = Cell(
                quality=r.quality[v], scores={"quality": r.quality[v]}, latency_s=latency, ttft_s=ttft,
                tokens=int(round(tokens)), prompt_tokens=int(n_prompt), drafted=drafted,
                accepted=int(round(drafted * (acc or 0.0))), text=r.text[v])
    return m


def routing_registry(registry: Registry) -> Registry:
    """The registry with every model marked present (fake paths): routing reads no model file,
    and the simulation must not depend on which models this machine has pulled."""
    models = {name: replace(spec, path="fake://seed=1") for name, spec in registry.models.items()}
    return replace(registry, models=models)


@dataclass
class Curves:
    """Per-prompt latency and quality of QualityRoute at each budget and of each static pair."""

    routed_latency: np.ndarray  # (budgets, prompts)
    routed_quality: np.ndarray
    static_latency: np.ndarray  # (pairs, prompts)
    static_quality: np.ndarray
    # Per prompt: 1 / its task's prompt count, so that every task weighs alike in a mean over
    # several tasks, as in the bench (the same number of prompts per task) however many rows
    # each task has here. None: plain means.
    weight: np.ndarray | None = None

    def _mean(self, a: np.ndarray, idx: np.ndarray) -> np.ndarray:
        return np.average(a[:, idx], axis=1, weights=None if self.weight is None else self.weight[idx])

    def points(self, idx: np.ndarray) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        """(routed curve, static pairs) as (mean latency, mean quality) over prompts `idx`."""
        return (list(zip(self._mean(self.routed_latency, idx), self._mean(self.routed_quality, idx))),
                list(zip(self._mean(self.static_latency, idx), self._mean(self.static_quality, idx))))

    def gain(self, idx: np.ndarray) -> float | None:
        """Static-frontier gain (absolute quality at matched latency) over prompts `idx`."""
        g = frontier.gain_at_matched_latency(*self.points(idx))
        return None if g is None else g.absolute


def route(m: Matrix, items: Sequence[Item], registry: Registry, profile: Profile, scorer) -> Curves:
    """QualityRoute over the bench's budget sweep with `scorer`, and every static pair, on `m`."""
    from rich.console import Console

    budgets = default_budgets(m, items)
    quiet = Console(file=io.StringIO())  # "nothing fits" warnings are expected in a sweep
    with strategies.fresh_router(registry, strategy="quality", profile=profile, scorer=scorer, console=quiet,
                                 seed=0) as router:
        routed = [strategies.routed(m, items, router, "quality", b) for b in budgets]
    statics = [strategies.static(m, items, p) for p in m.pairs]
    arr = lambda outs, f: np.array([getattr(o, f) for o in outs], dtype=float)  # noqa: E731
    per_task = {task: len(idx) for task, idx in scopes(items).items() if task != "all"}
    weight = np.array([1.0 / per_task[it.task] for it in items])
    return Curves(arr(routed, "latency"), arr(routed, "quality"), arr(statics, "latency"), arr(statics, "quality"),
                  weight)


def scopes(items: Sequence[Item]) -> dict[str, np.ndarray]:
    out = {"all": np.arange(len(items))}
    for task in sorted({it.task for it in items}):
        out[task] = np.array([i for i, it in enumerate(items) if it.task == task])
    return out


def summary(c: Curves, items: Sequence[Item]) -> dict:
    """Gain overall (every task weighing alike) and per task, plus the hypervolume ratio against
    the static frontier."""
    out = {}
    for scope, idx in scopes(items).items():
        curve, base = c.points(idx)
        ref = max(lat for lat, _ in curve + base) * SWEEP.reference
        hv_front = frontier.hypervolume(base, ref)
        out[scope] = {"n": int(len(idx)), "gain_abs": c.gain(idx),
                      "hypervolume_ratio": frontier.hypervolume(curve, ref) / hv_front if hv_front > 0 else None}
    return out


def paired_interval(a: Curves, b: Curves, items: Sequence[Item], resamples: int = 400, seed: int = 0) -> list[float] | None:
    """95% bootstrap interval of gain(a) - gain(b), prompts resampled within each task."""
    rng = np.random.default_rng(seed)
    groups = [idx for scope, idx in scopes(items).items() if scope != "all"]
    diffs = []
    for _ in range(resamples):
        idx = np.concatenate([rng.choice(g, len(g)) for g in groups])
        ga, gb = a.gain(idx), b.gain(idx)
        if ga is not None and gb is not None:
            diffs.append(ga - gb)
    if len(diffs) < resamples // 2:
        return None
    return [float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))]
