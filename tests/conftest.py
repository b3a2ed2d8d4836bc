"""Shared fixtures.

Every test gets its own QROUTE_HOME (store, profile, config) in a temporary folder, so
nothing touches the user's real state. Model files are shared: QROUTE_MODELS points at the
cache that `scripts/test.sh` fills (default: the platform cache). Tests that need a real
model or a test dependency skip with a clear reason when it is absent, unless
QROUTE_REQUIRE_MODELS=1 (CI), where that is a failure.
"""

from __future__ import annotations

import os
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
