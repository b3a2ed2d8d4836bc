"""Strategies evaluated on one result matrix: each yields, per prompt, the pair it would run.

`quality`, `cost` and `random` ask qroute's own Router (predictions only, nothing runs);
`oracle` looks at the measured matrix in hindsight; `bandit` learns online over the prompt
stream from the rewards it observes; `ensemble` runs every verifier and keeps one answer.
"""

from __future__ import annotations

import random
import tempfile
from collections import Counter, defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, Sequence

from qroute_cli import numeric
from qroute_cli.errors import QrouteError
from qroute_cli.evaluation.matrix import Matrix
from qroute_cli.evaluation.tasks import TASKS, Item


@dataclass
class Outcome:
    """A strategy at one setting: per-prompt choices and what they cost and earned."""

    strategy: str  # "static", "oracle", "random", "bandit", "ensemble", "cost" or "quality"
    setting: str
    choices: list[str]  # pair per item ("ensemble" rows name the answer's pair)
    quality: list[float]
    latency: list[float]
    budget_s: float | None = None
    extra: dict = field(default_factory=dict)
    scorer: str | None = None  # an ablation's scorer; None: the router's own predictor
    online: bool = False  # the router learned from every chosen run over the prompt stream
    live: bool = False  # generated for real, not read off the matrix

    @property
    def label(self) -> str:
        """The name tables, JSON rows and the ablation summary show, e.g. 'quality [prior]'."""
        return (self.strategy + ("+online" if self.online else "") + (f" [{self.scorer}]" if self.scorer else "")
                + (" (live)" if self.live else ""))

    @property
    def is_plain_quality(self) -> bool:
        """QualityRoute as shipped: its own predictor, no learning, replayed on the matrix."""
        return self.strategy == "quality" and self.scorer is None and not self.online and not self.live

    @property
    def mean_quality(self) -> float:
        return sum(self.quality) / max(len(self.quality), 1)

    @property
    def mean_latency(self) -> float:
        return sum(self.latency) / max(len(self.latency), 1)

    def percentile(self, p: float) -> float:
        """The nearest-rank p-th percentile of the latencies (numeric.percentile); 0 without any."""
        return numeric.percentile(self.latency, p) if self.latency else 0.0

    @property
    def hit_rate(self) -> float | None:
        if self.budget_s is None:
            return None
        return sum(lat <= self.budget_s for lat in self.latency) / max(len(self.latency), 1)


@contextmanager
def fresh_router(registry, **kwargs) -> Iterator:
    """A Router (with `kwargs`) whose learning store starts empty, in a temporary directory:
    bench figures never depend on what the user ran before. Its budget sweep goes below what any
    pair can do on purpose, so a route over budget is not warned of (thousands of lines)."""
    from qroute_cli.routing.router import Router
    from qroute_cli.routing.runlog import Store

    with tempfile.TemporaryDirectory(prefix="qroute-bench-") as tmp:
        store = Store(Path(tmp) / "runs.sqlite")
        router = Router(registry, store=store, **{"warn_over_budget": False, **kwargs})
        try:
            yield router
        finally:
            router.close()
            store.close()


