"""Adding a user's own GGUF file to the user models.toml.

Several `qroute models add` may run at once: each holds `models.toml.lock` (fcntl) from
reading the file to writing it, writes the new text to a temporary file and renames it into
place, and restores exactly what it read if the result does not validate. Under the lock no
other add can have changed the file in between, so neither an entry nor a rollback is lost.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path

from qroute_cli import paths
from qroute_cli.errors import ConfigError, UsageError


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def _read_gguf_vocab_size(path: Path) -> int | None:
    """Vocabulary size from the GGUF header, without loading the model (None if unsure)."""
    try:
        from gguf import GGUFReader  # optional: present with the test/train extras
    except ImportError:
        return None
    try:
        reader = GGUFReader(str(path))
        field = reader.fields.get("tokenizer.ggml.tokens")
        return len(field.data) if field is not None else None
    except Exception:
        return None


@contextmanager
def config_lock(target: Path):
    """Hold the user config's lock (blocking) while reading, changing and writing it."""
    import fcntl

    paths.private_dir(target.parent)
    fd = os.open(target.with_name(target.name + ".lock"), os.O_RDWR | os.O_CREAT, paths.PRIVATE_FILE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def add_user_model(
    name: str, path: Path, *, vocab: str | None, drafters: list[str], hash_file: bool
) -> Path:
    """Append a model (and pairs) to the user's models.toml, then re-validate everything."""
    from qroute_cli.config import load_registry
    from qroute_cli.models.cache import check_name, sha256_file

    try:
        check_name(name)
    except ConfigError as exc:
        raise UsageError(exc.message, "Use letters, digits, '.', '_' and '-', e.g. my-llama-3b.") from None
    path = path.expanduser().resolve()
    if not path.is_file():
        raise UsageError(f"No such file: {path}", "Give the path to a .gguf model file.")
    with path.open("rb") as fh:
        if fh.read(4) != b"GGUF":
            raise UsageError(f"{path} is not a GGUF file (bad magic).", "qroute runs GGUF models (llama.cpp).")

    lines = [f"\n[models.{_toml_str(name)}]", f"path = {_toml_str(str(path))}"]
    lines.append(f"size = {path.stat().st_size}")
    if hash_file:
        lines.append(f"sha256 = {_toml_str(sha256_file(path))}")
    lines.append(f"vocab = {_toml_str(vocab or 'own:' + name)}")
    vocab_size = _read_gguf_vocab_size(path)
    if vocab_size:
        lines.append(f"vocab_size = {vocab_size}")
    lines.append(f"\n[pairs.{_toml_str(name)}]\nverifier = {_toml_str(name)}\ndrafter = \"none\"")
    for drafter in drafters:
        if drafter == "none":
            continue
        pair = f"{name}+{drafter}"
        lines.append(f"\n[pairs.{_toml_str(pair)}]\nverifier = {_toml_str(name)}\ndrafter = {_toml_str(drafter)}")

    target = paths.user_config_file()
    with config_lock(target):
        if name in load_registry().models:
            raise UsageError(f"A model named '{name}' exists already.", "Pick another name.")
        before = target.read_text(encoding="utf-8") if target.exists() else None
        paths.write_private(target, (before or "") + "\n".join(lines) + "\n")
        try:
            load_registry()
        except ConfigError:
            if before is None:  # leave the user's config as it was: absent
                target.unlink()
            else:
                paths.write_private(target, before)
            raise
    return target
