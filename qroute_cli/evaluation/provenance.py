"""What made a results file: the code, the machine, the threads and the command.

Every file the bench writes records this, so a figure can be traced to the code that made it
and a report can tell a section made by other code from a fresh one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

# The source tree when qroute runs from a checkout (an installed copy has no git).
SOURCE_ROOT = Path(__file__).resolve().parents[2]


def git_state(root: Path = SOURCE_ROOT) -> tuple[str, bool]:
    """(HEAD's commit, whether tracked files differ from it), results files not counted:
    a bench rewriting bench/results is not a change to the code. ('unknown', False) outside git."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()

    try:
        head = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/results")
    except (OSError, subprocess.CalledProcessError):
        return "unknown", False
    return head, bool(dirty)


def source_commit(root: Path = SOURCE_ROOT) -> str:
    """HEAD's commit, with '+dirty' when tracked code differs from it."""
    head, dirty = git_state(root)
    return head + ("+dirty" if dirty else "")


def record(command: str | None = None, threads: int | None = None) -> dict:
    """The provenance fields every results file carries."""
    from qroute_cli import __version__
    from qroute_cli.routing.latency import cpu_model, llama_cpp_build

    return {
        "commit": source_commit(),
        "qroute": __version__,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": cpu_model(),
        "cores": os.cpu_count(),
        "threads": threads,
        "llama_cpp": llama_cpp_build(),
        "command": command if command is not None else " ".join(["qroute", *sys.argv[1:]]),
    }
