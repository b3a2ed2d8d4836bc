"""`qroute chat`: conversation state, slash commands, context trimming, saving, and the two loops.

The pieces run without a terminal: `History` is the conversation, `parse_command` reads a
slash command, `Chat` answers one line at a time and writes through a `View`, so unit tests
drive it on the fake backend. `terminal_loop` (prompt_toolkit) and `stdin_loop` only feed it
lines.

Behaviour worth knowing:
- An answer interrupted with Ctrl-C stays in the conversation with what it had streamed (the
  user saw it, and the verifier's KV cache holds it); one interrupted before its first word is
  dropped together with its question.
- When the conversation outgrows the chosen verifier's context, the oldest turns leave the
  model's context (with a notice), the system message stays; `/save` still writes them all.
  Turns are dropped with headroom so that the next turns can reuse the KV cache again.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable

from qroute_cli.errors import PromptTooLongError, QrouteError, UsageError, did_you_mean
from qroute_cli.output import write_stdout
from qroute_cli.types import Generation, GenerationConfig, Message, RouteDecision, SpecStats

# -- the conversation ----------------------------------------------------------------------


@dataclass(frozen=True)
class Turn:
    """One question and its answer, with what produced it."""

    user: str
    assistant: str
    pair: str = ""
    finish: str = "stop"
    stats: SpecStats | None = None


@dataclass
class History:
    """The conversation: a system message and turns; turns before `first` left the model's context."""

    system: str | None = None
    turns: list[Turn] = field(default_factory=list)
    first: int = 0

    def context(self) -> list[Turn]:
        return self.turns[self.first:]

    def messages(self, user: str | None = None) -> list[Message]:
        """What the model sees: system, the turns still in context, then `user` if given."""
        msgs = [Message("system", self.system)] if self.system else []
        for t in self.context():
            msgs += [Message("user", t.user), Message("assistant", t.assistant)]
        if user is not None:
            msgs.append(Message("user", user))
        return msgs

    def add(self, turn: Turn) -> None:
        self.turns.append(turn)

    def drop_oldest(self) -> bool:
        """Take the oldest turn out of the context; False when none is left."""
        if self.first >= len(self.turns):
            return False
        self.first += 1
        return True

    def reset(self) -> None:
        self.turns.clear()
        self.first = 0

    # -- saving -------------------------------------------------------------------------

    def to_json(self) -> dict:
        """Messages (all turns, ready to feed back) plus per-turn metadata."""
        msgs = [{"role": "system", "content": self.system}] if self.system else []
        turns = []
        for i, t in enumerate(self.turns):
            msgs += [{"role": "user", "content": t.user}, {"role": "assistant", "content": t.assistant}]
            meta = {"pair": t.pair, "finish_reason": t.finish, "in_context": i >= self.first}
            if t.stats is not None:
                meta.update(tokens=t.stats.output_tokens, prompt_tokens=t.stats.prompt_tokens,
                            prompt_cached=t.stats.prompt_cached, ttft_s=round(t.stats.ttft_s, 4),
                            latency_s=round(t.stats.latency_s, 4))
            turns.append(meta)
        return {"format": "qroute-chat", "version": 1, "system": self.system, "messages": msgs, "turns": turns}

    def to_markdown(self) -> str:
        parts = ["# qroute chat\n"]
        if self.system:
            parts.append(f"**System:** {self.system}\n")
        for t in self.turns:
            parts.append(f"## You\n\n{t.user}\n")
            note = f" ({t.pair})" if t.pair else ""
            if t.finish == "interrupted":
                note += " — interrupted"
            parts.append(f"## Assistant{note}\n\n{t.assistant}\n")
        return "\n".join(parts)

    def save(self, path: Path, *, overwrite: bool = False) -> str:
        """Write JSON for *.json, Markdown otherwise; returns the format written.

        Written whole or not at all, owner-only; an existing file is replaced only with
        `overwrite`.
        """
        from qroute_cli import paths

        kind = "json" if path.suffix.lower() == ".json" else "markdown"
        text = json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n" if kind == "json" else self.to_markdown()
        try:
            paths.write_private(path, text, overwrite=overwrite)
        except FileExistsError:
            raise UsageError(f"{path} exists already.", "Replace it with /save FILE --force, or pick another name.") from None
        except OSError as exc:
            raise QrouteError(f"Could not write {path}: {exc.strerror or exc}.", "Pick another file name.") from exc
        return kind