def stream_order(n: int, seed: int) -> list[int]:
    """Item indices in the shuffled order a user might send them."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order


def in_item_order(order: Sequence[int], values: Sequence) -> list:
    """Values listed in stream `order` back in item order."""
    out = [None] * len(order)
    for position, i in enumerate(order):
        out[i] = values[position]
    return out


def from_choices(m: Matrix, items: Sequence[Item], strategy: str, setting: str, choices: list[str],
                 budget_s: float | None = None) -> Outcome:
    cells = [m.cell(it, p) for it, p in zip(items, choices)]
    return Outcome(strategy, setting, choices, [c.quality for c in cells], [c.latency_s for c in cells], budget_s)


def static(m: Matrix, items: Sequence[Item], pair: str) -> Outcome:
    return from_choices(m, items, "static", pair, [pair] * len(items))


def oracle(m: Matrix, items: Sequence[Item], budget_s: float | None) -> Outcome:
    """Best measured quality among pairs that met the budget (ties: faster); else the fastest."""
    choices = []
    for it in items:
        cells = {p: m.cell(it, p) for p in m.pairs}
        fit = [p for p, c in cells.items() if budget_s is None or c.latency_s <= budget_s]
        if fit:
            best = max(cells[p].quality for p in fit)
            choices.append(min((p for p in fit if cells[p].quality >= best - 1e-9), key=lambda p: cells[p].latency_s))
        else:
            choices.append(min(cells, key=lambda p: cells[p].latency_s))
    label = "no budget" if budget_s is None else f"{budget_s:g}s"
    return from_choices(m, items, "oracle", label, choices, budget_s)


def random_choice(m: Matrix, items: Sequence[Item], seed: int) -> Outcome:
    rng = random.Random(seed)
    return from_choices(m, items, "random", f"seed {seed}", [rng.choice(m.pairs) for _ in items])


def bandit(m: Matrix, items: Sequence[Item], lam: float, seed: int = 0, explore: float = 0.1) -> Outcome:
    """MetaLLM-style: per-pair reward = quality - lam x latency, learned online (epsilon-greedy
    with optimistic start) over the prompt stream; it sees each reward only after choosing."""
    rng = random.Random(seed)
    total: dict[str, float] = defaultdict(float)
    count: Counter = Counter()
    choices = []
    for it in items:
        untried = [p for p in m.pairs if count[p] == 0]
        if untried:
            pick = untried[0]
        elif rng.random() < explore:
            pick = rng.choice(m.pairs)
        else:
            pick = max(m.pairs, key=lambda p: total[p] / count[p])
        c = m.cell(it, pick)
        total[pick] += c.quality - lam * c.latency_s
        count[pick] += 1
        choices.append(pick)
    return from_choices(m, items, "bandit", f"lambda {lam:g}", choices)


def ensemble(m: Matrix, items: Sequence[Item], verifier_pairs: Sequence[str]) -> Outcome:
    """LLM-Blender-style: run every verifier (plain pairs, one after another on this machine),
    keep the answer the others agree with most (the task's consensus); latency is the sum of all runs."""
    choices, quality, latency = [], [], []
    for it in items:
        texts = {p: m.cell(it, p).text for p in verifier_pairs}
        pick = TASKS[it.task].consensus(texts)
        choices.append(pick)
        quality.append(m.cell(it, pick).quality)
        latency.append(sum(m.cell(it, p).latency_s for p in verifier_pairs))
    return Outcome("ensemble", f"{len(verifier_pairs)} verifiers", choices, quality, latency)


def _as_generation(cell, pair: str):
    from qroute_cli.types import Generation, SpecStats

    stats = SpecStats(prompt_tokens=cell.prompt_tokens, output_tokens=cell.tokens, ttft_s=cell.ttft_s,
                      latency_s=cell.latency_s, drafted=cell.drafted, accepted=cell.accepted)
    return Generation(text=cell.text, tokens=(), stats=stats, finish_reason="stop", pair=pair)


def why(d) -> str:
    """The kind of reason behind a routing decision, for the bench's routing analysis."""
    if d.max_tokens is not None:
        return "nothing fits: answer capped"
    fitting = [c for c in d.candidates if c.fits]
    if not fitting:
        return "nothing fits: fastest"
    chosen = next((c for c in fitting if c.pair == d.chosen), None)
    if chosen is None:
        return "other"
    if chosen.predicted_quality >= max(c.predicted_quality for c in fitting) - 1e-9:
        return "best predicted quality that fits"
    return "near-best quality, faster"


def capped(cell, cap: int | None, task: str, reference):
    """The cell as if the router's token cap had applied, simulated: the text cut in proportion
    (by characters) and scored again, the decode time scaled. Only for a replay of a matrix that
    lacks the capped cell; `routed` counts every answer it makes this way."""
    if not cap or cap >= cell.tokens or cell.tokens <= 0:
        return cell
    share = cap / cell.tokens
    text = cell.text[: int(len(cell.text) * share)]
    scores = TASKS[task].score(text, reference)
    latency = cell.ttft_s + (cell.latency_s - cell.ttft_s) * share
    return replace(cell, text=text, tokens=cap, latency_s=latency, scores=scores, quality=float(scores["quality"]),
                   drafted=int(cell.drafted * share), accepted=int(cell.accepted * share))


def routed(m: Matrix, items: Sequence[Item], router, strategy: str, budget_s: float | None,
           setting: str | None = None, learn: bool = False) -> Outcome:
    """Ask qroute's Router for each prompt (predictions only) and read the result off the matrix.

    When the router caps the answer length (no pair fits the budget), the answer is the one
    generated with that cap (`Matrix.capped_cell`, run now when the matrix has a store); only
    where it was never measured (a replay of an older matrix) is it simulated (`capped`), and
    `extra["simulated"]` marks those prompts. With `learn`, every chosen run's outcome is fed back through
    `router.record` as it would be in live use, so later decisions use the learned estimates.
    The router must weigh only the matrix's pairs: a choice the matrix did not run is an error.
    """
    from qroute_cli.generation.runner import user_messages

    router.set_strategy(strategy)
    router.budget_s = budget_s  # None: no budget, every pair fits (the policy reads it so)
    choices, quality, latency, overhead, reasons, simulated = [], [], [], [], [], []
    for it in items:
        msgs = user_messages(it.prompt)
        d = router.decide(msgs, max_tokens=TASKS[it.task].max_tokens)
        chosen = d.chosen
        if chosen not in m.pairs:
            raise QrouteError(f"The router chose {chosen}, a pair the result matrix did not run.",
                              "Route the bench with a registry of the matrix's pairs only.")
        cell = m.cell(it, chosen)
        measured = True
        if d.max_tokens is not None and d.max_tokens < TASKS[it.task].max_tokens:
            measured_cell = m.capped_cell(it, chosen, d.max_tokens)
            measured = measured_cell is not None
            cell = measured_cell if measured else capped(cell, d.max_tokens, it.task, it.reference)
        simulated.append(not measured)
        choices.append(chosen)
        quality.append(cell.quality)
        latency.append(cell.latency_s)
        overhead.append(d.overhead_ms)
        reasons.append(why(d))
        if learn:
            router.record(d, _as_generation(cell, chosen), msgs)
    label = setting or (f"{budget_s:g}s" if budget_s is not None else strategy)
    out = Outcome(strategy, label, choices, quality, latency, budget_s)
    out.extra["overhead_ms"] = overhead
    out.extra["why"] = reasons
    out.extra["simulated"] = simulated
    return out


def simulated_counts(outcomes: Sequence[Outcome]) -> dict:
    """How much of the routed results is simulated (a capped answer the matrix never ran):
    answers, and points (an outcome with any simulated answer), of all routed ones."""
    routed_outs = [o for o in outcomes if "simulated" in o.extra]
    flags = [f for o in routed_outs for f in o.extra["simulated"]]
    return {"answers": sum(flags), "answers_routed": len(flags),
            "points": sum(any(o.extra["simulated"]) for o in routed_outs), "points_routed": len(routed_outs)}
