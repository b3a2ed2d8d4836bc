"""`qroute chat`: a routed multi-turn conversation in the terminal or over stdin.

  history.py  the conversation (turns, what is still in the model's context) and /save's formats
  view.py     where a chat writes: the streamed answer, its Markdown redraw, status lines, /stats
  slash.py    the slash commands: one table of name, arguments, help and handler; /help reads it
  session.py  Chat: one line in, a command run or an answer (qroute_cli.answer) streamed out
  loop.py     the interactive prompt (prompt_toolkit) and the stdin loop that feed Chat lines

Each module imports only those above it in this list. Nothing here imports the CLI
(qroute_cli.cli), which sits on top and builds a Chat.
"""

from qroute_cli.chat.history import History, Turn
from qroute_cli.chat.loop import input_history, stdin_loop, terminal_loop
from qroute_cli.chat.session import Chat
from qroute_cli.chat.slash import SLASH_COMMANDS, Command, SlashCommand, help_text, message_text, parse_command
from qroute_cli.chat.view import View, looks_like_markdown, screen_rows, turns_table

__all__ = [
    "SLASH_COMMANDS", "Chat", "Command", "History", "SlashCommand", "Turn", "View", "help_text", "input_history",
    "looks_like_markdown", "message_text", "parse_command", "screen_rows", "stdin_loop", "terminal_loop",
    "turns_table",
]
