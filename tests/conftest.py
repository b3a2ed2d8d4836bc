"""Shared fixtures and helpers.

Every test gets its own QROUTE_HOME (store, profile, config) in a temporary folder, so
nothing touches the user's real state. Model files are shared: QROUTE_MODELS points at the
cache that `scripts/test.sh` fills (default: the platform cache). Tests that need a real
model or a test dependency skip with a clear reason when it is absent, unless
QROUTE_REQUIRE_MODELS=1 (CI), where that is a failure.

Helpers that several test modules share live here, or in helpers.py when a child process
imports them too: no test module imports another.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FAKE_CONFIG = ROOT / "tests" / "fake_models.toml"


def _shared_models_dir() -> Path:
    """Where `qroute models pull` put the models before the tests started."""
    from qroute_cli import paths

    return paths.cache_dir()


MODELS_DIR = _shared_models_dir()


@pytest.fixture(autouse=True)
def qroute_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "qroute-home"
    home.mkdir()
    monkeypatch.setenv("QROUTE_HOME", str(home))
    monkeypatch.setenv("QROUTE_MODELS", str(MODELS_DIR))
    monkeypatch.delenv("QROUTE_CONFIG", raising=False)
    return home


@pytest.fixture
def fake_registry():
    from qroute_cli.config import load_registry

    return load_registry(FAKE_CONFIG, include_user=False)


@pytest.fixture
def fake_pool(fake_registry):
    from qroute_cli.generation.pool import ModelPool

    with ModelPool(fake_registry) as pool:
        yield pool


def require_model(name: str) -> Path:
    """Path of a real model in the shared cache, or skip (fail under CI) when absent."""
    path = MODELS_DIR / f"{name}.gguf"
    if not path.exists():
        msg = f"model {name} not in {MODELS_DIR}; run: qroute models pull {name}"
        if os.environ.get("QROUTE_REQUIRE_MODELS") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def require_module(name: str, extra: str = "test"):
    """Import an optional package, or skip saying which extra installs it. A package of the
    `test` extra is a failure under QROUTE_REQUIRE_MODELS=1 (CI), never a quiet skip."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        msg = f"python package {name!r} is missing; it comes with: pip install -e '.[{extra}]'"
        if extra == "test" and os.environ.get("QROUTE_REQUIRE_MODELS") == "1":
            pytest.fail(msg)
        pytest.skip(msg)


def require_source_data() -> Path:
    """The source data sets (../shared/data or QROUTE_DATA_DIR), or skip saying where to put
    them. Only checks that the shipped files cannot answer need them."""
    from qroute_cli.evaluation import splits

    root = splits.data_root()
    if not (root / "gsm8k" / "train.jsonl").exists():
        pytest.skip(f"source data sets not found at {root}; set QROUTE_DATA_DIR to a copy laid out like shared/data")
    return root