# -- slash commands ------------------------------------------------------------------------

# name -> (usage, what it does); the order is /help's order.
COMMANDS: dict[str, tuple[str, str]] = {
    "pair": ("/pair NAME|auto", "answer with this pair from now on, or route each turn again (auto)"),
    "budget": ("/budget X", "latency budget per turn, e.g. 3s or 800ms"),
    "hard-budget": ("/hard-budget on|off", "stop each answer when the budget runs out, keeping its text so far"),
    "strategy": ("/strategy S", "quality, cost, random or static:PAIR"),
    "explain": ("/explain", "the last routing decision: every candidate and why"),
    "stats": ("/stats", "per-turn speed, time to first token and KV-cache reuse"),
    "system": ("/system TEXT|off", "set (or clear) the system message; alone: show it"),
    "max-tokens": ("/max-tokens N", "most tokens per answer"),
    "reset": ("/reset", "forget the conversation (keeps the system message)"),
    "save": ("/save FILE [--force]", "write the conversation: FILE.json as JSON, anything else as Markdown"),
    "help": ("/help", "this list"),
    "exit": ("/exit", "leave (or Ctrl-D)"),
}
_ALIASES = {"quit": "exit", "q": "exit", "?": "help", "clear": "reset", "max": "max-tokens"}


@dataclass(frozen=True)
class Command:
    name: str
    arg: str = ""


def parse_command(line: str) -> Command | None:
    """'/budget 3s' -> Command('budget', '3s'); a message (or '//…', an escaped slash) -> None."""
    text = line.strip()
    if not text.startswith("/") or text.startswith("//"):
        return None
    name, _, arg = text[1:].partition(" ")
    name = _ALIASES.get(name.lower(), name.lower())
    if name not in COMMANDS:
        hint = did_you_mean(name, list(COMMANDS)) if name else ""
        raise UsageError(f"Unknown command '/{name}'. {hint}".strip(),
                         "Type /help for the list; start a message with // to send a leading '/'.")
    return Command(name, arg.strip())


def message_text(line: str) -> str:
    """The text to send for a line that is not a command ('//x' sends '/x')."""
    text = line.strip()
    return text[1:] if text.startswith("//") else text


def help_text() -> str:
    width = max(len(usage) for usage, _ in COMMANDS.values())
    rows = [f"  {usage.ljust(width)}  {what}" for usage, what in COMMANDS.values()]
    return "\n".join(["Commands:"] + rows + [
        "", "Enter sends; Esc then Enter adds a line. Ctrl-C stops an answer; Ctrl-D leaves.",
    ])


# -- terminal helpers ----------------------------------------------------------------------

