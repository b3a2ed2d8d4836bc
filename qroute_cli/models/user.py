"""Adding a user's own GGUF file to the user models.toml."""

from __future__ import annotations

import json
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


def add_user_model(
    name: str, path: Path, *, vocab: str | None, drafters: list[str], hash_file: bool
) -> Path:
    """Append a model (and pairs) to the user's models.toml, then re-validate everything."""
    from qroute_cli.config import load_registry
    from qroute_cli.models.store import sha256_file

    path = path.expanduser().resolve()
    if not path.is_file():
        raise UsageError(f"No such file: {path}", "Give the path to a .gguf model file.")
    with path.open("rb") as fh:
        if fh.read(4) != b"GGUF":
            raise UsageError(f"{path} is not a GGUF file (bad magic).", "qroute runs GGUF models (llama.cpp).")
    current = load_registry()
    if name in current.models:
        raise UsageError(f"A model named '{name}' exists already.", "Pick another name.")

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
    target.parent.mkdir(parents=True, exist_ok=True)
    before = target.read_text() if target.exists() else ""
    target.write_text(before + "\n".join(lines) + "\n")
    try:
        load_registry()
    except ConfigError:
        target.write_text(before)  # leave the user's file as it was
        raise
    return target