def default_sigint() -> None:
    """For a child that a test interrupts as Ctrl-C would: SIGINT back to its default. A test
    run started in the background (`cmd &` in a script) ignores SIGINT, its children inherit
    that, and Python then never raises KeyboardInterrupt in them."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def qroute(*args, input=None, config=FAKE_CONFIG, env=None, timeout=120):
    """`qroute ARGS` in a subprocess (fake config unless `config` says otherwise; None: no
    --config); `env` adds to the environment; bytes in `args` or `input` pass through as bytes."""
    cmd = [sys.executable, "-m", "qroute_cli"] + (["--config", str(config)] if config else []) + list(args)
    text = not isinstance(input, bytes) and not any(isinstance(a, bytes) for a in args)
    return subprocess.run(cmd, input=input, capture_output=True, text=text, timeout=timeout,
                          env={**os.environ, **(env or {})})


def model_profile(name: str, decode: float, prefill_tps: float = 1000.0, verify_extra: float = 0.1,
                  draft: float | None = None, identity: str | None = None):
    """A model profile whose verify batch of k costs decode x (1 + verify_extra x k)."""
    from qroute_cli.routing.latency import ModelProfile

    verify = tuple(decode * (1 + verify_extra * k) for k in range(1, 9))
    return ModelProfile(name, identity or name, 0.0, prefill_tps, decode, verify, draft)


def fake_profile(registry, slow: float = 1.0):
    """A hand-made profile for tests/fake_models.toml; `slow` scales every cost."""
    from qroute_cli.routing.latency import Profile, current_machine

    ident = {n: s.identity for n, s in registry.models.items()}
    return Profile(current_machine(), {
        "fake-big": model_profile("fake-big", 0.010 * slow, 1000 / slow, identity=ident["fake-big"]),
        "fake-small": model_profile("fake-small", 0.004 * slow, 2500 / slow, draft=0.004 * slow,
                                    identity=ident["fake-small"]),
        "fake-other": model_profile("fake-other", 0.003 * slow, 3000 / slow, identity=ident["fake-other"]),
    }, ngram_s=1e-5)


class Screen:
    """A chat View whose outputs land in strings: `answer` (stdout) and `err` (everything else)."""

    def __init__(self, **kw) -> None:
        from rich.console import Console

        from qroute_cli.chat import View

        self.written: list[str] = []
        self.err_file = io.StringIO()
        self.view = View(Console(file=io.StringIO(), width=120), Console(file=self.err_file, width=200),
                         write=self.write, **kw)

    def write(self, text: str) -> None:
        self.written.append(text)

    @property
    def answer(self) -> str:
        return "".join(self.written)

    @property
    def err(self) -> str:
        return self.err_file.getvalue()


def make_chat(pool, *, pair: str | None = "fake-big", max_tokens: int = 20, screen: Screen | None = None,
              **view_kw):
    """A Chat on `pool` routed with the fake profile (budget 5 s), and the Screen it writes to."""
    from qroute_cli.chat import Chat
    from qroute_cli.routing.router import Router
    from qroute_cli.types import GenerationConfig

    screen = screen or Screen(**view_kw)
    router = Router(pool.registry, budget_s=5.0, console=screen.view.err, pool=pool,
                    profile=fake_profile(pool.registry))
    chat = Chat(pool, router, GenerationConfig(max_tokens=max_tokens), screen.view, forced_pair=pair)
    return chat, screen


@pytest.fixture(scope="session")
def real_registry():
    from qroute_cli.config import load_registry

    return load_registry(None, include_user=False)


@pytest.fixture(scope="session")
def smollm_pool(real_registry):
    """One pool with smollm2-135m loaded, shared by the real-model tests of a session."""
    require_model("smollm2-135m")
    from qroute_cli.generation.pool import ModelPool

    os.environ.setdefault("QROUTE_MODELS", str(MODELS_DIR))
    pool = ModelPool(real_registry)
    pool.get("smollm2-135m")
    yield pool
    pool.close()


# Run the CLI as the console script does and write the names of the modules it imported.
_MODULES_PROBE = """\
import atexit, json, os, sys
atexit.register(lambda: open(os.environ["QROUTE_MODULES_OUT"], "w").write(json.dumps(sorted(sys.modules))))
sys.argv = ["qroute"] + json.loads(os.environ["QROUTE_ARGS"])
from qroute_cli.cli import main
main()
"""


def imported_modules(tmp_path, *args: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    """`qroute ARGS` run in a fresh process: the process and the modules it imported."""
    out = tmp_path / "modules.json"
    env = {**os.environ, "QROUTE_MODULES_OUT": str(out), "QROUTE_ARGS": json.dumps(list(args))}
    proc = subprocess.run([sys.executable, "-c", _MODULES_PROBE], capture_output=True, text=True, env=env,
                          timeout=120)
    return proc, set(json.loads(out.read_text()))


def loaded_among(modules: set[str], names) -> list[str]:
    """Those of `names` (packages count with their submodules) that `modules` holds."""
    return [n for n in names if n in modules or any(m.startswith(n + ".") for m in modules)]
