"""The online-learning loop run for real inside the bench.

The matrix strategies only predict and read measured cells. This runs QualityRoute the way a
user does: a shuffled prompt stream, each prompt routed, generated through llama.cpp, scored,
and fed back with `Router.record` into a fresh learning store (starting from the calibrated
profile and no history), so later prompts are routed with what earlier ones taught. The
per-prompt trace shows whether the latency predictions and the budget hit rate improve
along the stream.
"""

from __future__ import annotations

from typing import Callable, Sequence

from qroute_cli.evaluation.strategies import Outcome, fresh_router, in_item_order, stream_order
from qroute_cli.evaluation.tasks import TASKS, Item


def live_online(pool, items: Sequence[Item], router, budget_s: float, *, seed: int = 0,
                on_run: Callable[[Item, str], None] | None = None) -> Outcome:
    """Route, run and learn over a shuffled stream of `items` at `budget_s`; an Outcome in item order."""
    from qroute_cli.answer import answer
    from qroute_cli.generation.runner import user_messages
    from qroute_cli.types import GenerationConfig

    registry = pool.registry
    order = stream_order(len(items), seed + 1)
    trace = []
    with fresh_router(registry, strategy="quality", budget_s=budget_s, scorer=router.scorer,
                      profile=router.profile, pool=pool, console=router.console, seed=seed) as learner:
        for i in order:
            item = items[i]
            msgs = user_messages(item.prompt)
            margin = learner.online.margin()  # as the decision saw it, before this run is learned
            result = answer(learner, pool, msgs, GenerationConfig(max_tokens=TASKS[item.task].max_tokens,
                                                                  temperature=0.0))
            if result.generation is None:
                raise KeyboardInterrupt  # Ctrl-C before the answer began: the bench stops
            d, gen = result.decision, result.generation
            predicted = d.predicted_latency_s  # with the router's token cap, if any
            quality = float(TASKS[item.task].score(gen.text, item.reference)["quality"])
            trace.append({
                "item": item.id, "task": item.task, "pair": d.chosen, "quality": quality,
                "predicted_latency_s": predicted, "observed_latency_s": gen.stats.latency_s,
                "margin": round(margin, 3), "hit": gen.stats.latency_s <= budget_s,
                "tokens": gen.stats.output_tokens, "overhead_ms": d.overhead_ms,
            })
            if on_run:
                on_run(item, d.chosen)
    rows = in_item_order(order, trace)
    return Outcome("quality", f"{budget_s:g}s", [r["pair"] for r in rows], [r["quality"] for r in rows],
                   [r["observed_latency_s"] for r in rows], budget_s,
                   {"overhead_ms": [r["overhead_ms"] for r in rows], "stream": trace, **stream_summary(trace)},
                   online=True, live=True)


def stream_summary(trace: Sequence[dict]) -> dict:
    """Latency error and budget hit rate in the first and second half of the stream."""
    def part(rows):
        errs = [abs(r["predicted_latency_s"] - r["observed_latency_s"]) / r["observed_latency_s"]
                for r in rows if r["predicted_latency_s"] and r["observed_latency_s"] > 0]
        return {
            "n": len(rows),
            "latency_mape": round(sum(errs) / len(errs), 4) if errs else None,  # a mean, not a median
            "hit_rate": round(sum(r["hit"] for r in rows) / len(rows), 4) if rows else None,
        }

    half = len(trace) // 2
    return {"first_half": part(trace[:half]), "second_half": part(trace[half:])}
