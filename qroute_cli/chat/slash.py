"""Slash commands: one table row per command (name, arguments, help, handler); /help is drawn from it.

A handler takes the chat and the text after the command's name, changes the chat's settings
and shows the result with `chat.view.info`. It raises `QrouteError` for bad input (the chat
reports it and goes on) and returns False only to end the chat.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from rich.text import Text

from qroute_cli.chat.view import turns_table
from qroute_cli.errors import UsageError, did_you_mean

if TYPE_CHECKING:
    from qroute_cli.chat.session import Chat


@dataclass(frozen=True)
class Command:
    """A slash command as typed: '/budget 3s' is Command('budget', '3s')."""

    name: str
    arg: str = ""


@dataclass(frozen=True)
class SlashCommand:
    """One row of the table: how the command is typed, what /help says, what it does."""

    name: str
    args: str  # its arguments as /help shows them ("" for none)
    help: str
    handler: Callable[[Chat, str], bool | None]  # False ends the chat

    @property
    def usage(self) -> str:
        return f"/{self.name} {self.args}".rstrip()


# -- handlers ------------------------------------------------------------------------------


def _pair(chat: Chat, arg: str) -> None:
    if not arg:
        chat.view.info(Text(f"Pair: {chat.forced_pair or 'auto (routed each turn)'}"))
    elif arg.lower() == "auto":
        chat.forced_pair = None
        chat.view.info(Text(f"Pair: auto — each turn is routed ({chat.router.strategy_text}, "
                            f"budget {chat.router.budget_s:g}s)."))
    else:
        chat.forced_pair = chat.registry.pair(arg).name
        chat.view.info(Text(f"Pair: {chat.forced_pair} for every turn (/pair auto to route again)."))


def _budget(chat: Chat, arg: str) -> None:
    if arg:
        from qroute_cli.routing.router import parse_budget

        chat.router.budget_s = parse_budget(arg)
    chat.view.info(f"Budget: {chat.router.budget_s:g}s per turn.")


def _hard_budget(chat: Chat, arg: str) -> None:
    if arg:
        if arg.lower() not in ("on", "off"):
            raise UsageError(f"/hard-budget takes on or off, got '{arg}'.")
        chat.hard_budget = arg.lower() == "on"
    chat.view.info(f"Hard budget: {'on' if chat.hard_budget else 'off'}.")


def _strategy(chat: Chat, arg: str) -> None:
    if arg:
        chat.router.set_strategy(arg)
    chat.view.info(Text(f"Strategy: {chat.router.strategy_text}."))


def _explain(chat: Chat, arg: str) -> None:
    if chat.last_decision is None:
        chat.view.info("No turn has been routed yet.")
    else:
        from qroute_cli.render import explain_table

        chat.view.info(explain_table(chat.last_decision))


def _stats(chat: Chat, arg: str) -> None:
    if not chat.history.turns:
        chat.view.info("No answers yet.")
    else:
        chat.view.info(turns_table(chat.history))


def _system(chat: Chat, arg: str) -> None:
    if not arg:
        chat.view.info(Text(f"System: {chat.history.system or '(none)'}"))
    else:
        chat.history.system = None if arg.lower() == "off" else arg
        chat.view.info("System message cleared." if chat.history.system is None else "System message set.")


def _max_tokens(chat: Chat, arg: str) -> None:
    if arg:
        if not arg.isdigit() or int(arg) < 1:
            raise UsageError(f"/max-tokens needs a positive whole number, got '{arg}'.")
        chat.config = replace(chat.config, max_tokens=int(arg))
    chat.view.info(f"Max tokens: {chat.config.max_tokens} per answer.")


def _reset(chat: Chat, arg: str) -> None:
    chat.history.reset()
    chat.last_decision = None
    chat.view.info("Conversation cleared.")


def _save(chat: Chat, arg: str) -> None:
    words = arg.split(" ")
    force = "--force" in words
    name = " ".join(w for w in words if w != "--force").strip()
    if not name:
        raise UsageError("/save needs a file name.", "e.g. /save chat.md or /save chat.json")
    path = Path(name).expanduser()
    kind = chat.history.save(path, overwrite=force)
    chat.view.info(Text(f"Saved {len(chat.history.turns)} turns to {path} ({kind})."))


def _help(chat: Chat, arg: str) -> None:
    chat.view.info(help_text())


def _exit(chat: Chat, arg: str) -> bool:
    return False


# The order is /help's order.
SLASH_COMMANDS: dict[str, SlashCommand] = {c.name: c for c in [
    SlashCommand("pair", "NAME|auto", "answer with this pair from now on, or route each turn again (auto)", _pair),
    SlashCommand("budget", "X", "latency budget per turn, e.g. 3s or 800ms", _budget),
    SlashCommand("hard-budget", "on|off", "stop each answer when the budget runs out, keeping its text so far",
                 _hard_budget),
    SlashCommand("strategy", "S", "quality, cost, random or static:PAIR", _strategy),
    SlashCommand("explain", "", "the last routing decision: every candidate and why", _explain),
    SlashCommand("stats", "", "per-turn speed, time to first token and KV-cache reuse", _stats),
    SlashCommand("system", "TEXT|off", "set (or clear) the system message; alone: show it", _system),
    SlashCommand("max-tokens", "N", "most tokens per answer", _max_tokens),
    SlashCommand("reset", "", "forget the conversation (keeps the system message)", _reset),
    SlashCommand("save", "FILE [--force]", "write the conversation: FILE.json as JSON, anything else as Markdown",
                 _save),
    SlashCommand("help", "", "this list", _help),
    SlashCommand("exit", "", "leave (or Ctrl-D)", _exit),
]}
_ALIASES = {"quit": "exit", "q": "exit", "?": "help", "clear": "reset", "max": "max-tokens"}


def parse_command(line: str) -> Command | None:
    """'/budget 3s' -> Command('budget', '3s'); a message (or '//…', an escaped slash) -> None."""
    text = line.strip()
    if not text.startswith("/") or text.startswith("//"):
        return None
    name, _, arg = text[1:].partition(" ")
    name = _ALIASES.get(name.lower(), name.lower())
    if name not in SLASH_COMMANDS:
        hint = did_you_mean(name, list(SLASH_COMMANDS)) if name else ""
        raise UsageError(f"Unknown command '/{name}'. {hint}".strip(),
                         "Type /help for the list; start a message with // to send a leading '/'.")
    return Command(name, arg.strip())


def run_command(chat: Chat, cmd: Command) -> bool:
    """Run one slash command on `chat`; False for /exit."""
    return SLASH_COMMANDS[cmd.name].handler(chat, cmd.arg) is not False


def message_text(line: str) -> str:
    """The text to send for a line that is not a command ('//x' sends '/x')."""
    text = line.strip()
    return text[1:] if text.startswith("//") else text


def help_text() -> str:
    width = max(len(c.usage) for c in SLASH_COMMANDS.values())
    rows = [f"  {c.usage.ljust(width)}  {c.help}" for c in SLASH_COMMANDS.values()]
    return "\n".join(["Commands:"] + rows + [
        "", "Enter sends; Esc then Enter adds a line. Ctrl-C stops an answer; Ctrl-D leaves.",
    ])
