"""Where qroute keeps models, learned state and user config.

QROUTE_HOME puts everything under one folder; QROUTE_MODELS moves only the model cache
(tests give each test its own QROUTE_HOME but share the models). Otherwise the platform's
user cache/data/config directories are used.
"""

from __future__ import annotations

import os
from pathlib import Path


def _home() -> Path | None:
    value = os.environ.get("QROUTE_HOME")
    return Path(value).expanduser() if value else None


def cache_dir() -> Path:
    """Downloaded and assembled model files (QROUTE_MODELS overrides just this folder)."""
    models = os.environ.get("QROUTE_MODELS")
    if models:
        return Path(models).expanduser()
    home = _home()
    if home:
        return home / "models"
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("qroute")) / "models"


def data_dir() -> Path:
    """Learning store, calibration profile, chat history."""
    home = _home()
    if home:
        return home / "data"
    from platformdirs import user_data_dir

    return Path(user_data_dir("qroute"))


def config_dir() -> Path:
    home = _home()
    if home:
        return home / "config"
    from platformdirs import user_config_dir

    return Path(user_config_dir("qroute"))


def user_config_file() -> Path:
    """A user's models.toml that adds to or overrides the built-in registry."""
    return config_dir() / "models.toml"


def builtin_registry_file() -> Path:
    return Path(__file__).with_name("models.toml")
