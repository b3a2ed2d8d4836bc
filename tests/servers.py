"""Real llama.cpp servers on 127.0.0.1 for tests, shared by the test modules that talk to one.

    from servers import llama_server, require_llama_tools

    def test_x():
        with llama_server("smollm2-135m") as server:          # plain
            ...
        with llama_server("smollm2-135m", draft="smollm2-135m") as server:   # -md, self-drafting
            ...

The binary comes from scripts/build_llama_tools.sh (QROUTE_LLAMA_BIN_DIR, which scripts/test.sh
sets, or the newest build in the cache). Without it a test skips saying how to build it; under
QROUTE_REQUIRE_MODELS=1 (CI) that is a failure, so a broken build cannot pass as skipped tests.
Servers use one thread and a small context: the tests assert what holds on any machine, and the
machine they run on is often busy.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import require_model


def require_llama_tools() -> Path:
    """The folder of the built llama.cpp tools, or skip (fail under CI) saying how to build them."""
    from qroute_cli.generation.llama_tools import TOOLS, bin_dir

    folder = bin_dir()
    missing = [tool for tool in TOOLS if folder is None or not (folder / tool).is_file()]
    if missing:
        where = os.environ.get("QROUTE_LLAMA_BIN_DIR") or "the cache"
        msg = (f"llama.cpp's {', '.join(missing)} not found in {where}; "
               "run: bash scripts/build_llama_tools.sh (or set QROUTE_LLAMA_BIN_DIR)")
        if os.environ.get("QROUTE_REQUIRE_MODELS") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return folder


@contextlib.contextmanager
def llama_server(model: str, *, draft: str | None = None, spec_type: str | None = None,
                 threads: int = 1, ctx: int = 1024, **kwargs) -> Iterator:
    """A started LlamaServer for a model of the shared cache (and a draft model, or an n-gram
    --spec-type), stopped when the block ends, whatever happens in it."""
    from qroute_cli.generation.llama_tools import LlamaServer, Speculation

    require_llama_tools()
    spec = Speculation(draft_model=require_model(draft) if draft else None, spec_type=spec_type)
    with LlamaServer(require_model(model), speculation=spec, threads=threads, ctx=ctx, **kwargs) as server:
        yield server


@pytest.fixture(scope="module")
def smollm_server():
    """llama-server with smollm2-135m, plain decoding; one per test module."""
    with llama_server("smollm2-135m") as server:
        yield server


@pytest.fixture(scope="module")
def smollm_self_draft_server():
    """llama-server with smollm2-135m drafting for itself (-md): at temperature 0 nearly every
    drafted token is accepted."""
    with llama_server("smollm2-135m", draft="smollm2-135m") as server:
        yield server
