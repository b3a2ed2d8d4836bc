"""Answer text on stdout, below every layer that prints it (the CLI commands and chat).

Rich consoles (render.py) are for tables and status lines; an answer is written raw and
flushed piece by piece, so it streams through pipes as it is generated.
"""

from __future__ import annotations

import os
import sys


def write_stdout(text: str) -> None:
    """Answer text goes straight out, so it streams through pipes."""
    sys.stdout.write(text)
    sys.stdout.flush()


def silence_stdout() -> None:
    """After the reader closed the pipe, point stdout at /dev/null so exit does not complain."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass
