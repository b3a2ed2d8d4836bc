"""Run a command with one folder read-only, as on a read-only medium.

As an ordinary user, taking the write bits off does it. root writes through permission bits,
so there the folder is bind-mounted read-only in a private mount namespace (`unshare -m`,
which needs CAP_SYS_ADMIN, as containers and CI runners running as root usually have); where
neither works the test is skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT


def _chmod_tree(folder: Path, writable: bool) -> None:
    for path in [folder, *folder.rglob("*")]:
        mode = path.stat().st_mode
        os.chmod(path, mode | 0o200 if writable else mode & ~0o222)


def read_only_run(folder: Path, argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `argv` (from the repository root, with this environment) while `folder` is read-only."""
    env = os.environ.copy()
    if os.geteuid() != 0:
        _chmod_tree(folder, writable=False)
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
        finally:
            _chmod_tree(folder, writable=True)
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("running as root without unshare: cannot make a folder read-only")
    mount = f'mount --bind "{folder}" "{folder}" && mount -o remount,bind,ro "{folder}"'
    probe = subprocess.run([unshare, "-m", "sh", "-c", f'{mount} && ! touch "{folder}/.probe" 2>/dev/null'],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"running as root and cannot bind-mount read-only here: {probe.stderr.strip()}")
    return subprocess.run([unshare, "-m", "sh", "-c", f'{mount} && exec "$@"', "sh", *argv],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
