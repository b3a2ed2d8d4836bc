"""One chat session: a line in, a slash command run or a routed answer streamed out.

`Chat` answers through `qroute_cli.answer.answer` with the conversation as context and writes
only through its `View`, so unit tests drive it on the fake backend without a terminal.

Behaviour worth knowing:
- An answer interrupted with Ctrl-C stays in the conversation with what it had streamed (the
  user saw it, and the verifier's KV cache holds it); one interrupted before its first word is
  dropped together with its question.
- When the conversation outgrows the chosen verifier's context, the oldest turns leave the
  model's context (with a notice), the system message stays; `/save` still writes them all.
  Turns are dropped with headroom so that the next turns can reuse the KV cache again.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from qroute_cli.chat.history import History, Turn
from qroute_cli.chat.slash import Command, message_text, parse_command, run_command
from qroute_cli.chat.view import View
from qroute_cli.errors import PromptTooLongError, QrouteError
from qroute_cli.types import Generation, GenerationConfig, Message, Pair, RouteDecision


@dataclass
class Chat:
    """One chat session: routes and answers each line, or runs a slash command.

    `handle(line)` returns False when the user asked to leave; `worst_exit` keeps the exit code
    of the worst error (the stdin mode exits with it).
    """

    pool: object  # ModelPool
    router: object  # routing.Router
    config: GenerationConfig
    view: View
    history: History = field(default_factory=History)
    forced_pair: str | None = None
    last_decision: RouteDecision | None = None
    worst_exit: int = 0
    interrupted: bool = False  # the last answer was stopped with Ctrl-C
    hard_budget: bool = False  # answers stop at the budget (finish reason "deadline")

    @property
    def registry(self):
        return self.pool.registry

    def handle(self, line: str) -> bool:
        """One input line: a slash command or a message. False means leave."""
        from qroute_cli.inputs import check_text

        text = None
        try:
            check_text(line, "That line")  # bytes a terminal could not decode: refuse the line, keep the chat
            cmd = parse_command(line)
            if cmd is not None:
                return self.command(cmd)
            text = message_text(line)
            if text:
                self.ask(text)
        except QrouteError as exc:
            if self.view.as_json and text:
                self.view.json_line({"prompt": text, "error": exc.message, "hint": exc.hint})
            self.view.error(exc)
            self.worst_exit = max(self.worst_exit, exc.exit_code)
        return True

    def command(self, cmd: Command) -> bool:
        """Run one slash command (see chat/slash.py); False for /exit."""
        return run_command(self, cmd)

    # -- answering ---------------------------------------------------------------------

    def ask(self, text: str) -> Generation | None:
        """Route `text` with the conversation as context, stream the answer, remember the turn."""
        from qroute_cli.answer import answer

        self.interrupted = False
        config = replace(self.config, deadline_s=self.router.budget_s) if self.hard_budget else self.config

        def before_run(decision: RouteDecision, pair: Pair, cfg: GenerationConfig) -> list[Message]:
            self.last_decision = decision
            if not pair.remote:  # a pair on an endpoint: the server holds the model and its context
                if pair.verifier not in self.pool.loaded():
                    self.view.status(f"Loading {pair.verifier}…")
                self.fit(pair, text, cfg)
            self.view.begin()
            return self.history.messages(text)

        try:
            while True:
                try:
                    result = answer(self.router, self.pool, self.history.messages(text), config, self.view.text,
                                    forced_pair=self.forced_pair, before_run=before_run)
                    break
                except PromptTooLongError:
                    # The engine's own check, stricter than fit()'s: one turn fewer, then answer again
                    # (fit() raises only once no turn is left to drop).
                    if not self.history.drop_oldest():
                        raise
                    self.view.notice("The conversation no longer fits the context: dropped the oldest turn.")
        except PromptTooLongError as exc:
            raise PromptTooLongError(exc.message, "Shorten the message, or /system off if the system message is long.")
        gen = result.generation
        if gen is None:  # interrupted outside generation (routing, loading, prefill setup)
            self._after_interrupt(result.pair)
            if self.view.as_json:
                self.view.json_line(result.to_json(text))
            self.view.notice("Interrupted.")
            return None
        if gen.finish_reason == "interrupted":
            self._after_interrupt(result.pair)
            if not gen.text.strip():
                self.view.end(gen.text)
                self.view.notice("Interrupted before the first word: the question was dropped.")
                return gen
        self.history.add(Turn(text, gen.text, gen.pair, gen.finish_reason, gen.stats))
        self.view.end(gen.text)  # after the turn is kept: a Ctrl-C while drawing loses nothing
        if self.view.as_json:
            obj = result.to_json(text)
            obj["turn"] = len(self.history.turns)
            obj["prompt_cached"] = gen.stats.prompt_cached
            self.view.json_line(obj)
        self.view.status(self.status_line(gen))
        return gen

    def fit(self, pair, text: str, cfg: GenerationConfig) -> int:
        """Drop the oldest turns until prompt + answer fit the verifier's context; returns how many."""
        from qroute_cli.generation.runner import CTX_MARGIN, prompt_tokens

        backend = self.pool.get(pair.verifier)
        spec = self.registry.model(pair.verifier)
        n_ctx = backend.n_ctx
        fixed = CTX_MARGIN + cfg.draft_max  # the room run_prompt keeps for a verify batch
        reserve = min(cfg.max_tokens, n_ctx // 4) + fixed

        def size() -> int:
            return len(prompt_tokens(backend, spec, self.history.messages(text))[0])

        n = size()
        if n + reserve <= n_ctx:
            return 0
        # Drop with headroom (a quarter of the context) so the next turns reuse the cache again.
        target = max(n_ctx - reserve - n_ctx // 4, 0)
        dropped = 0
        while n > target and self.history.drop_oldest():
            dropped += 1
            n = size()
        if dropped:
            self.view.notice(
                f"The conversation outgrew {pair.verifier}'s context ({n_ctx} tokens): the oldest "
                f"{dropped} turn{'s' if dropped > 1 else ''} left the model's context (/save keeps them)."
            )
        if n + fixed >= n_ctx:
            raise PromptTooLongError(
                f"This message needs {n} tokens with the system message; {pair.verifier} has a context of {n_ctx}.",
                "Shorten the message, or /system off if the system message is long.",
            )
        return dropped

    def _after_interrupt(self, pair) -> None:
        """An interrupt can land between a llama.cpp decode and its bookkeeping: drop any KV
        entries past the tokens the backend knows, so the next turn starts from a clean cache."""
        self.interrupted = True
        if pair is None:
            return
        loaded = set(self.pool.loaded())
        for name, draft in ((pair.verifier, False), (pair.drafter, True)):
            if self.pool.slot(name, draft) in loaded:  # a drafter placed apart is a copy of its own
                backend = self.pool.get(name, draft=draft)
                backend.truncate(len(backend.tokens))

    def status_line(self, gen: Generation) -> str:
        from qroute_cli.render import stats_line

        s = gen.stats
        line = stats_line(gen, self.router.budget_s)
        return line + f" · cache {s.prompt_cached}/{s.prompt_tokens} prompt tok"
