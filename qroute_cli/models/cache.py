"""Model files in the cache: locations, presence, SHA-256 verification.

A model's name becomes a file name in the cache, so only plain names are accepted: a name
such as '../../x' would otherwise write outside it. A file is hashed when it is pulled and
again before loading whenever its size or modification time differs from the stamp written
the last time it matched, so a file changed after the pull is not run unchecked.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from qroute_cli import paths
from qroute_cli.errors import ConfigError, ModelCorruptError, ModelMissingError
from qroute_cli.types import ModelSpec

_CHUNK = 4 << 20
# Letters, digits, '.', '_' and '-', not starting with a dot: a single, visible file name.
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")


def check_name(name: str) -> str:
    """`name` when it can be a file name in the cache; ConfigError otherwise."""
    if not _SAFE_NAME.fullmatch(name):
        raise ConfigError(
            f"The model name '{name}' cannot be used as a file name in the model cache.",
            "Model names may use letters, digits, '.', '_' and '-' (and not start with '.'); rename it in models.toml.",
        )
    return name


def model_path(spec: ModelSpec) -> Path:
    """Where the GGUF of `spec` is (a user path) or will be (the cache)."""
    check_name(spec.name)  # also names the stamp of a user's own file
    if spec.path:
        return Path(spec.path)
    return paths.cache_dir() / f"{spec.name}.gguf"


def installed(spec: ModelSpec) -> bool:
    """The model's file is present (a fake model always is); presence only, not its hash."""
    return spec.is_fake or model_path(spec).exists()


def installed_pairs(registry) -> list:
    """The registry's pairs whose every model is installed, in registry order."""
    return [p for p in registry.pairs.values() if all(installed(s) for s in registry.pair_models(p))]


def copy_hashed(src, out, digest, progress=None, chunk: int = _CHUNK) -> int:
    """Read `src` to its end in chunks: write each to `out` (None: read only), add it to
    `digest` and report its size to `progress(n_bytes)`. Returns the bytes read."""
    total = 0
    while data := src.read(chunk):
        if out is not None:
            out.write(data)
        digest.update(data)
        total += len(data)
        if progress:
            progress(len(data))
    return total


def sha256_file(path: Path, progress=None) -> str:
    """SHA-256 of a file; `progress(n_bytes)` is called as it reads."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        copy_hashed(fh, None, digest, progress)
    return digest.hexdigest()


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _stamp_key(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _stamp_of(spec: ModelSpec) -> Path:
    """The stamp next to a cached file; a user's own file gets one in qroute's data folder,
    beside the config that names it (the model cache holds only what qroute fetched)."""
    if spec.path:
        return paths.data_dir() / "verified" / f"{check_name(spec.name)}.verified"
    return _stamp_path(model_path(spec))


def is_verified(spec: ModelSpec) -> bool:
    """True when the file was hashed before and has not changed since (size and mtime)."""
    path = model_path(spec)
    stamp = _stamp_of(spec)
    if not path.exists() or not stamp.exists():
        return False
    try:
        saved = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return False
    return saved.get("sha256") == spec.sha256 and saved.get("stat") == _stamp_key(path)


def mark_verified(spec: ModelSpec) -> None:
    """Remember that the file matched its SHA-256 as it is now (a read-only cache: skipped)."""
    stamp = _stamp_of(spec)
    try:
        paths.private_dir(stamp.parent)
        paths.write_private(stamp, json.dumps({"sha256": spec.sha256, "stat": _stamp_key(model_path(spec))}))
    except OSError:
        pass  # the file is hashed again before the next load


def verify(spec: ModelSpec, progress=None) -> str:
    """Hash the file and compare with the registry; returns the digest or raises."""
    path = model_path(spec)
    if not path.exists():
        raise ModelMissingError(
            f"Model '{spec.name}' is not downloaded ({path}).",
            f"Fetch it with: qroute models pull {spec.name}",
        )
    if spec.size is not None and path.stat().st_size != spec.size:
        raise ModelCorruptError(
            f"Model '{spec.name}' has {path.stat().st_size:,} bytes, expected {spec.size:,} ({path}).",
            f"Fetch it again with: qroute models pull {spec.name} --force",
        )
    digest = sha256_file(path, progress)
    if spec.sha256 and digest != spec.sha256:
        raise ModelCorruptError(
            f"Model '{spec.name}' fails its SHA-256 check ({path}).",
            f"Fetch it again with: qroute models pull {spec.name} --force" if not spec.path else
            "The file changed since it was added: restore it, or update its sha256 in models.toml.",
        )
    if spec.sha256:
        mark_verified(spec)
    return digest


def require(spec: ModelSpec) -> Path:
    """The path of a model that is ready to load: size checked, SHA-256 re-checked when stale.

    Hashing happens only when the file changed since it was last verified (or was never).
    """
    path = model_path(spec)
    if not path.exists():
        fix = f"qroute models pull {spec.name}" if not spec.path else "check `path` in models.toml"
        raise ModelMissingError(f"Model '{spec.name}' is not available ({path}).", f"Run: {fix}")
    if spec.size is not None and path.stat().st_size != spec.size:
        raise ModelCorruptError(
            f"Model '{spec.name}' is incomplete or corrupt: {path.stat().st_size:,} bytes, "
            f"expected {spec.size:,}.",
            f"Run: qroute models pull {spec.name} --force",
        )
    if spec.sha256 and not is_verified(spec):
        verify(spec)
    return path


@dataclass(frozen=True)
class ModelStatus:
    name: str
    path: str
    present: bool
    verified: bool
    size_bytes: int | None
    vocab_size: int | None


def status(spec: ModelSpec) -> ModelStatus:
    path = model_path(spec)
    present = path.exists()
    return ModelStatus(
        name=spec.name,
        path=str(path),
        present=present,
        verified=present and is_verified(spec),
        size_bytes=path.stat().st_size if present else spec.size,
        vocab_size=spec.vocab_size,
    )


def remove_partial(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
