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


# -- the privacy rule ------------------------------------------------------------------------
#
# Every folder qroute creates is owner-only (0700) and every file it writes is owner-only
# (0600), whatever the umask: the run log, calibration profiles, the hash salt, input history
# and saved conversations say what a user asked. The data folder is tightened again on each
# use, so an install from before this rule becomes private too. Files are written to a
# temporary name and renamed, so a crash never leaves half a file.

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def _tighten(path: Path, mode: int) -> None:
    """chmod `path` to `mode` when it is looser and ours; silent on read-only media."""
    try:
        st = path.stat()
        if st.st_mode & 0o777 & ~mode and st.st_uid == os.getuid():
            os.chmod(path, mode)
    except OSError:
        pass


def private_dir(path: Path) -> Path:
    """Create `path` (with its parents) as an owner-only folder; tighten it if it exists."""
    path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    _tighten(path, PRIVATE_DIR)
    return path


def private_file(path: Path) -> Path:
    """Create `path` empty and owner-only if it is missing; tighten it if it exists."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
    except FileExistsError:
        _tighten(path, PRIVATE_FILE)
    return path


def write_private(path: Path, data: str | bytes, *, overwrite: bool = True, durable: bool = True) -> Path:
    """Write `data` to `path` atomically as an owner-only file.

    With overwrite=False an existing `path` is never replaced (FileExistsError), even by a
    writer racing this one. durable=False skips the flush to disk: for a cache that is
    rebuilt when lost, where a reader still sees the old file or the whole new one.
    """
    import tempfile

    blob = data.encode("utf-8") if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            rename_new(Path(tmp), path)
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
    return path


def rename_new(src: Path, dst: Path) -> None:
    """Rename `src` to `dst` only if `dst` does not exist (atomic where hard links work)."""
    try:
        os.link(src, dst)  # fails with FileExistsError instead of replacing
    except (FileExistsError, FileNotFoundError):
        raise
    except OSError:  # a file system without hard links: check, then rename
        if dst.exists() or dst.is_symlink():
            raise FileExistsError(dst) from None
        os.rename(src, dst)
        return
    os.unlink(src)


def move_aside(path: Path, tag: str, companions: tuple[str, ...] = ()) -> Path:
    """Rename `path` to a new, unused `NAME.TAG-STAMP[-N]` next to it and return that name.

    An earlier backup is never overwritten, also when two processes move files in the same
    second. `companions` are suffixes of files that travel with it (SQLite's -wal, -shm).
    """
    import time

    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1, 10_000):
        target = path.with_name(f"{path.name}.{tag}-{stamp}" + (f"-{n}" if n > 1 else ""))
        if any(Path(str(target) + s).exists() for s in companions):
            continue
        try:
            rename_new(path, target)
        except FileExistsError:
            continue
        for suffix in companions:
            src = Path(str(path) + suffix)
            if src.exists():
                os.replace(src, Path(str(target) + suffix))
        return target
    raise FileExistsError(f"no free backup name for {path}")


def log_prompts() -> bool:
    """Whether the user opted in to keeping prompt text (QROUTE_LOG_PROMPTS=1)."""
    return os.environ.get("QROUTE_LOG_PROMPTS") == "1"
