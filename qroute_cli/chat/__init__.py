"""`qroute chat`: the conversation, its slash commands, the terminal view and the input loops."""

from qroute_cli.chat.session import (
    COMMANDS, Chat, Command, History, Turn, View, help_text, input_history, looks_like_markdown, message_text,
    parse_command, screen_rows, stdin_loop, terminal_loop, turns_table,
)

__all__ = [
    "COMMANDS", "Chat", "Command", "History", "Turn", "View", "help_text", "input_history", "looks_like_markdown",
    "message_text", "parse_command", "screen_rows", "stdin_loop", "terminal_loop", "turns_table",
]
