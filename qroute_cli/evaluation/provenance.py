"""What made a results file: the code, the machine, the threads and the command.

Every file the bench writes records this, so a figure can be traced to the code that made it
and a report can tell a section made by other code from a fresh one.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

# The source tree when qroute runs from a checkout (an installed copy has no git).
SOURCE_ROOT = Path(__file__).resolve().parents[2]


# What benches and reports write: a change here does not make the code differ from its commit.
NOT_CODE = ("bench/results", "bench/REPORT.md", "predictor/results", "predictor/REPORT.md", "predictor/data")


def git_state(root: Path = SOURCE_ROOT) -> tuple[str, bool]:
    """(HEAD's commit, whether tracked files differ from it), results and data files not
    counted: a bench rewriting bench/results is not a change to the code. ('unknown', False) outside git."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()

    try:
        head = git("rev-parse", "HEAD")
        # Not code: the bench's and the predictor's results, the reports written from them, and
        # the predictor's generated training data, which a long data-generation run keeps
        # appending to while benches run.
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", *(f":!{p}" for p in NOT_CODE))
    except (OSError, subprocess.CalledProcessError):
        return "unknown", False
    return head, bool(dirty)


def source_commit(root: Path = SOURCE_ROOT) -> str:
    """HEAD's commit, with '+dirty' when tracked code differs from it."""
    head, dirty = git_state(root)
    return head + ("+dirty" if dirty else "")


# The code a cell's text and time come from: the generation pipeline (the draft/verify loop,
# drafters, backends, thread choice), the draft-length rule and the constants they read.
ENGINE_SOURCES = ("generation", "speculation.py", "tuning.py")


@functools.lru_cache(maxsize=None)
def engine_revision() -> str:
    """A hash of the engine's source files (ENGINE_SOURCES), not the git commit: a commit that
    only touches the router, the CLI or the docs leaves every measured cell valid, and an
    uncommitted engine edit (or an installed copy without git) still gets its own revision."""
    package = Path(__file__).resolve().parents[1]
    files: list[Path] = []
    for name in ENGINE_SOURCES:
        path = package / name
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@functools.lru_cache(maxsize=None)
def llama_cpp_identity() -> str:
    """llama-cpp-python's version and a hash of its native libraries, which differ with every
    build flag (CPU features, AMX, BLAS): 'VERSION+HASH', without loading the library.
    'none' when it is not installed."""
    import importlib.util

    from qroute_cli.routing.latency import llama_cpp_build

    version = llama_cpp_build()
    spec = importlib.util.find_spec("llama_cpp") if version != "none" else None
    if spec is None or not spec.submodule_search_locations:
        return version
    root = Path(next(iter(spec.submodule_search_locations)))
    libs = sorted(p for p in root.rglob("*") if p.is_file() and (".so" in p.name or p.suffix in (".dylib", ".dll")))
    digest = hashlib.sha256()
    for path in libs:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return f"{version}+{digest.hexdigest()[:12]}" if libs else version


def profile_identity(profile) -> str:
    """The calibration profile a run routed with, in 12 hex digits: the start of the SHA-256 of
    the profile as qroute saves it (so of its file, unless that was edited by hand); 'none'
    without one. Two results files with other digits routed from other measurements."""
    if profile is None:
        return "none"
    text = json.dumps(profile.to_json(), indent=1)  # as latency.save_profile writes it
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def record(command: str | None = None, threads: int | str | None = None) -> dict:
    """The provenance fields every results file carries."""
    from qroute_cli import __version__
    from qroute_cli.routing.latency import cpu_detail, cpu_model, llama_cpp_build

    return {
        "commit": source_commit(),
        "qroute": __version__,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": cpu_model(),
        "cpu_detail": cpu_detail(),  # the model name alone can name two hosts of other speeds
        "cores": os.cpu_count(),
        "threads": threads,
        "llama_cpp": llama_cpp_build(),
        "llama_cpp_build": llama_cpp_identity(),
        "engine": engine_revision(),
        "command": command if command is not None else " ".join(["qroute", *sys.argv[1:]]),
    }
