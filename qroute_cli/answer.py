"""One call answers one prompt: route it, run the chosen pair, learn from the run.

`qroute run`, `qroute chat`, the bench's live loop and the latency bench all answer through
`answer()`; they only render what it returns. The sequence it keeps in one place: the router
decides (and may cap the answer length to fit the budget), the pair runs with the cap, and the
router records the run against the prediction the decision carries.

Errors a user can act on raise `QrouteError` as everywhere else. A Ctrl-C is not an error: it
ends the answer with the outcome "interrupted" (with the text so far when generation had begun).

A pair on a remote endpoint runs through that endpoint (qroute_cli/endpoints/). When the
endpoint fails (refused, timed out, an error, a broken answer) before any of its text reached
`on_text`, the endpoint is left out for a while and the prompt is routed again among the pairs
that are left: the answer says which pairs failed over. Text already shown cannot be taken
back, so a failure after it is an EndpointError, unless the caller showed nobody the text yet
(`restart=True`, e.g. a response that is sent whole): then the next pair answers from the start.
A pinned pair (`forced_pair`) is not routed, so its failure is the caller's error.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Literal, Sequence

from qroute_cli.generation.engine import OnText
from qroute_cli.generation.pool import ModelPool
from qroute_cli.errors import EndpointError
from qroute_cli.generation.runner import run_prompt
from qroute_cli.routing.router import Router
from qroute_cli.types import Generation, GenerationConfig, Message, Pair, RouteDecision

# "ok": the answer ended by itself (stop or length); "deadline": --hard-budget cut it;
# "interrupted": Ctrl-C, before the answer began (no generation) or during it (partial text).
Outcome = Literal["ok", "interrupted", "deadline"]

# Called once the router has decided, before the pair runs, with the decision, the pair and
# the config it will run with (capped): a caller renders the decision here (--explain), or
# returns other messages to answer (chat drops its oldest turns to fit the chosen verifier's
# context). None keeps the messages.
BeforeRun = Callable[[RouteDecision, Pair, GenerationConfig], "Sequence[Message] | None"]


@dataclass(frozen=True)
class Failover:
    """A pair whose endpoint failed this prompt before another pair answered it."""

    pair: str
    endpoint: str
    error: str  # the one-line error

    def to_json(self) -> dict[str, str]:
        return {"pair": self.pair, "endpoint": self.endpoint, "error": self.error}


@dataclass(frozen=True)
class Answer:
    """One routed answer: the decision, the generation and the llama.cpp threads it ran with."""

    decision: RouteDecision | None  # None: interrupted before the router decided
    generation: Generation | None  # None: interrupted before the answer began
    pair: Pair | None = None
    threads: int | None = None  # llama.cpp threads used (fewer than cores when others were busy)
    failovers: tuple[Failover, ...] = ()  # pairs that failed this prompt first, in order

    @property
    def outcome(self) -> Outcome:
        if self.generation is None or self.generation.finish_reason == "interrupted":
            return "interrupted"
        return "deadline" if self.generation.finish_reason == "deadline" else "ok"

    def to_json(self, prompt: str | None) -> dict[str, Any]:
        """The documented `qroute run --json` shape of this answer."""
        gen, pair = self.generation, self.pair
        if gen is None or pair is None or self.decision is None:
            return {"prompt": prompt, "error": "interrupted", "finish_reason": "interrupted"}
        s = gen.stats
        return {
            "prompt": prompt,
            "text": gen.text,
            "pair": pair.name,
            "verifier": pair.verifier,
            "drafter": pair.drafter,
            "tokens": s.output_tokens,
            "prompt_tokens": s.prompt_tokens,
            "latency_s": round(s.latency_s, 4),
            "ttft_s": round(s.ttft_s, 4),
            "tokens_per_s": round(s.tokens_per_s, 2),
            "drafted": s.drafted,
            "accepted": s.accepted,
            "acceptance": None if s.acceptance is None else round(s.acceptance, 4),
            "finish_reason": gen.finish_reason,
            "threads": self.threads,
            "endpoint": pair.endpoint,
            "failovers": [f.to_json() for f in self.failovers],
            "route": self.decision.to_json(),
        }


def answer(
    router: Router,
    pool: ModelPool,
    messages: Sequence[Message],
    config: GenerationConfig,
    on_text: OnText | None = None,
    *,
    forced_pair: str | None = None,
    before_run: BeforeRun | None = None,
    learn: bool = True,
    restart: bool = False,
) -> Answer:
    """Route `messages`, run the chosen pair (streaming through `on_text`) and record the run
    (`learn=False`: neither logged nor learned from, as in a bench's control run). `restart`:
    the text streamed so far was shown to nobody, so a pair that fails mid-answer may be
    replaced by the next one from the start."""
    decision = pair = None
    failovers: list[Failover] = []
    original = messages
    try:
        while True:
            decision = router.decide(original, max_tokens=config.max_tokens, forced_pair=forced_pair)
            cfg = replace(config, max_tokens=decision.max_tokens) if decision.max_tokens else config
            pair = pool.registry.pair(decision.chosen)
            if before_run is not None:
                messages = before_run(decision, pair, cfg) or original
            try:
                gen = _run(router, pool, pair, decision, messages, cfg, on_text)
                break
            except EndpointError as exc:
                router.endpoint_failed(exc, pair.name)
                shown = exc.shown and not restart and on_text is not None
                again = any(f.pair == pair.name for f in failovers)  # its endpoint is back already
                if forced_pair is not None or shown or again or not exc.endpoint_fault:
                    raise
                failovers.append(Failover(pair.name, exc.endpoint, exc.message))
    except KeyboardInterrupt:  # while routing or loading; the token loop keeps its own partial text
        return Answer(decision, None, pair, pool.last_threads, tuple(failovers))
    if learn and (gen.finish_reason != "interrupted" or gen.stats.output_tokens > 0):
        # An answer stopped before its first token teaches nothing: its time is the user's.
        router.record(decision, gen, messages)
    return Answer(decision, gen, pair, pool.last_threads, tuple(failovers))


def _run(router: Router, pool: ModelPool, pair: Pair, decision: RouteDecision, messages: Sequence[Message],
         config: GenerationConfig, on_text: OnText | None) -> Generation:
    """Run `pair`: on its endpoint, or here through llama.cpp."""
    if pair.remote:
        return router.endpoints.run(pair, messages, config, on_text)
    run = decision.predicted  # the pair drafts by the cost curve and acceptance it was predicted with
    return run_prompt(pool, pair, messages, config, on_text=on_text, costs=run and run.costs,
                      acceptance=run and run.acceptance)