_MARKDOWN = re.compile(
    r"^```|^#{1,6} \S|^\s*[-*+] \S|^\s*\d+[.)] \S|\*\*\S.*?\*\*|`[^`\n]+`|\[[^\]\n]+\]\([^)\n]+\)|^\|.*\|\s*$",
    re.M,
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def looks_like_markdown(text: str) -> bool:
    """True when rendering `text` as Markdown would change how it looks."""
    return bool(_MARKDOWN.search(text))


def screen_rows(text: str, width: int) -> int:
    """Terminal rows `text` took when printed from column 0 and followed by one newline."""
    from rich.cells import cell_len

    if text.endswith("\n"):
        text = text[:-1]
    width = max(width, 1)
    return sum(max(1, math.ceil(cell_len(line.expandtabs(8)) / width)) for line in text.split("\n"))


class View:
    """Where a chat writes: answers to stdout (streamed), everything else to the error console.

    On a terminal (`markdown=True`) a finished answer that contains Markdown is redrawn with
    Rich in place of the streamed text, when all of it is still on the screen.
    """

    def __init__(self, out, err, *, write: Callable[[str], None] | None = None, markdown: bool = False,
                 status: bool = True, as_json: bool = False) -> None:
        self.out = out  # a Rich console on stdout
        self.err = err
        self._write_raw = write or write_stdout
        self.markdown = markdown
        self.show_status = status
        self.as_json = as_json
        self._streamed = ""

    def begin(self) -> None:
        self._streamed = ""

    def text(self, piece: str) -> None:
        """A piece of the answer, as it is generated."""
        if self.as_json:
            return
        if self.markdown:  # a model's control characters must not drive the terminal
            piece = _CONTROL.sub("", piece)
        self._streamed += piece
        self._write_raw(piece)

    def end(self, text: str) -> None:
        """The answer is complete: end its line, and redraw it as Markdown where that helps."""
        if self.as_json or not self._streamed:
            return
        if not self._streamed.endswith("\n"):
            self._write_raw("\n")
        if not (self.markdown and looks_like_markdown(text)):
            return
        width, height = self.out.size
        rows = screen_rows(self._streamed, width)
        if rows >= height - 1:
            return  # part of it scrolled away: leave the plain text
        from rich.markdown import Markdown

        self._write_raw(f"\x1b[{rows}F\x1b[J")  # up to the answer's first row, clear below
        self.out.print(Markdown(text))

    def status(self, line: str) -> None:
        if self.show_status:
            self.err.print(line, style="dim", highlight=False, soft_wrap=True)

    def notice(self, text: str) -> None:
        from rich.text import Text

        self.err.print(Text(text, style="yellow"), highlight=False, soft_wrap=True)  # paths may hold [brackets]

    def info(self, renderable) -> None:
        """Output the user asked for (a command's answer): shown even with -q."""
        self.err.print(renderable, highlight=False)

    def error(self, exc: QrouteError) -> None:
        from qroute_cli.render import print_error

        print_error(self.err, exc)

    def json_line(self, obj: dict) -> None:
        self._write_raw(json.dumps(obj, ensure_ascii=False) + "\n")


# -- the chat ------------------------------------------------------------------------------


def turns_table(history: History):
    """/stats: one row per turn (the last 20) with speed, TTFT and how much of the prompt was cached."""
    from rich.table import Table

    table = Table(title="This chat", title_justify="left", caption_justify="left",
                  caption="cached: prompt tokens reused from the verifier's KV cache")
    for col in ("#", "pair", "prompt", "cached", "ttft", "tokens", "tok/s", "latency", "finish"):
        table.add_column(col, justify="left" if col in ("pair", "finish") else "right")
    start = max(0, len(history.turns) - 20)
    for i, t in enumerate(history.turns[start:], start + 1):
        s = t.stats
        if s is None:
            continue
        table.add_row(
            str(i) + ("" if i - 1 >= history.first else "*"), t.pair, str(s.prompt_tokens), str(s.prompt_cached),
            f"{s.ttft_s * 1000:.0f} ms", str(s.output_tokens), f"{s.tokens_per_s:.1f}", f"{s.latency_s:.2f}s",
            t.finish,
        )
    return table


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

    # -- commands ----------------------------------------------------------------------

    def command(self, cmd: Command) -> bool:
        """Run one slash command; False for /exit."""
        from rich.text import Text

        v, arg = self.view, cmd.arg
        if cmd.name == "exit":
            return False
        if cmd.name == "help":
            v.info(help_text())
        elif cmd.name == "pair":
            if not arg:
                v.info(Text(f"Pair: {self.forced_pair or 'auto (routed each turn)'}"))
            elif arg.lower() == "auto":
                self.forced_pair = None
                v.info(Text(f"Pair: auto — each turn is routed ({self.router.strategy_text}, "
                            f"budget {self.router.budget_s:g}s)."))
            else:
                self.forced_pair = self.registry.pair(arg).name
                v.info(Text(f"Pair: {self.forced_pair} for every turn (/pair auto to route again)."))
        elif cmd.name == "budget":
            if arg:
                from qroute_cli.routing.router import parse_budget

                self.router.budget_s = parse_budget(arg)
            v.info(f"Budget: {self.router.budget_s:g}s per turn.")
        elif cmd.name == "hard-budget":
            if arg:
                if arg.lower() not in ("on", "off"):
                    raise UsageError(f"/hard-budget takes on or off, got '{arg}'.")
                self.hard_budget = arg.lower() == "on"
            v.info(f"Hard budget: {'on' if self.hard_budget else 'off'}.")
        elif cmd.name == "strategy":
            if arg:
                self.router.set_strategy(arg)
            v.info(Text(f"Strategy: {self.router.strategy_text}."))
        elif cmd.name == "explain":
            if self.last_decision is None:
                v.info("No turn has been routed yet.")
            else:
                from qroute_cli.render import explain_table

                v.info(explain_table(self.last_decision))
        elif cmd.name == "stats":
            if not self.history.turns:
                v.info("No answers yet.")
            else:
                v.info(turns_table(self.history))
        elif cmd.name == "system":
            if not arg:
                v.info(Text(f"System: {self.history.system or '(none)'}"))
            else:
                self.history.system = None if arg.lower() == "off" else arg
                v.info("System message cleared." if self.history.system is None else "System message set.")
        elif cmd.name == "max-tokens":
            if arg:
                if not arg.isdigit() or int(arg) < 1:
                    raise UsageError(f"/max-tokens needs a positive whole number, got '{arg}'.")
                self.config = replace(self.config, max_tokens=int(arg))
            v.info(f"Max tokens: {self.config.max_tokens} per answer.")
        elif cmd.name == "reset":
            self.history.reset()
            self.last_decision = None
            v.info("Conversation cleared.")
        elif cmd.name == "save":
            words = arg.split(" ")
            force = "--force" in words
            name = " ".join(w for w in words if w != "--force").strip()
            if not name:
                raise UsageError("/save needs a file name.", "e.g. /save chat.md or /save chat.json")
            path = Path(name).expanduser()
            kind = self.history.save(path, overwrite=force)
            v.info(Text(f"Saved {len(self.history.turns)} turns to {path} ({kind})."))
        return True

    # -- answering ---------------------------------------------------------------------

    def ask(self, text: str) -> Generation | None:
        """Route `text` with the conversation as context, stream the answer, remember the turn."""
        from qroute_cli.generation.runner import run_prompt

        self.interrupted = False
        decision = pair = None
        try:
            decision = self.router.decide(self.history.messages(text), max_tokens=self.config.max_tokens,
                                          forced_pair=self.forced_pair)
            self.last_decision = decision
            pair = self.registry.pair(decision.chosen)
            cfg = replace(self.config, max_tokens=decision.max_tokens) if decision.max_tokens else self.config
            if self.hard_budget:
                cfg = replace(cfg, deadline_s=self.router.budget_s)
            if pair.verifier not in self.pool.loaded():
                self.view.status(f"Loading {pair.verifier}…")
            self.fit(pair, text, cfg)
            self.view.begin()
            while True:
                messages = self.history.messages(text)
                try:
                    gen = run_prompt(self.pool, pair, messages, cfg, on_text=self.view.text)
                    break
                except PromptTooLongError:
                    if not self.history.drop_oldest():
                        raise
                    self.view.notice("The conversation no longer fits the context: dropped the oldest turn.")
        except KeyboardInterrupt:  # outside generation (routing, loading, prefill setup)
            self._after_interrupt(pair)
            if self.view.as_json:
                self.view.json_line({"prompt": text, "error": "interrupted", "finish_reason": "interrupted"})
            self.view.notice("Interrupted.")
            return None
        except PromptTooLongError as exc:
            raise PromptTooLongError(exc.message, "Shorten the message, or /system off if the system message is long.")
        if gen.finish_reason == "interrupted":
            self._after_interrupt(pair)
            if not gen.text.strip():
                self.view.end(gen.text)
                self.view.notice("Interrupted before the first word: the question was dropped.")
                return gen
        self.history.add(Turn(text, gen.text, gen.pair, gen.finish_reason, gen.stats))
        self.router.record(decision, gen, messages)
        self.view.end(gen.text)  # after the turn is kept: a Ctrl-C while drawing loses nothing
        if self.view.as_json:
            self.view.json_line(self.turn_json(text, gen, decision))
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
        for name in (pair.verifier, pair.drafter):
            if name in loaded:
                backend = self.pool.get(name)
                backend.truncate(len(backend.tokens))

    def status_line(self, gen: Generation) -> str:
        from qroute_cli.render import stats_line

        s = gen.stats
        line = stats_line(gen, self.router.budget_s)
        return line + f" · cache {s.prompt_cached}/{s.prompt_tokens} prompt tok"

    def turn_json(self, text: str, gen: Generation, decision: RouteDecision) -> dict:
        from qroute_cli.cli.commands.run import result_json

        obj = result_json(text, gen, decision, self.registry, self.pool.last_threads)
        obj["turn"] = len(self.history.turns)
        obj["prompt_cached"] = gen.stats.prompt_cached
        return obj


# -- the loops -----------------------------------------------------------------------------


def stdin_loop(chat: Chat, lines: Iterable[str | QrouteError]) -> int:
    """Scripts: one turn (or slash command) per line; the exit code of the worst error, 130 on Ctrl-C.

    A line that could not be read arrives as its error (inputs.text_lines): it is reported and
    the conversation goes on.
    """
    for line in lines:
        if isinstance(line, QrouteError):
            chat.view.error(line)
            chat.worst_exit = max(chat.worst_exit, line.exit_code)
            continue
        if not chat.handle(line.rstrip("\n")):
            break
        if chat.interrupted:
            return 130
    return chat.worst_exit


def history_file() -> Path:
    from qroute_cli import paths

    return paths.data_dir() / "chat_history"


def input_history(notice: Callable[[str], None], path: Path | None = None):
    """The prompt's up-arrow history: in memory, or in the data dir when prompt logging is on.

    Typed lines are prompts, so they reach the disk only with QROUTE_LOG_PROMPTS=1, like the
    prompt text in the run log, and then in an owner-only file.
    """
    from prompt_toolkit.history import FileHistory, InMemoryHistory

    from qroute_cli import paths

    path = path or history_file()
    if not paths.log_prompts():
        if path.exists():
            paths.private_file(path)  # a file from an older qroute: kept, but owner-only
        return InMemoryHistory()
    try:
        paths.private_dir(path.parent)
        paths.private_file(path)
        return FileHistory(str(path))
    except OSError as exc:
        notice(f"No input history this time ({path}: {exc.strerror or exc}).")
        return InMemoryHistory()


def terminal_loop(chat: Chat, history_path: Path | None = None) -> int:
    """The interactive prompt: line editing, input history (see input_history), Ctrl-C clears the line."""
    from prompt_toolkit import PromptSession
    from prompt_toolkit.formatted_text import FormattedText
    from prompt_toolkit.key_binding import KeyBindings

    keys = KeyBindings()

    @keys.add("escape", "enter")
    def _newline(event) -> None:
        event.current_buffer.insert_text("\n")

    session = PromptSession(history=input_history(chat.view.notice, history_path), key_bindings=keys)

    def prompt() -> FormattedText:
        where = chat.forced_pair or "auto"
        return FormattedText([("ansibrightblack", f"[{where}] "), ("bold ansicyan", "you"), ("", "> ")])

    from rich.text import Text

    r = chat.router
    chat.view.info(Text.assemble(("qroute chat", "bold"), f" · pair {chat.forced_pair or 'auto'} · strategy "
                                 f"{r.strategy_text} · budget {r.budget_s:g}s · /help for commands, Ctrl-D to leave"))
    while True:
        try:
            line = session.prompt(prompt)
        except KeyboardInterrupt:
            continue  # Ctrl-C at the prompt clears the line
        except EOFError:
            break
        try:
            if not chat.handle(line):
                break
        except KeyboardInterrupt:  # a Ctrl-C that landed between an answer and the prompt
            chat.view.notice("Interrupted.")
    return 0


__all__ = [
    "COMMANDS", "Chat", "Command", "History", "Turn", "View", "help_text", "looks_like_markdown",
    "message_text", "parse_command", "screen_rows", "stdin_loop", "terminal_loop", "turns_table",
]
