"""The two ways lines reach a chat: the interactive prompt (prompt_toolkit) and piped stdin."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

from qroute_cli.chat.session import Chat
from qroute_cli.errors import QrouteError


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
